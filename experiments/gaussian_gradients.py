"""Estimator variance on Gaussian costs vs k (Mohamed et al. 2020, Figs. 2-3).

q = N(μ, σ²) (default μ = σ = 1); costs (x-k)², exp(-kx²), cos(kx) over
grids of k; ∂/∂μ and ∂/∂σ of E_q[f] by the score function, the score
function with the variance-optimal constant baseline b*_θ = E[f s_θ²]/E[s_θ²]
(exact, by quadrature), the pathwise and the coupled measure-valued
estimator. Every row has the exact gradient, variance and 4th moment
(quadrature) beside the measured ones and is checked (`disagrees`); the run
states where variance curves cross and draws variance_vs_k_N*.png.
The earlier μ-grid study: --costs=square,exp,cos,sigmoid --square_ks=0
--cos_ks=1 --mus=-3,-2,-1,0,1,2,3 --sample_counts=1,10,100.
"""

import time

import jax
import numpy as np

from experiments.common import distributed
from experiments.common import outputs
from vae import comparison
from vae import config as cfg
from vae import moments
from vae import stats
from vae.estimators import registry
from vae.problems import gaussian_costs as gc

ESTIMATORS = tuple(n for n in registry.names('expectation', 'continuous')
                   if registry.lookup(n).state in (None, 'optimal_baseline'))
_grid = lambda x: tuple(float(f'{v:.4g}') for v in x)


@cfg.settings
class Config:
  costs: tuple[str, ...] = cfg.setting(('square', 'bump', 'cos'),
                                       'Cost families f(x; k).',
                                       choices=tuple(gc.FAMILIES))
  square_ks: tuple[float, ...] = cfg.setting(
      _grid(np.linspace(-3, 3, 13)), 'k of (x-k)^2.', min=-10.0, max=10.0)
  bump_ks: tuple[float, ...] = cfg.setting(
      _grid(np.logspace(-1, 1, 13)), 'k of exp(-kx^2).', gt=0.0, max=100.0)
  cos_ks: tuple[float, ...] = cfg.setting(
      _grid(np.geomspace(0.5, 5, 13)), 'k of cos(kx).', min=-10.0, max=10.0)
  exp_ks: tuple[float, ...] = cfg.setting((1.0,), 'k of exp(kx).', min=-3.0,
                                          max=3.0)
  sigmoid_ks: tuple[float, ...] = cfg.setting((1.0,), 'k of sigmoid(kx).',
                                              min=-10.0, max=10.0)
  estimators: tuple[str, ...] = cfg.like(
      moments.Comparison, 'estimators',
      ('score', 'score_optimal_baseline', 'pathwise', 'measure_valued'),
      choices=ESTIMATORS)
  mus: tuple[float, ...] = cfg.setting((1.0,), 'Grid of μ.', min=-10.0,
                                       max=10.0)
  sigmas: tuple[float, ...] = cfg.setting((1.0,), 'Grid of σ.', min=0.05,
                                          max=3.0)
  sample_counts: tuple[int, ...] = cfg.like(moments.Draws, 'sample_counts',
                                            max=1000)
  num_draws: int = cfg.like(moments.Draws, 'num_draws', 100000)
  devices: int = cfg.like(moments.MeshConfig, 'devices')

  def ks(self, cost: str) -> tuple[float, ...]:
    return getattr(self, f'{cost}_ks')

  def check(self):
    points = sum(len(self.ks(c)) for c in self.costs) * len(self.mus)
    work = (self.num_draws * points * len(self.sigmas) *
            sum(self.sample_counts) * len(self.estimators))
    if work > 2e10:
      raise ValueError(f'num_draws: {work:.2g} cost evaluations (draws x grid '
                       'points x samples x estimators) exceed 2e10.')
    reach = max(abs(k) for k in self.exp_ks) * (
        max(abs(m) for m in self.mus) + 6 * max(self.sigmas))
    if 'exp' in self.costs and reach > 20:
      raise ValueError(f'exp_ks: exp(kx) reaches exp({reach:.3g}) at 6σ; its '
                       '4th powers overflow float32 beyond exp(20).')


