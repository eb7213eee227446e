"""Shared benchmark helpers: timing, matmul peak, FLOP counts, machine, data.

Timing rules used by every benchmark: compile and run once (warm-up) before
timing, block on every result (`jax.block_until_ready`), repeat and report
the median (and the minimum, the least disturbed run, since these machines
are shared). Ratios are taken between measurements made in the same process,
close in time, and every result line carries the load average at the time.
"""

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# Burda et al. (2015)'s architecture: 784-200-200-50, batch 100.
BURDA_DATA_DIM = 784
BURDA_HIDDEN = (200, 200)
BURDA_LATENT = 50


@dataclasses.dataclass(frozen=True)
class Timing:
  """Wall-clock seconds of repeated calls (after warm-up).

  Attributes:
    times: wall-clock seconds of each timed repeat.
    compile_s: seconds of the first (warm-up) call, compilation included.
    cpu_times: CPU seconds (all threads of this process) of each repeat: the
      work done, whatever the wait for a core on a loaded machine (XLA's
      worker threads may also spin, which counts).
  """
  times: tuple[float, ...]
  compile_s: float | None = None
  cpu_times: tuple[float, ...] = ()

  @property
  def median(self) -> float:
    return statistics.median(self.times)

  @property
  def min(self) -> float:
    return min(self.times)

  @property
  def cpu_median(self) -> float | None:
    return statistics.median(self.cpu_times) if self.cpu_times else None


def block(tree: Any) -> Any:
  """Waits for every array in `tree` (asynchronous dispatch)."""
  return jax.block_until_ready(tree)


def time_fn(fn: Callable[[], Any], repeats: int = 5,
            warmup: int = 1) -> Timing:
  """Times `fn()` (a closure that dispatches the work) `repeats` times.

  Args:
    fn: zero-argument callable; its result is blocked on.
    repeats: timed calls (0: only the warm-up).
    warmup: untimed calls first (compilation); the first one's time is kept
      as `compile_s`.

  Returns:
    The `Timing`.
  """
  compile_s = None
  for i in range(warmup):
    t0 = time.perf_counter()
    block(fn())
    if i == 0:
      compile_s = time.perf_counter() - t0
  times, cpu_times = [], []
  for _ in range(repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    block(fn())
    times.append(time.perf_counter() - t0)
    cpu_times.append(time.process_time() - c0)
  return Timing(tuple(times), compile_s, tuple(cpu_times))


def time_interleaved(fns: dict[str, Callable[[], Any]], rounds: int = 3,
                     warmup: int = 1) -> dict[str, Timing]:
  """Times several closures in alternation: round r runs each of them once.

  On a shared machine the load changes over a run; interleaving exposes
  every case to the same conditions, so the ratio of their times (best to
  best, median to median) is fairer than that of back-to-back blocks.

  Args:
    fns: {name: zero-argument callable}; results are blocked on.
    rounds: timed rounds (≥ 1).
    warmup: untimed calls of each first (the first call's time, compilation
      included, is kept as `compile_s`).

  Returns:
    {name: Timing}.
  """
  compile_s = {}
  for name, fn in fns.items():
    for i in range(warmup):
      t0 = time.perf_counter()
      block(fn())
      if i == 0:
        compile_s[name] = time.perf_counter() - t0
  times = {name: [] for name in fns}
  cpu_times = {name: [] for name in fns}
  for _ in range(max(1, rounds)):
    for name, fn in fns.items():
      t0, c0 = time.perf_counter(), time.process_time()
      block(fn())
      times[name].append(time.perf_counter() - t0)
      cpu_times[name].append(time.process_time() - c0)
  return {name: Timing(tuple(times[name]), compile_s.get(name),
                       tuple(cpu_times[name])) for name in fns}


def matmul_fn(n: int = 2048,
              dtype: Any = jnp.float32) -> Callable[[], Array]:
  """A closure computing a jitted [n, n] @ [n, n] product (2n³ FLOPs)."""
  ka, kb = jax.random.split(jax.random.PRNGKey(0))
  a = jax.random.normal(ka, (n, n), dtype)
  b = jax.random.normal(kb, (n, n), dtype)
  f = jax.jit(jnp.matmul)
  return lambda: f(a, b)


def peak_record(n: int, timing: Timing) -> dict[str, float]:
  """The matmul rate of an n x n product's `timing`.

  Returns:
    {'n', 'gflops' (at the median time), 'gflops_best' (at the min),
    'seconds', and, with CPU times, 'gflops_per_cpu_s' (FLOPs per CPU-second
    of this process: a per-core rate that the machine's other load does not
    dilute)}.
  """
  flops = 2.0 * n**3
  out = {'n': n, 'gflops': flops / timing.median / 1e9,
         'gflops_best': flops / timing.min / 1e9, 'seconds': timing.median}
  if timing.cpu_times:
    out['gflops_per_cpu_s'] = flops / max(timing.cpu_median, 1e-9) / 1e9
  return out


def time_with_peak(fns: dict[str, Callable[[], Any]], peak_n: int,
                   rounds: int, reporter: 'Reporter', warmup: int = 1
                   ) -> tuple[dict[str, Timing], dict[str, float] | None]:
  """`time_interleaved` of the cases and an n x n matmul (`peak_record`).

  Reports the 'matmul_peak' line; peak_n = 0 times the cases alone.

  Returns:
    ({case: Timing}, the peak record or None).
  """
  fns = dict(fns)
  if peak_n:
    fns['matmul_peak'] = matmul_fn(peak_n)
    block(fns['matmul_peak']())  # Compiled before the timed rounds.
  timings = time_interleaved(fns, rounds=rounds, warmup=warmup)
  if not peak_n:
    return timings, None
  peak = peak_record(peak_n, timings['matmul_peak'])
  reporter.result('matmul_peak', **peak)
  return timings, peak


def matmul_peak(n: int = 2048, repeats: int = 5,
                dtype: Any = jnp.float32) -> dict[str, float]:
  """This device's achieved matmul rate: jitted [n, n] @ [n, n], float32.

  Args:
    n: matrix size (2048: ~17 GFLOP per product).
    repeats: timed products.
    dtype: element type.

  Returns:
    {'n', 'gflops' (2n³ / median time), 'gflops_best' (at the min time),
    'seconds'}.
  """
  return peak_record(n, time_fn(matmul_fn(n, dtype), repeats=repeats))


def mlp_flops(sizes: Sequence[int]) -> int:
  """Forward matmul FLOPs of dense layers sizes[0] -> ... -> sizes[-1]."""
  return sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:]))


