r"""Many gradient estimates at one minibatch: one vmapped call vs a Python loop.

The measurement behind gradient-variance studies: D independent estimates of
the gradient of the full Burda VAE's ELBO (pathwise, one sample per example,
analytic KL) at one minibatch of B = 100 training images, reduced to the
per-coordinate mean and variance (Welford/Chan merges, so nothing of size
D × P is kept). Cases:

* `vmapped`: ONE jitted call (`vae.sharding.gradient_moments_fn`): a
  `lax.scan` over chunks of `--chunk` draw keys, each chunk's draws vmapped,
  which turns the per-draw matmuls into large ones (the minibatch and the
  parameters are shared by all draws).
* `scan`: ONE jitted call, a `lax.scan` over the draws one at a time (the
  same function with chunk 1, no vmap). On XLA:CPU this beats `vmapped`,
  whose per-draw decoder weight gradients become batched dots that XLA:CPU
  runs several times slower than plain ones.
* `loop`: a Python loop over a jitted function that computes ONE estimate and
  merges it into the running moments on device
  (`vae.sharding.gradient_moments_loop`); no host transfer per draw.

All use the same keys in the same order; the lines report the speedups, the
relative difference of their total variances (float rounding only), and the
GFLOP/s at B · 2.54 MFLOP per draw. Usage:

  python -m benchmarks.gradient_variance            # D = 400
  python -m benchmarks.gradient_variance --full     # D = 1000
"""

import argparse
import sys
from typing import Any

import jax
import numpy as np

from benchmarks import common
from vae import sharding
from vae.models import image_vae

CASES = ('vmapped', 'scan', 'loop')
# Not run by default: 'vmapped' with each chunk's draws split over all devices
# (`vae.sharding`); --chunk must be divisible by the number of devices.
EXTRA_CASES = ('vmapped_sharded',)


def benchmark(batch: np.ndarray, *, num_draws: int = 1000, chunk: int = 100,
              rounds: int = 3, seed: int = 0,
              model: image_vae.VAE | None = None, cases=CASES,
              reporter: common.Reporter | None = None,
              source: str = '') -> dict[str, dict[str, Any]]:
  """Times D gradient estimates at `batch`: vmapped, scanned, looped.

  Args:
    batch: the minibatch x [B, D_x].
    num_draws: D.
    chunk: draws vmapped together (must divide D; D: one chunk).
    rounds: timed rounds (interleaved).
    seed: seed (parameters and draw keys).
    model: the VAE (default: Burda's).
    cases: which of `CASES`.
    reporter: prints the lines.
    source: the data's name.

  Returns:
    {case: record} with seconds, estimates_per_s(_best), gflops; the
    one-call cases also have speedup(_best) over 'loop' and the relative
    difference of their total variances from the loop's.
  """
  from benchmarks import train_throughput  # pylint: disable=g-import-not-at-top
  model = model or train_throughput.burda_model()
  reporter = reporter or common.Reporter('gradient_variance')
  chunk = min(chunk, num_draws)
  params = model.init(jax.random.PRNGKey(seed))
  batch = jax.device_put(np.asarray(batch, np.float32))
  key = jax.random.PRNGKey(seed + 1)
  keys = sharding.draw_keys(key, num_draws, chunk)
  keys_1 = sharding.draw_keys(key, num_draws, 1)  # The same keys, [D, 1, 2].
  moments = sharding.jit_gradient_moments(sharding.gradient_moments_fn(model))
  fns = {
      'vmapped': lambda: moments(params, batch, keys),
      'scan': lambda: moments(params, batch, keys_1),
      'loop': lambda: sharding.gradient_moments_loop(model, params, batch,
                                                     keys),
  }
  if 'vmapped_sharded' in cases:
    mesh = sharding.make_mesh()
    sharded = sharding.jit_gradient_moments(
        sharding.gradient_moments_fn(model, mesh=mesh), mesh)
    fns['vmapped_sharded'] = lambda: sharded(params, batch, keys)
  unknown = set(cases) - set(CASES) - set(EXTRA_CASES)
  if unknown:
    raise ValueError(f'unknown cases {sorted(unknown)}; choose from {CASES}')
  fns = {c: fns[c] for c in cases}
  timings = common.time_interleaved(fns, rounds=rounds)
  flops_per_draw = batch.shape[0] * common.train_flops_per_example(
      data_dim=model.data_dim, hidden=tuple(model.encoder.hidden_sizes),
      latent=model.latent_dim)
  out = {}
  for case in cases:
    t = timings[case]
    out[case] = dict(num_draws=num_draws, batch_size=batch.shape[0],
                     vmapped_draws=chunk if 'vmapped' in case else 1,
                     devices=(jax.device_count() if case.endswith('sharded')
                              else 1),
                     seconds=t.median, seconds_best=t.min,
                     cpu_s=t.cpu_median,
                     estimates_per_s=num_draws / t.median,
                     estimates_per_s_best=num_draws / t.min,
                     gflops=num_draws * flops_per_draw / t.median / 1e9,
                     compile_s=t.compile_s, data=source)
  if 'loop' in cases:
    ref = _total_variances(fns['loop']())
    for case in cases:
      if case == 'loop':
        continue
      tv = _total_variances(fns[case]())
      out[case].update({f'total_variance_{g}': v for g, v in tv.items()})
      out[case]['max_rel_diff_total_variance'] = max(
          abs(tv[g] - ref[g]) / max(abs(ref[g]), 1e-30) for g in tv)
      out[case]['speedup'] = timings['loop'].median / timings[case].median
      out[case]['speedup_best'] = timings['loop'].min / timings[case].min
      out[case]['speedup_cpu'] = (timings['loop'].cpu_median /
                                  max(timings[case].cpu_median, 1e-9))
  for case in cases:
    reporter.result(case, **out[case])
  return out


def _total_variances(moments) -> dict[str, float]:
  return {g: float(np.sum(np.asarray(moments[g]['variance'], np.float64)))
          for g in sharding.GROUPS}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  common.add_common_args(parser)
  parser.add_argument('--num_draws', type=int, default=400,
                      help='Gradient estimates D (--full: 1000).')
  parser.add_argument('--batch_size', type=int, default=100)
  parser.add_argument('--chunk', type=int, default=100,
                      help='Draws vmapped together (memory ~ chunk × 1.7 MB '
                      'of gradients for Burda); on a GPU try 1000.')
  parser.add_argument('--cases', default=','.join(CASES),
                      help=f'Of {CASES + EXTRA_CASES}.')
  args = parser.parse_args(argv)
  num_draws = 1000 if args.full else args.num_draws
  images, source = common.load_images(args, 'train', args.batch_size)
  reporter = common.Reporter('gradient_variance', args.output)
  reporter.info()
  out = benchmark(images[:args.batch_size], num_draws=num_draws,
                  chunk=args.chunk, rounds=args.repeats, seed=args.seed,
                  model=common.model_from_args(args),
                  cases=args.cases.split(','), reporter=reporter,
                  source=source)
  for case in ('vmapped', 'scan', 'vmapped_sharded'):
    if 'speedup' in out.get(case, {}):
      reporter.result(f'targets[{case}]', speedup=out[case]['speedup'],
                      speedup_best=out[case]['speedup_best'],
                      met_5x=out[case]['speedup'] >= 5.0)
  reporter.save()
  return 0


if __name__ == '__main__':
  sys.exit(main())
