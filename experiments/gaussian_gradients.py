"""Gradient estimators on Gaussian costs and a linear-Gaussian ELBO: mean and variance vs exact.

Mohamed et al. (2020), section 3: for f(x) = x², exp(x), cos(x) and a bounded
sigmoid under N(μ, σ²), estimates ∂/∂μ and ∂/∂σ with every estimator over a
grid of μ, σ and sample counts N, and reports each estimator's mean and
variance beside the exact gradient and the exact variance (closed form or
quadrature). Also the ELBO gradient of a diagonal Gaussian q in a
linear-Gaussian model (exact gradient known). Writes results.json/.csv,
config.json, and variance-vs-μ plots (one PNG per N).

  python launch.py --experiment=gaussian_gradients --num_samples=1,10 \
      --estimators=pathwise,score,score_rloo --mus=-2,0,2
"""

import os

from absl import app
from absl import flags

from vae import cli
from vae import results

_COSTS = flags.DEFINE_list('costs', ['x^2', 'exp', 'cos', 'sigmoid'],
                           'Cost functions: x^2, exp, cos, sigmoid.')
_ESTIMATORS = flags.DEFINE_list(
    'estimators', ['pathwise', 'score', 'score_mean_baseline', 'score_rloo',
                   'score_delta', 'measure_valued'],
    'Estimators (continuous ones from vae.registry).')
_MUS = flags.DEFINE_list('mus', ['-3', '-2', '-1', '-0.5', '0', '0.5', '1',
                                 '2', '3'], 'Grid of μ values.')
_SIGMAS = flags.DEFINE_list('sigmas', ['1'], 'Grid of σ values (> 0).')
_NUM_SAMPLES = flags.DEFINE_list('num_samples', ['1', '10', '100'],
                                 'Samples per gradient estimate N.')
_NUM_DRAWS = flags.DEFINE_integer(
    'num_draws', 2000, 'Independent estimates per grid point (variance is '
    'measured over these).', lower_bound=2)
_PROBLEMS = flags.DEFINE_list('problems', ['gaussian_cost', 'linear_gaussian'],
                              'Problems: gaussian_cost, linear_gaussian.')
cli.define_common_flags()
FLAGS = flags.FLAGS


def _parse_numbers(name: str, values, cast, positive: bool = False):
  out = []
  for v in values:
    try:
      x = cast(v)
    except ValueError:
      raise app.UsageError(f'--{name}: {v!r} is not a {cast.__name__}.')
    if positive and not x > 0:
      raise app.UsageError(f'--{name}: values must be > 0, got {v}.')
    out.append(x)
  if not out:
    raise app.UsageError(f'--{name} must not be empty.')
  return out


def _validate():
  from vae.estimators import registry
  from vae.problems import gaussian_costs  # pylint: disable=g-import-not-at-top
  for c in _COSTS.value:
    if c not in gaussian_costs.COSTS:
      raise app.UsageError(f'--costs: unknown cost {c!r}; choose from '
                           f'{", ".join(gaussian_costs.COSTS)}.')
  for e in _ESTIMATORS.value:
    if e not in registry.CONTINUOUS:
      raise app.UsageError(f'--estimators: unknown or discrete-only estimator '
                           f'{e!r}; choose from {", ".join(registry.CONTINUOUS)}.')
  for p in _PROBLEMS.value:
    if p not in ('gaussian_cost', 'linear_gaussian'):
      raise app.UsageError(f'--problems: unknown problem {p!r}; choose from '
                           'gaussian_cost, linear_gaussian.')
  return (_parse_numbers('mus', _MUS.value, float),
          _parse_numbers('sigmas', _SIGMAS.value, float, positive=True),
          _parse_numbers('num_samples', _NUM_SAMPLES.value, int, positive=True))


def plot_variances(records, num_samples: int, path: str) -> str:
  """Variance against μ per estimator (log scale), a panel per cost × param."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rs = [r for r in records if r['problem'] == 'gaussian_cost' and
        r['num_samples'] == num_samples]
  costs = list(dict.fromkeys(r['cost'] for r in rs))
  ests = list(dict.fromkeys(r['estimator'] for r in rs))
  sigma = rs[0]['sigma']
  fig, axes = plt.subplots(len(costs), 2, figsize=(10, 3 * len(costs)),
                           squeeze=False)
  for i, cost in enumerate(costs):
    for j, param in enumerate(('mu', 'sigma')):
      ax = axes[i, j]
      for k, est in enumerate(ests):
        pts = sorted((r['mu'], r['variance'], r['exact_variance']) for r in rs
                     if r['cost'] == cost and r['param'] == param and
                     r['estimator'] == est and r['sigma'] == sigma)
        if not pts:
          continue
        color = f'C{k}'
        ax.plot([p[0] for p in pts], [max(p[1], 1e-12) for p in pts], 'o-',
                color=color, label=est, ms=3)
        if all(p[2] is not None for p in pts):
          ax.plot([p[0] for p in pts], [max(p[2], 1e-12) for p in pts], '--',
                  color=color, lw=1)
      ax.set_yscale('log')
      ax.set_title(f'f(x) = {cost}: ∂/∂{"μ" if param == "mu" else "σ"}, '
                   f'σ={sigma:g}, N={num_samples}', fontsize=9)
      ax.set_xlabel('μ')
      ax.set_ylabel('variance')
  axes[0, 0].legend(fontsize=7)
  fig.suptitle('Estimator variance (markers: measured; dashed: exact)')
  fig.tight_layout()
  return results.save_figure(fig, path)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  mus, sigmas, num_samples = _validate()
  from vae import gradient_study  # pylint: disable=g-import-not-at-top
  out = cli.output_dir('gaussian_gradients')
  results.write_config(out, FLAGS, FLAGS.seed)
  records = []
  if 'gaussian_cost' in _PROBLEMS.value:
    print(f'gaussian_gradients: {len(_COSTS.value)} costs x '
          f'{len(_ESTIMATORS.value)} estimators x {len(mus) * len(sigmas)} '
          f'(μ, σ) points x N in {num_samples}, {_NUM_DRAWS.value} draws each',
          flush=True)
    records += gradient_study.gaussian_cost_records(
        _COSTS.value, _ESTIMATORS.value, mus, sigmas, num_samples,
        _NUM_DRAWS.value, FLAGS.seed)
  if 'linear_gaussian' in _PROBLEMS.value:
    print('gaussian_gradients: linear-Gaussian ELBO gradients', flush=True)
    records += gradient_study.linear_gaussian_records(
        _ESTIMATORS.value, num_samples, _NUM_DRAWS.value, FLAGS.seed)
  results.write_results(out, records)
  if 'gaussian_cost' in _PROBLEMS.value:
    for n in num_samples:
      plot_variances(records, n, os.path.join(out, f'variance_vs_mu_N{n}.png'))
  print(results.format_table(gradient_study.summary_rows(records)))
  print(f'\nmax|z|: largest |mean - exact| / std_error over the grid '
        f'(unbiased: below ~4). geomean_var: geometric mean of the variance '
        f'over the grid. max|var/exact-1|: worst relative error of the '
        f'measured variance against its closed form.\nResults in {out}')


if __name__ == '__main__':
  app.run(main)