def encoder_flops(data_dim: int = BURDA_DATA_DIM,
                  hidden: Sequence[int] = BURDA_HIDDEN,
                  latent: int = BURDA_LATENT) -> int:
  """Forward matmul FLOPs of one encoder pass (trunk + loc and log-scale).

  Burda: 2·(784·200 + 200·200 + 200·100) = 433,600.
  """
  return mlp_flops((data_dim,) + tuple(hidden)) + 2 * hidden[-1] * 2 * latent


def decoder_flops(data_dim: int = BURDA_DATA_DIM,
                  hidden: Sequence[int] = BURDA_HIDDEN,
                  latent: int = BURDA_LATENT) -> int:
  """Forward matmul FLOPs of one decoder pass per sample.

  Burda: 2·(50·200 + 200·200 + 200·784) = 413,600.
  """
  return mlp_flops((latent,) + tuple(hidden) + (data_dim,))


def train_flops_per_example(num_samples: int = 1,
                            data_dim: int = BURDA_DATA_DIM,
                            hidden: Sequence[int] = BURDA_HIDDEN,
                            latent: int = BURDA_LATENT) -> int:
  """Matmul FLOPs of one training example's gradient (forward + backward).

  Every layer's forward product F, its weight gradient (F again) and its
  input gradient (F), except the input gradient of the data layer (x is
  not differentiated): 3·(E + k·G) - 2·data_dim·hidden[0], with E, G the
  encoder and decoder forward FLOPs (`encoder_flops`, `decoder_flops`).
  Burda, one sample: 3·(433,600 + 413,600) - 313,600 = 2,228,000 (the
  usual "3 × forward" convention, 2,541,600, counts 14% more work than is
  done, which would flatter every ratio to the bound).
  """
  arch = dict(data_dim=data_dim, hidden=hidden, latent=latent)
  first = (tuple(hidden) or (2 * latent,))[0]  # The data layer's width.
  return (3 * (encoder_flops(**arch) + num_samples * decoder_flops(**arch)) -
          2 * data_dim * first)