def _plot(out, config, records, curves, n):
  """Variance vs k (vs μ for a single k) per cost and parameter; f below."""
  plt = outputs.pyplot()
  fig, axes = plt.subplots(3, len(config.costs), squeeze=False,
                           figsize=(4 * len(config.costs), 9))
  m, s = config.mus[0], config.sigmas[0]
  for j, cost in enumerate(config.costs):
    fam, ks = gc.FAMILIES[cost], config.ks(cost)
    x = 'k' if len(ks) > 1 else 'mu'
    ticks = sorted(set(ks[::len(ks) // 2 or 1] if x == 'k' else config.mus))
    at = {'cost': cost, 'sigma': s, 'num_samples': n,
          **({'mu': m} if x == 'k' else {'k': ks[0]})}
    rows = [r for r in records if all(r[a] == v for a, v in at.items())]
    for i, param in enumerate(gc.PARAMS):
      ax = axes[i, j]
      for c, est in enumerate(config.estimators):
        pts = sorted((r[x], r['variance'], r['exact_variance']) for r in rows
                     if (r['estimator'], r['param']) == (est, param))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], 'o', ms=3,
                color=f'C{c}', label=est)
        line = (curves[cost]['ks'], curves[cost][param].get(est, []) / n) if (
            cost in curves) else ([p[0] for p in pts], [p[2] for p in pts])
        ax.plot(*line, '-', lw=1, color=f'C{c}')
      low = min([r['variance'] for r in rows if r['variance'] > 0] + [1e-12])
      ax.set(yscale='log', xlabel=x, ylabel='variance', xscale='log' if (
          fam.log_k and x == 'k') else 'linear', ylim=(max(
              ax.get_ylim()[1] * 1e-5, low / 3), None), xticks=ticks,
             xticklabels=[f'{t:g}' for t in ticks],
             title=f'{fam.label}: ∂/∂{"μ" if param == "mu" else "σ"}')
      ax.minorticks_off()
    for k in sorted({ks[0], ks[len(ks) // 2], ks[-1]}):
      axes[2, j].plot(xs := np.linspace(-3, 3, 200), fam.d0(xs, k), label=k)
    axes[2, j].set(xlabel='x', title=f'f(x) = {fam.label}')
    axes[2, j].legend(fontsize=7, title='k')
  axes[0, 0].legend(fontsize=7)
  fig.suptitle(f'{n}-sample estimates, σ = {s:g} (μ = {m:g} against k): '
               'markers measured variances, lines exact (quadrature)')
  fig.tight_layout()
  out.save_figure(fig, f'variance_vs_k_N{n}.png')


def run(config: Config, seed: int, out: outputs.Run) -> list[dict]:
  fams = {c: gc.FAMILIES[c] for c in config.costs}
  grids = {c: gc.with_exact_gradients(f, gc.with_baselines(f, gc.grid_points(
      config.ks(c), config.mus, config.sigmas))) for c, f in fams.items()}
  points = gc.concatenate(grids)
  size = len(points['k']) * sum(config.sample_counts) * len(config.estimators)
  # --devices: the draws' devices (None: one device).
  mesh = distributed.data_mesh('gaussian_gradients', config.devices)
  chunk = moments.default_chunk(config.num_draws, size, 2**24, 10**7,
                                multiple_of=mesh.size if mesh else 1)
  start = time.time()
  program = jax.jit(gc.moment_program(
      [registry.lookup(e) for e in config.estimators], tuple(fams.values()),
      config.sample_counts, config.num_draws, chunk, mesh)).lower(seed,
                                                          points).compile()
  compiled = time.time()
  measured = jax.tree.map(np.asarray, program(seed, points))
  sampled = time.time()
  records = stats.mark_disagreements(stats.moment_checks(gc.records(
      grids, measured, config.sample_counts, config.num_draws)))
  timed = time.time()
  seconds = gc.seconds_per_estimate(
      [registry.lookup(e) for e in config.estimators], grids,
      config.sample_counts)
  device = comparison.device_name()
  for r in records:
    r['seconds'] = seconds[r['cost'], r['estimator'], r['num_samples']]
    r['efficiency'] = r['variance'] * r['seconds']
    r['device'] = device
  timed = time.time() - timed
  curves, crossings = {}, []
  m, s = config.mus[0], config.sigmas[0]
  for c in (c for c in config.costs if len(set(config.ks(c))) > 2):
    curves[c], found = gc.exact_curves(fams[c], config.estimators,
                                       config.ks(c), m, s)
    crossings += [{'cost': c, 'mu': m, 'sigma': s, **x} for x in found]
  out.log(f'gaussian_gradients: compiled 1 program in {compiled - start:.2f}'
          f' s, sampled {config.num_draws} draws (chunks of {chunk}) in '
          f'{sampled - compiled:.2f} s, exact values in '
          f'{time.time() - sampled - timed:.2f} s, timed each estimator '
          f'alone in {timed:.2f} s')
  for n in config.sample_counts:
    _plot(out, config, records, curves, n)
  out.write_json('crossovers.json', crossings)
  out.table(crossings, float_fmt='.3g')
  out.log(f'{len(crossings)} crossovers of the exact variance curves: the k '
          'where the lower-variance estimator changes (any N).')
  out.log(f'\nseconds per estimate on {device} (one N-sample estimate of '
          '(∂/∂μ, ∂/∂σ) at one point, compiled, median of repeats; '
          'efficiency = variance × seconds, lower is better):')
  out.table([{'cost': c, 'estimator': e, 'num_samples': n, 'seconds': t}
             for (c, e, n), t in seconds.items()], float_fmt='.3g')
  out.log('\nbest estimator per sample (least variance) and per second '
          '(least variance × seconds; time depends on the machine, variance '
          'does not), wins over the grid of k:')
  out.table(comparison.ranking(records, ('cost', 'param', 'num_samples')))
  out.write_json('efficiency.json', records)
  return comparison.without_timing(records)
