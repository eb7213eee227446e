"""Why log p(x) is hard: prior Monte Carlo vs importance sampling with q(z|x).

On the linear-Gaussian model (z ~ N(0, I_d), x|z ~ N(Wz + b, σ²I_D)), with
log p(x) exact, log p̂_K(x) = log (1/K) Σ_k p(x|z_k) p(z_k)/q(z_k), z_k ~ q,
is scored by its bias, sd and RMSE as K and d grow. Proposals: the prior
(naive Monte Carlo), the exact posterior (every weight equals p(x): zero
error at K = 1), the best diagonal Gaussian q* (its tails are too light
when the posterior is correlated, and then χ² = ∞) and a mismatched but
overdispersed q. The closed-form ρ = χ²(p(z|x) ‖ q) predicts the error
(bias ≈ -ρ/2K, sd ≈ √(ρ/K)) and the samples needed for RMSE < tolerance;
for the prior it grows exponentially with d. Self-checks: the posterior's
error is rounding; the measured bias agrees with -ρ/2K within sampling
error wherever K ≥ 10ρ (`vae.problems.importance_sampling.summarize`).
"""

import jax
import numpy as np

from experiments.common import outputs
from vae import config as cfg
from vae import importance
from vae import stats
from vae.problems import importance_sampling as isl
from vae.problems import linear_gaussian as lg


# Old flag names, refused naming the new one (mnist_intractability's name,
# `importance.KGrid`).
RENAMED = {'max_log2_samples': 'max_log2_k'}


@cfg.settings
class Config:
  latent_dims: tuple[int, ...] = cfg.setting(
      (1, 2, 4, 8), 'Latent dimensions d to sweep (each <= observed_dim).',
      min=1, max=64)
  observed_dim: int = cfg.setting(16, 'Observed dimension D.', min=1, max=256)
  noise: float = cfg.setting(0.5, 'Observation noise σ.', gt=0.0, max=1e3)
  points: int = cfg.setting(2, 'Data points x per dimension.', min=1,
                            max=1000)
  repeats: int = cfg.setting(32, 'Independent estimates per (x, K).', min=2,
                             max=10**4)
  max_log2_k: int = cfg.like(importance.KGrid, 'max_log2_k', 14,
                             max=20)
  tolerance: float = cfg.setting(
      0.1, 'Target RMSE in nats for "samples needed".', gt=0.0, max=100.0)
  proposals: tuple[str, ...] = cfg.setting(isl.PROPOSALS, 'Proposals q.',
                                           choices=isl.PROPOSALS)

  def check(self):
    if max(self.latent_dims) > self.observed_dim:
      raise ValueError(f'latent_dims: {max(self.latent_dims)} exceeds '
                       f'observed_dim {self.observed_dim}.')
    size = (self.points * self.repeats * 2**self.max_log2_k *
            (max(self.latent_dims) + 1))
    if size > 2e8:  # Floats held at once: about 1.6 GB in float64.
      raise ValueError(f'points x repeats x 2^max_log2_k x (d + 1) = '
                       f'{size:.2g} exceeds 2e8; lower one of them.')