def cpu_model() -> str:
  """The CPU model name, family, model and clock from /proc/cpuinfo."""
  fields = {}
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        key, _, value = line.partition(':')
        key = key.strip()
        if key in ('model name', 'cpu family', 'model', 'cpu MHz'):
          fields.setdefault(key, value.strip())
  except OSError:
    pass
  if 'model name' not in fields:
    return platform.processor() or platform.machine()
  extra = [f'{k} {fields[k]}' for k in ('cpu family', 'model') if k in fields]
  if 'cpu MHz' in fields:
    extra.append(f"{float(fields['cpu MHz']):.0f} MHz")
  return f"{fields['model name']} ({', '.join(extra)})" if extra else fields[
      'model name']


def load_average() -> tuple[float, float, float]:
  """The 1, 5 and 15 minute load averages (zeros where unavailable)."""
  try:
    return tuple(round(x, 2) for x in os.getloadavg())
  except OSError:
    return (0.0, 0.0, 0.0)


def machine_info() -> dict[str, Any]:
  """Where a benchmark ran: device, CPU, cores, load, date, versions."""
  dev = jax.devices()[0]
  return {
      'date': datetime.datetime.now().isoformat(timespec='seconds'),
      'backend': jax.default_backend(),
      'device': getattr(dev, 'device_kind', str(dev)),
      'num_devices': jax.device_count(),
      'cpu': cpu_model(),
      'cores': os.cpu_count(),
      'load_avg': load_average(),
      'jax': jax.__version__,
      'python': platform.python_version(),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
  }


def _fmt(value: Any) -> str:
  if isinstance(value, float):
    return f'{value:.4g}'
  if isinstance(value, (tuple, list)):
    return ','.join(_fmt(v) for v in value)
  return str(value)


class Reporter:
  """Prints one `name: k=v ...` line per result; optionally saves JSON."""

  def __init__(self, benchmark: str, output: str | None = None,
               stream=None):
    self.benchmark = benchmark
    self.output = output
    self.stream = stream or sys.stdout
    self.records: list[dict[str, Any]] = []
    self.machine = machine_info()

  def info(self) -> None:
    """Prints the machine line."""
    print(f'# {self.benchmark} machine: ' + ' '.join(
        f'{k}={_fmt(v)}' for k, v in self.machine.items()), file=self.stream,
          flush=True)

  def result(self, case: str, **fields: Any) -> dict[str, Any]:
    """Prints (and keeps) one result line; adds the current load average."""
    record = {'benchmark': self.benchmark, 'case': case, **fields,
              'load_avg': load_average()}
    self.records.append(record)
    print(f'{self.benchmark}/{case}: ' + ' '.join(
        f'{k}={_fmt(v)}' for k, v in record.items()
        if k not in ('benchmark', 'case')), file=self.stream, flush=True)
    return record

  def save(self) -> None:
    """Writes {'machine', 'results'} to `output` (if set)."""
    if not self.output:
      return
    os.makedirs(os.path.dirname(os.path.abspath(self.output)), exist_ok=True)
    with open(self.output, 'w') as f:
      json.dump({'machine': self.machine, 'results': self.records}, f,
                indent=1, default=_json_default)


def _json_default(value: Any) -> Any:
  if isinstance(value, (np.generic,)):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  return str(value)


def make_parser(doc: str, cases: Sequence[str],
                extra_cases: Sequence[str] = ()) -> argparse.ArgumentParser:
  """A benchmark's flags: --cases (default `cases`), --peak_n, --full,
  --output, --repeats, --seed, the data's location and the model's size."""
  parser = argparse.ArgumentParser(description=doc.split('\n')[0])
  every = ', '.join(tuple(cases) + tuple(extra_cases))
  parser.add_argument('--cases', default=','.join(cases), help=f'Of {every}.')
  parser.add_argument('--peak_n', type=int, default=2048,
                      help='Size of the matmul measuring the peak (0: none).')
  parser.add_argument('--full', action='store_true',
                      help="The issue's full sizes (slow on CPU).")
  parser.add_argument('--output', default=None,
                      help='Also write the results as JSON to this file.')
  parser.add_argument('--repeats', type=int, default=3,
                      help='Timed repeats (rounds) per case; the median '
                      'and the best are reported.')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--dataset', default='binarized_mnist',
                      help="'binarized_mnist' (real data) or 'synthetic'.")
  parser.add_argument('--tfds_data_dir', default=None,
                      help='TFDS data dir (default: env VAE_TFDS_DATA_DIR).')
  parser.add_argument('--data_cache_dir', default=None,
                      help='numpy cache dir <dir>/binarized_mnist.npz '
                      '(default: env VAE_DATA_CACHE); the only source on '
                      'machines without TensorFlow.')
  parser.add_argument('--hidden_sizes', default='200,200',
                      help='Hidden layer widths (default: Burda).')
  parser.add_argument('--latent_dim', type=int, default=BURDA_LATENT)
  parser.add_argument('--allow_synthetic', action='store_true',
                      help='Fall back to synthetic images if the real data '
                      'cannot be found (speed does not depend on pixels).')
  return parser


