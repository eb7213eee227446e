"""Progress of long loops, with rate and expected time.

`Progress(total, desc, unit)` is a tqdm bar on stderr (done/total, rate,
elapsed and ETA) where stderr is a terminal; elsewhere (a log file, a pipe,
a sweep point's submitit log) one plain line on stdout, with the run's other
lines, per `interval` seconds and one at the end, never carriage returns
(stderr stays for errors: one line):

    importance sampling: 2000/10000 images (20%), 41.3 images/s, 00:48
    elapsed, ETA 03:13

Lines the experiment prints meanwhile (`write`, which `outputs.Run.log`
uses) go above the bar instead of through it. The library reports progress
through callbacks (`vae.train.train`'s `on_epoch`, `vae.evaluate.evaluate`'s
`progress`) and prints nothing itself.

`evaluate` is `vae.evaluate.evaluate` preceded by one line with the work
(images x samples) and a rough time, measured on one chunk of the first
batch, then shown as a bar; given a file path it keeps the finished batches
of the importance sampling there, and a rerun resumes them (`Partial`).
"""

import hashlib
import io
import json
import os
import shutil
import sys
import time
import zipfile
from typing import Any, Callable, TextIO

import numpy as np
import tqdm

from experiments.common import outputs

# Plain lines (no terminal): at most one per this many seconds.
INTERVAL_S = 30.0
# Work (images x samples) from which `evaluate` times a pilot chunk first.
PILOT_FROM = 10**6

_active: list['Progress'] = []


def write(message: str, stream: TextIO | None = None) -> None:
  """Prints a line (stdout by default) above any active bar, flushed."""
  stream = stream or sys.stdout
  if any(p.bar is not None for p in _active):
    tqdm.tqdm.write(message, file=stream)
  else:
    print(message, file=stream)
  stream.flush()


def _isatty(stream: Any) -> bool:
  try:
    return bool(stream.isatty())
  except (AttributeError, ValueError):  # No such method, or closed.
    return False


def clock(seconds: float | None) -> str:
  """[H:]MM:SS (tqdm's format); '--:--' for None."""
  return '--:--' if seconds is None else tqdm.tqdm.format_interval(seconds)