def _records(config: Config, seed: int) -> list[dict]:
  ks = tuple(2**i for i in range(config.max_log2_k + 1))
  key = jax.random.PRNGKey(seed)
  records = []
  for d in config.latent_dims:
    k_model, k_est = jax.random.split(jax.random.fold_in(key, d))
    model, (x,), _, _ = lg.draw_problem(k_model, config.observed_dim, d,
                                        config.noise, (config.points,))
    proposals = isl.proposals(model, x, config.proposals)
    for i, name in enumerate(config.proposals):
      errors, log_rho1, log_px = isl.estimate_errors(
          model, x, proposals[name], jax.random.fold_in(k_est, i),
          config.repeats, ks)
      tol = float(stats.rounding_tolerance(np.max(np.abs(log_px)), x.dtype))
      s = isl.summarize(errors, log_rho1, ks, config.tolerance)
      for j, k in enumerate(ks):
        r = {'kind': 'per_K', 'latent_dim': d, 'proposal': name, 'K': k,
             **{c: float(s[c][j]) for c in ('bias', 'std', 'rmse',
                                            'predicted_bias', 'predicted_std',
                                            'z')}}
        if name == 'posterior':  # Every weight is p(x): rounding only.
          r['disagrees'] = not r['rmse'] <= tol  # NaN disagrees.
        elif s['claimed'][j]:
          r[stats.CHECKS] = [(r['z'], 'two-sided')]
        records.append(r)
      records.append({
          'kind': 'summary', 'latent_dim': d, 'proposal': name,
          'log1p_chi2': s['log1p_chi2'], 'bias_at_K=1': float(s['bias'][0]),
          'bias_at_K_max': float(s['bias'][-1]),
          'rmse_at_K_max': float(s['rmse'][-1]),
          'K_needed_predicted': s['K_needed_predicted'],
          'K_needed_measured': s['K_needed_measured'], 'K_max': ks[-1]})
  return stats.mark_disagreements(records)  # Bonferroni over the run.


def run(config: Config, seed: int, out: outputs.Run) -> list[dict]:
  """Per-K and summary rows (float64), the two figures, two tables."""
  with jax.enable_x64(True):  # Scoped: no global config change.
    records = _records(config, seed)
  plot(records, config.tolerance, out)
  shown = (1, 16, 256, 4096, 2**config.max_log2_k)
  out.table([r for r in records if r.get('K') in shown])
  out.table([r for r in records if r['kind'] == 'summary'])
  return records


def plot(records: list[dict], tolerance: float, out: outputs.Run) -> None:
  """Error vs K per latent dim, and samples needed vs latent dim."""
  plt = outputs.pyplot()
  per_k = [r for r in records if r['kind'] == 'per_K']
  dims = sorted({r['latent_dim'] for r in per_k})
  names = list(dict.fromkeys(r['proposal'] for r in per_k))
  fig, axes = plt.subplots(1, len(dims), figsize=(4 * len(dims), 4),
                           squeeze=False, sharey=True)
  for ax, d in zip(axes[0], dims):
    for i, name in enumerate(names):
      rows = [r for r in per_k if r['latent_dim'] == d and
              r['proposal'] == name]
      ks = [r['K'] for r in rows]
      ax.plot(ks, [max(r['rmse'], 1e-6) for r in rows], 'o-', color=f'C{i}',
              ms=3, label=f'{name} RMSE')
      ax.plot(ks, [max(abs(r['bias']), 1e-6) for r in rows], ':',
              color=f'C{i}', label=f'{name} |bias|')
    ax.axhline(tolerance, color='k', lw=0.7, ls='--')
    ax.set(xscale='log', yscale='log', xlabel='K (samples)',
           title=f'latent dim d = {d}')
    ax.set_xscale('log', base=2)
  axes[0][0].set_ylabel('error of log p̂_K(x) (nats)')
  axes[0][0].legend(fontsize=6)
  out.save_figure(fig, 'error_vs_samples.png')

  summary = [r for r in records if r['kind'] == 'summary']
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for i, name in enumerate(names):
    rows = [r for r in summary if r['proposal'] == name]
    pred = [(r['latent_dim'], r['K_needed_predicted']) for r in rows
            if 0 < r['K_needed_predicted'] < 1e300]
    meas = [(r['latent_dim'], r['K_needed_measured']) for r in rows
            if r['K_needed_measured'] is not None]
    if pred:
      ax.plot(*zip(*pred), 'o-', color=f'C{i}', label=f'{name}: predicted')
    if meas:
      ax.plot(*zip(*meas), 'x', ms=10, color=f'C{i}',
              label=f'{name}: measured')
  ax.axhline(summary[0]['K_max'], color='k', lw=0.7, ls='--',
             label='largest K tried')
  ax.set(yscale='log', xlabel='latent dimension d',
         ylabel='samples K for RMSE < tolerance',
         title='Samples needed to estimate log p(x)')
  ax.legend(fontsize=7)
  out.save_figure(fig, 'samples_needed.png')
