"""Gradient estimators on Gaussian costs and a linear-Gaussian ELBO: mean and variance vs exact.

Mohamed et al. (2020), section 3: for f(x) = x², exp(x), cos(x) and a bounded
sigmoid under N(μ, σ²), estimates ∂/∂μ and ∂/∂σ with every estimator over a
grid of μ, σ and sample counts N, and reports each estimator's mean and
variance beside the exact gradient and the exact variance (closed form or
quadrature). Also the ELBO gradient of a diagonal Gaussian q in a
linear-Gaussian model (exact gradient known). Writes results.json/.csv,
config.json, and variance-vs-μ plots (one PNG per N).

  python launch.py --experiment=gaussian_gradients --num_samples=1,10 \\
      --estimators=pathwise,score,score_rloo --mus=-2,0,2
"""

from experiments.common import outputs
from vae import config as cfg
from vae import gradient_study
from vae.estimators import registry
from vae.problems import gaussian_costs

PROBLEMS = ('gaussian_cost', 'linear_gaussian')


@cfg.settings
class Config:
  costs: tuple[str, ...] = cfg.setting(
      ('x^2', 'exp', 'cos', 'sigmoid'), 'Cost functions f.',
      choices=tuple(gaussian_costs.COSTS))
  estimators: tuple[str, ...] = cfg.setting(
      ('pathwise', 'score', 'score_mean_baseline', 'score_rloo', 'score_delta',
       'measure_valued'), 'Gradient estimators.',
      choices=registry.names('expectation', 'continuous', stateless=True))
  mus: tuple[float, ...] = cfg.setting(
      (-3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0), 'Grid of μ.',
      min=-50.0, max=50.0)
  sigmas: tuple[float, ...] = cfg.setting((1.0,), 'Grid of σ.', gt=0.0,
                                          max=50.0)
  num_samples: tuple[int, ...] = cfg.setting(
      (1, 10, 100), 'Samples per gradient estimate N.', min=1, max=10**5)
  num_draws: int = cfg.setting(
      2000, 'Independent estimates per grid point (the variance is measured '
      'over these).', min=2, max=10**7)
  problems: tuple[str, ...] = cfg.setting(PROBLEMS, 'Problems.',
                                          choices=PROBLEMS)


def plot_variances(run: outputs.Run, records, num_samples: int) -> None:
  """Variance against μ per estimator (log scale), a panel per cost × param."""
  plt = outputs.pyplot()
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
        ax.plot([p[0] for p in pts], [max(p[1], 1e-12) for p in pts], 'o-',
                color=f'C{k}', label=est, ms=3)
        if all(p[2] is not None for p in pts):
          ax.plot([p[0] for p in pts], [max(p[2], 1e-12) for p in pts], '--',
                  color=f'C{k}', lw=1)
      ax.set_yscale('log')
      ax.set_title(f'f(x) = {cost}: ∂/∂{"μ" if param == "mu" else "σ"}, '
                   f'σ={sigma:g}, N={num_samples}', fontsize=9)
      ax.set_xlabel('μ')
      ax.set_ylabel('variance')
  axes[0, 0].legend(fontsize=7)
  fig.suptitle('Estimator variance (markers: measured; dashed: exact)')
  fig.tight_layout()
  run.save_figure(fig, f'variance_vs_mu_N{num_samples}.png')


def run(config: Config, seed: int, out: outputs.Run) -> list[dict]:
  records = []
  if 'gaussian_cost' in config.problems:
    out.log(f'gaussian_gradients: {len(config.costs)} costs x '
            f'{len(config.estimators)} estimators x '
            f'{len(config.mus) * len(config.sigmas)} (μ, σ) points x N in '
            f'{list(config.num_samples)}, {config.num_draws} draws each')
    records += gradient_study.gaussian_cost_records(
        config.costs, config.estimators, config.mus, config.sigmas,
        config.num_samples, config.num_draws, seed)
  if 'linear_gaussian' in config.problems:
    out.log('gaussian_gradients: linear-Gaussian ELBO gradients')
    records += gradient_study.linear_gaussian_records(
        config.estimators, config.num_samples, config.num_draws, seed)
  if 'gaussian_cost' in config.problems:
    for n in config.num_samples:
      plot_variances(out, records, n)
  out.table(gradient_study.summary_rows(records))
  out.log('max|z|: largest |mean - exact| / std_error over the grid '
          '(unbiased: below ~4). geomean_var: geometric mean of the variance '
          'over the grid. max|var/exact-1|: worst relative error of the '
          'measured variance against its closed form.')
  return records