class Progress:
  """Progress of `total` steps: a bar on a terminal, else plain lines.

  Args:
    total: the number of steps (e.g. images, epochs, sweep points).
    desc: what is done, first on each line.
    unit: what a step is ('images', 'epochs', 'points').
    initial: steps done before (a resumed run), left out of the rate.
    stream: where it goes (default: stderr on a terminal, else stdout).
    interval: seconds between plain lines.
    plain: whether to write plain lines at all without a terminal (False:
      the caller prints its own lines, e.g. one per sweep point).
  """

  def __init__(self, total: int, desc: str, unit: str = 'it',
               initial: int = 0, stream: TextIO | None = None,
               interval: float = INTERVAL_S, plain: bool = True):
    self.total, self.desc, self.unit = total, desc, unit
    self.initial = self.done = initial
    self.stream = stream or (sys.stderr if _isatty(sys.stderr) else
                             sys.stdout)
    self.interval, self.plain = interval, plain
    self.start = self.last = time.time()
    self.bar: Any = None
    if _isatty(self.stream):
      # The size given (a terminal reporting 0 rows would hide the bar).
      size = shutil.get_terminal_size((100, 24))
      self.bar = tqdm.tqdm(total=total, desc=desc, unit=f' {unit}',
                           initial=initial, file=self.stream,
                           ncols=size.columns, nrows=max(size.lines, 2),
                           mininterval=0.5)
    _active.append(self)

  def rate(self) -> float | None:
    """Steps per second since the start (the initial steps left out)."""
    elapsed = time.time() - self.start
    done = self.done - self.initial
    return done / elapsed if done > 0 and elapsed > 0 else None

  def eta(self) -> float | None:
    """Seconds left at the rate so far (None before the first step)."""
    rate = self.rate()
    return None if rate is None else (self.total - self.done) / rate

  def line(self) -> str:
    """The plain line: done/total, %, rate, elapsed, ETA."""
    rate = self.rate()
    pct = 100.0 * self.done / self.total if self.total else 100.0
    speed = ('-' if rate is None else
             f'{rate:.3g} {self.unit}/s' if rate >= 1 else
             f'{1 / rate:.3g} s per {self.unit.rstrip("s")}')
    return (f'{self.desc}: {self.done}/{self.total} {self.unit} ({pct:.0f}%)'
            f', {speed}, {clock(time.time() - self.start)} elapsed, '
            f'ETA {clock(self.eta())}')

  def set(self, done: int, total: int | None = None) -> None:
    """Marks `done` steps done (of `total`, if it changed)."""
    if total is not None and total != self.total:
      self.total = total
      if self.bar is not None:
        self.bar.total = total
    step, self.done = done - self.done, done
    if self.bar is not None:
      self.bar.update(step)
    elif self.plain and (time.time() - self.last >= self.interval or
                         done >= self.total):
      self.last = time.time()
      print(self.line(), file=self.stream, flush=True)

  def update(self, n: int = 1) -> None:
    """Marks `n` more steps done."""
    self.set(self.done + n)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
      self.bar = None
    if self in _active:
      _active.remove(self)

  def __enter__(self) -> 'Progress':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def pilot_seconds(model: Any, params: Any, images: Any, config: Any,
                  key: Any) -> float:
  """Rough seconds of `evaluate`'s importance sampling of `images`: one
  chunk of the first batch, timed after a run that compiles it, times the
  chunks of all batches, plus that compile time (the full program's is
  about the same)."""
  import jax  # pylint: disable=g-import-not-at-top
  from vae import importance  # pylint: disable=g-import-not-at-top
  batch = min(config.eval_batch_size, len(images))
  chunk = importance.chunk_size_for(config.eval_k, config.eval_chunk_size)
  x = importance.pad(images[:batch], batch)[0][0]
  run = lambda: jax.block_until_ready(importance.importance_batch(
      model, params, x, key, None, num_samples=chunk, chunk_size=chunk))
  start = time.perf_counter()
  run()
  first = time.perf_counter() - start
  start = time.perf_counter()
  run()
  per_chunk = time.perf_counter() - start
  batches = -(-len(images) // batch)
  # The full program compiles about as long as the pilot did.
  return max(first - per_chunk, 0.0) + (
      per_chunk * (config.eval_k // chunk) * batches)


def evaluate(model: Any, params: Any, dataset: Any, config: Any,
             seed: int = 0, train_k: int | None = None, split: str = 'test',
             log: Callable[[str], None] = write,
             partial: str | None = None) -> Any:
  """`vae.evaluate.evaluate`, announced and shown: first one line with its
  work (images x K samples) and, from PILOT_FROM samples on, a rough time
  (`pilot_seconds`); then a bar (or plain lines) over the images. With a
  `partial` file path the importance sampling is resumable (`Partial`)."""
  import jax  # pylint: disable=g-import-not-at-top
  from vae import evaluate as eval_lib  # pylint: disable=g-import-not-at-top
  images = eval_lib.test_images(dataset, split)[:config.num_eval]
  n, k = len(images), config.eval_k
  kept = None
  if partial is not None:
    kept = Partial(partial, fingerprint(params, images, config, seed,
                                        train_k, split), log)
  rough = ''
  if n * k >= PILOT_FROM and not (kept and kept.done):
    seconds = pilot_seconds(model, params, images, config,
                            jax.random.PRNGKey(seed))
    rough = f'; roughly {clock(seconds)} (timed on one chunk)'
  log(f'evaluation: {n:,} {split} images x K={k:,} samples = {n * k:,.0f} '
      f'decoded samples{rough}')
  with Progress(n, 'importance sampling', 'images') as bar:
    try:
      ev = eval_lib.evaluate(model, params, dataset, config, seed, train_k,
                             split, log, progress=bar.set,
                             done=kept.done if kept else (), on_batch=kept)
    except KeyboardInterrupt:
      if kept:
        kept.save()
        log(f'interrupted: {len(kept.done)} batches of the importance '
            f'sampling are kept in {partial}; rerun to resume.')
      raise
  if kept:
    kept.finish()
  return ev


# A resumable importance sampling writes its finished batches at most this
# often (and when interrupted), into this file of its run folder.
SAVE_EVERY_S = 60.0
PARTIAL = 'importance_partial.npz'


def fingerprint(params: Any, images: Any, config: Any, seed: int,
                train_k: int | None, split: str) -> str:
  """What fixes the importance sampling's batches: the evaluation settings,
  seed, training k, split, and SHA-256 digests of the parameters and the
  images (JSON)."""
  import jax  # pylint: disable=g-import-not-at-top
  from vae import config as cfg  # pylint: disable=g-import-not-at-top
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(params):
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return json.dumps({
      'evaluation': cfg.to_dict(config), 'seed': seed, 'train_k': train_k,
      'split': split, 'params_sha256': digest.hexdigest(),
      'images_sha256': hashlib.sha256(np.ascontiguousarray(
          images).tobytes()).hexdigest()}, sort_keys=True, default=str)


class Partial:
  """The finished batches of an importance sampling, kept in a file while
  it runs (`on_batch` of `vae.evaluate.evaluate`; written whole at most
  every SAVE_EVERY_S seconds, atomically: `outputs.write_text`), read back
  by a rerun (`done`) and removed at the end (`finish`). A file from other
  settings, parameters or images (another `fingerprint`), or unreadable, is
  ignored and replaced, with one line to `log`."""

  def __init__(self, path: str, fingerprint_json: str,
               log: Callable[[str], None]):
    self.path, self.fingerprint = path, fingerprint_json
    self.done: list[dict[str, np.ndarray]] = []
    self.saved_at = time.time()
    if not os.path.exists(path):
      return
    try:
      with np.load(path) as f:
        if str(f['fingerprint']) != fingerprint_json:
          log(f'{path}: from other settings, parameters or images; the '
              'importance sampling starts over.')
          return
        names = json.loads(str(f['names']))
        self.done = [{name: f[f'{i}/{name}'] for name in names}
                     for i in range(int(f['batches']))]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
      log(f'{path}: unreadable ({e}); the importance sampling starts over.')
      return
    log(f'resuming the importance sampling: {len(self.done)} batches done '
        f'({path}).')

  def __call__(self, i: int, out: dict[str, np.ndarray]) -> None:
    if i != len(self.done):
      raise ValueError(f'batch {i} after {len(self.done)} batches.')
    self.done.append(out)
    if time.time() - self.saved_at >= SAVE_EVERY_S:
      self.save()

  def save(self) -> None:
    """Writes the batches done (atomically: a temporary file, renamed)."""
    if not self.done:
      return
    arrays: dict[str, Any] = {
        f'{i}/{name}': np.asarray(v) for i, out in enumerate(self.done)
        for name, v in out.items()}
    arrays.update(fingerprint=np.asarray(self.fingerprint),
                  batches=np.asarray(len(self.done)),
                  names=np.asarray(json.dumps(sorted(self.done[0]))))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    outputs.write_text(self.path, buffer.getvalue())
    self.saved_at = time.time()

  def finish(self) -> None:
    """The sampling is complete: the file is removed."""
    if os.path.exists(self.path):
      os.remove(self.path)
