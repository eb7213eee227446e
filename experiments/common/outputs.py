"""What a run writes: its folder, config.json, results, tables, figures.

A run folder holds `config.json` (experiment, seed, settings, versions, JAX
backend), `results.json` (a list of flat records; byte-identical for the same
seed: no timestamps), `results.csv` (the same records) and the experiment's
figures and extra files. Every file is written to a temporary name and
renamed into place, so a killed run never leaves a half-written file.
"""

import csv
import dataclasses
import datetime
import importlib.metadata
import io
import json
import math
import os
import sys
from typing import Any, Mapping, Sequence

import numpy as np

from vae import config as cfg

CONFIG_JSON = 'config.json'
RUNS_DIR = 'runs'
_VERSIONED = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy')


def to_jsonable(value: Any) -> Any:
  """Plain JSON values: arrays/scalars to lists/numbers, NaN/inf to None."""
  if isinstance(value, Mapping):
    return {str(k): to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if hasattr(value, '__array__') or isinstance(value, np.generic):
    return to_jsonable(np.asarray(value).tolist())
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if value is None or isinstance(value, (bool, int, str)):
    return value
  return str(value)


def write_text(path: str, text: str) -> str:
  """Writes `text` to `path` through a temporary file and an atomic rename."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}'
  try:
    with open(tmp, 'w', encoding='utf-8', newline='') as f:
      f.write(text)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def write_json(path: str, obj: Any) -> str:
  """Deterministic, indented JSON (NaN written as null)."""
  return write_text(path, json.dumps(to_jsonable(obj), indent=2,
                                     ensure_ascii=False) + '\n')


def columns_of(records: Sequence[Mapping[str, Any]]) -> list[str]:
  """The union of the records' keys in order of first appearance."""
  return list(dict.fromkeys(k for r in records for k in r))


def write_results(directory: str, records: Sequence[Mapping[str, Any]],
                  name: str = 'results') -> None:
  """<name>.json and <name>.csv (one column per key) in `directory`."""
  records = to_jsonable(list(records))
  write_json(os.path.join(directory, f'{name}.json'), records)
  text = io.StringIO()
  writer = csv.DictWriter(text, columns_of(records), lineterminator='\n')
  writer.writeheader()
  writer.writerows({k: '' if v is None else v for k, v in r.items()}
                   for r in records)
  write_text(os.path.join(directory, f'{name}.csv'), text.getvalue())


def write_config(directory: str, experiment: str, config: Any,
                 seed: int) -> None:
  """config.json: experiment, seed, settings, command line, versions, JAX."""
  versions: dict[str, str | None] = {'python': sys.version.split()[0]}
  for name in _VERSIONED:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  jax = sys.modules.get('jax')
  write_json(os.path.join(directory, CONFIG_JSON), {
      'experiment': experiment, 'seed': seed,
      'settings': cfg.to_dict(config), 'argv': sys.argv,
      'versions': versions,
      'jax_backend': jax.default_backend() if jax else None})


def read_config(directory: str) -> dict[str, Any] | None:
  """The config.json of a run folder, or None."""
  path = os.path.join(directory, CONFIG_JSON)
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    return json.load(f)


LOCK = '.lock'
SWEEP_JSON = 'sweep.json'


class RunDirError(Exception):
  """The run folder cannot be used (one line, naming the folder and the fix)."""


def _differences(old: Mapping[str, Any], new: Mapping[str, Any],
                 resumable: Sequence[str]) -> list[str]:
  # Where the data is read from, not what is computed, may change on resume.
  # (Imported here: vae.data imports jax, which launch.py loads late.)
  from vae import data as data_lib  # pylint: disable=g-import-not-at-top
  locations = [f.name for f in dataclasses.fields(data_lib.DataPaths)]
  keys = sorted(set(old) | set(new))
  return [f'{k}={old.get(k)!r} now {new.get(k)!r}' for k in keys
          if k.split('.')[-1] not in (*resumable, *locations)
          and old.get(k) != new.get(k)]


def check_dir(directory: str, experiment: str, config: Any,
              resumable: Sequence[str] = (), overwrite: bool = False) -> None:
  """Refuses a folder that holds something other than this run.

  An existing non-empty folder is accepted only when it holds a run of the
  same experiment with the same settings (those named in `resumable` and
  the data locations may differ: the run resumes), or with `overwrite` when
  it is a run folder.

  Raises:
    RunDirError: one line naming the folder and the fix.
  """
  if os.path.exists(directory) and not os.path.isdir(directory):
    raise RunDirError(f'{directory} is a file, not a folder.')
  parent = directory
  while not os.path.exists(parent):
    parent = os.path.dirname(parent) or '.'
  if not os.access(parent, os.W_OK):
    raise RunDirError(f'{parent} is not writable; choose another '
                      '--output_dir.')
  entries = [e for e in (os.listdir(directory) if os.path.isdir(directory)
                         else []) if e != LOCK]
  if not entries:
    return
  old = read_config(directory)
  is_run = old is not None or SWEEP_JSON in entries
  if overwrite:
    if not is_run:
      raise RunDirError(f'{directory} is not a run folder (no {CONFIG_JSON}); '
                        '--overwrite only replaces run folders.')
    return
  if old is None or old.get('experiment') != experiment:
    what = (f"a run of {old.get('experiment')}" if old else
            f'{len(entries)} other entries')
    raise RunDirError(f'{directory} holds {what}; use another --output_dir '
                      'or --overwrite.')
  differ = _differences(old.get('settings', {}), cfg.to_dict(config),
                        resumable)
  if differ:
    raise RunDirError(f'{directory} holds a {experiment} run with other '
                      f'settings ({"; ".join(differ[:4])}); use another '
                      '--output_dir or --overwrite.')


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class Lock:
  """An exclusive lock file <folder>/.lock holding the owner's PID.

  A lock whose PID is no longer running is stale and taken over.
  """

  def __init__(self, directory: str):
    self.path = os.path.join(directory, LOCK)

  def __enter__(self):
    for _ in range(2):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
      except FileExistsError:
        try:
          with open(self.path, encoding='utf-8') as f:
            pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
          pid = 0
        if pid and pid != os.getpid() and _alive(pid):
          raise RunDirError(f'{os.path.dirname(self.path)} is in use by '
                            f'process {pid}; wait for it or use another '
                            '--output_dir.') from None
        os.remove(self.path)  # Stale.
        continue
      with os.fdopen(fd, 'w', encoding='utf-8') as f:
        f.write(str(os.getpid()))
      return self
    raise RunDirError(f'could not lock {self.path}.')

  def __exit__(self, *exc):
    if os.path.exists(self.path):
      os.remove(self.path)


def clear_dir(directory: str) -> None:
  """Removes a run folder's contents (for --overwrite), keeping the lock."""
  import shutil  # pylint: disable=g-import-not-at-top
  for entry in os.listdir(directory):
    if entry == LOCK:
      continue
    path = os.path.join(directory, entry)
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path)
    else:
      os.remove(path)