def check_cases(cases: Sequence[str], known: Sequence[str]) -> None:
  """ValueError naming the choices if a case is not in `known`."""
  unknown = set(cases) - set(known)
  if unknown:
    raise ValueError(f'unknown cases {sorted(unknown)}; choose from '
                     f'{", ".join(known)}')


def burda_model(hidden: Sequence[int] = BURDA_HIDDEN,
                latent: int = BURDA_LATENT, data_dim: int = BURDA_DATA_DIM):
  """The Burda et al. (2015) VAE, tanh MLPs (default 784-200-200-50)."""
  from vae.models import image_vae  # pylint: disable=g-import-not-at-top
  return image_vae.burda_vae(latent_dim=latent, hidden_sizes=tuple(hidden),
                             data_dim=data_dim)


def model_from_args(args: argparse.Namespace):
  """The VAE of --hidden_sizes and --latent_dim (tanh MLPs, 784 pixels)."""
  hidden = tuple(int(h) for h in str(args.hidden_sizes).split(',') if h)
  return burda_model(hidden, args.latent_dim)


def arch(model) -> dict[str, Any]:
  """The keyword arguments of the FLOP counts for `model`."""
  return dict(data_dim=model.data_dim,
              hidden=tuple(model.decoder_net.hidden_sizes),
              latent=model.latent_dim)


def load_images(args: argparse.Namespace, split: str,
                num: int | None = None) -> tuple[np.ndarray, str]:
  """The first `num` images of `split` (float32 [N, 784]) and their source.

  Args:
    args: parsed flags (see `add_common_args`).
    split: 'train' or 'test'.
    num: keep the first `num` images (None: all; synthetic: 10,000).

  Returns:
    (images, source) with source the dataset's name or 'synthetic'.
  """
  from vae import data as data_lib  # pylint: disable=g-import-not-at-top

  def synthetic():
    return data_lib.synthetic_images(num or 10_000, seed=args.seed,
                                     stream=data_lib.SPLITS.index(split))

  if args.dataset == 'synthetic':
    return synthetic(), 'synthetic'
  try:
    ds = data_lib.load_dataset(args.dataset, data_dir=args.tfds_data_dir,
                               cache_dir=args.data_cache_dir)
    return ds.split(split)[:num], args.dataset
  except data_lib.DataNotFoundError as e:
    if not args.allow_synthetic:  # One line, no traceback.
      raise SystemExit(f'{e} (or --dataset=synthetic, --allow_synthetic)') \
          from None
    print(f'# {e}\n# falling back to synthetic images', file=sys.stderr)
    return synthetic(), 'synthetic'


def ratios(seconds: Timing, flops: float, peak: dict[str, float] | None
           ) -> dict[str, float]:
  """Time against the FLOP-bound time FLOPs / (measured matmul peak).

  Returns:
    {'gflops', 'flop_bound_s', 'ratio_to_bound' (median / median),
    'ratio_to_bound_best' (best / best), 'ratio_to_bound_cpu' (CPU seconds
    against the peak per CPU-second)}; only 'gflops' without a peak.
  """
  out = {'gflops': flops / seconds.median / 1e9}
  if peak:
    out['flop_bound_s'] = flops / (peak['gflops'] * 1e9)
    out['ratio_to_bound'] = seconds.median / out['flop_bound_s']
    out['ratio_to_bound_best'] = seconds.min / (flops /
                                                (peak['gflops_best'] * 1e9))
    if seconds.cpu_times and 'gflops_per_cpu_s' in peak:
      out['ratio_to_bound_cpu'] = seconds.cpu_median / (
          flops / (peak['gflops_per_cpu_s'] * 1e9))
  return out