def fresh_dir(experiment: str, root: str = RUNS_DIR) -> str:
  """Creates `<root>/<experiment>-<YYYYmmdd-HHMMSS>[-N]` atomically."""
  base = os.path.join(os.path.abspath(root), f'{experiment}-'
                      f'{datetime.datetime.now():%Y%m%d-%H%M%S}')
  os.makedirs(os.path.dirname(base), exist_ok=True)
  for n in range(1000):
    path = base if n == 0 else f'{base}-{n}'
    try:
      os.mkdir(path)
      return path
    except FileExistsError:
      continue
  raise RuntimeError(f'no fresh folder {base}-N')


def _cell(value: Any, float_fmt: str) -> str:
  if value is None:
    return '-'
  if isinstance(value, float):
    return format(value, float_fmt)
  return str(value)


def format_table(records: Sequence[Mapping[str, Any]],
                 columns: Sequence[str] | None = None,
                 float_fmt: str = '.4g') -> str:
  """A fixed-width text table: numbers right-aligned, missing values '-'."""
  records = to_jsonable(list(records))
  columns = list(columns or columns_of(records))
  cells = [[_cell(r.get(c), float_fmt) for c in columns] for r in records]
  numeric = [all(isinstance(r.get(c), (int, float, type(None))) and
                 not isinstance(r.get(c), bool) for r in records)
             for c in columns]
  widths = [max([len(c)] + [len(row[i]) for row in cells])
            for i, c in enumerate(columns)]
  fmt = lambda row, head=False: '  '.join(
      x.rjust(w) if num and not head else x.ljust(w)
      for x, w, num in zip(row, widths, numeric)).rstrip()
  return '\n'.join([fmt(columns, True), '  '.join('-' * w for w in widths)] +
                   [fmt(row) for row in cells])


@dataclasses.dataclass
class Run:
  """The folder of one run, handed to an experiment's `run`.

  Attributes:
    dir: the folder (exists).
  """
  dir: str

  def path(self, name: str) -> str:
    """The path of a file in the run folder."""
    return os.path.join(self.dir, name)

  def log(self, message: str) -> None:
    """A progress line on stdout (flushed)."""
    print(message, flush=True)

  def table(self, records: Sequence[Mapping[str, Any]],
            columns: Sequence[str] | None = None,
            float_fmt: str = '.4g') -> None:
    """Prints `format_table(records)`."""
    self.log(format_table(records, columns, float_fmt))

  def write_json(self, name: str, obj: Any) -> str:
    return write_json(self.path(name), obj)

  def save_figure(self, fig: Any, name: str, dpi: int = 150) -> str:
    """Saves a matplotlib figure as PNG (Agg, no display) and closes it."""
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    path = self.path(name if name.endswith('.png') else name + '.png')
    tmp = f'{path}.tmp{os.getpid()}.png'
    fig.savefig(tmp, dpi=dpi, bbox_inches='tight', metadata={'Software': None})
    os.replace(tmp, path)
    plt.close(fig)
    return path


def pyplot():
  """matplotlib.pyplot on the Agg backend (headless)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt
