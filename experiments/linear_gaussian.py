"""pPCA: log p(x) - ELBO = KL(q ‖ p(z|x)), IWAE_k → log p(x), ELBO vs MLE fits.

z ~ N(0, I_d), x | z ~ N(Wz + b, σ² I_D), all exact (`vae.problems`). Checks:
1. log p(x) - ELBO(q) = KL(q ‖ p(z|x)) for random diagonal q; 2. at the best
diagonal q*, log p(x) - ELBO(q*) = ½(Σ_j log Λ_jj - log det Λ), 0 iff WᵀW is
diagonal; 3. E[IWAE_1] = ELBO(q*) ≤ E[IWAE_k] ≤ log p(x) (q = q*); 4. no fit
(ELBO with each estimator, amortized linear encoder or per-point q) beats
the pPCA MLE on its training data; no ELBO exceeds its log-likelihood.
"""

import jax
import numpy as np

from experiments.common import outputs
from vae import config as cfg
from vae import stats
from vae import optim
from vae.estimators import registry
from vae.problems import amortization as am
from vae.problems import importance_sampling as isl
from vae.problems import linear_gaussian as lg


@cfg.settings
class Config:
  ppca_data_dim: int = cfg.setting(10, 'Observed dim D.', min=2, max=1000)
  ppca_latent_dim: int = cfg.setting(4, 'Latent dim d (< D).', min=1, max=999)
  noise_scale: float = cfg.setting(0.5, 'Noise σ.', gt=0.0, max=1e3)
  train_size: int = cfg.setting(500, 'Training points (>= d + 2).', min=1,
                                max=10**6)
  test_size: int = cfg.setting(2000, 'Held-out points.', min=1, max=10**6)
  identity_pairs: int = cfg.setting(200, '(x, random q) pairs, identity 1.',
                                    min=1, max=10**6)
  iwae_ks: tuple[int, ...] = cfg.setting(
      (1, 2, 5, 10, 50, 100, 500, 1000), 'Importance samples k of IWAE_k.',
      min=1, max=10**5)
  iwae_points: int = cfg.setting(10, 'Points of the IWAE_k curve.', min=1,
                                 max=10**4)
  iwae_repeats: int = cfg.setting(100, 'IWAE_k draws per point.', min=2,
                                  max=10**5)
  amortized_estimators: tuple[str, ...] = cfg.setting(
      ('pathwise', 'score', 'score_rloo', 'stl'), 'Estimators of ELBO fits '
      'with an amortized linear encoder.', choices=am.ESTIMATORS, empty=True)
  per_point_estimators: tuple[str, ...] = cfg.setting(
      ('pathwise', 'score'), 'Estimators of the ELBO fits with per-point q.',
      choices=am.ESTIMATORS, empty=True)
  fit_steps: int = cfg.like(optim.FitConfig, 'fit_steps', 2000)  # Full batch.
  fit_learning_rate: float = cfg.setting(1e-2, 'Adam step size of the fits.',
                                         gt=0.0, max=10.0)
  fit_samples: int = cfg.like(optim.FitConfig, 'fit_samples', 2)
  x64: bool = cfg.setting(True, 'Compute in float64.')

  def check(self):
    d, big = self.ppca_latent_dim, self.ppca_data_dim
    if d >= big:
      raise ValueError(f'ppca_latent_dim: {d} must be < ppca_data_dim {big}.')
    if self.train_size < d + 2:
      raise ValueError(f'train_size: {self.train_size} points cannot fit '
                       f'pPCA with d = {d}; need >= {d + 2}.')
    if self.iwae_points > self.test_size:
      raise ValueError(f'iwae_points: {self.iwae_points} exceeds test_size '
                       f'{self.test_size}.')
    if self.iwae_points * self.iwae_repeats * max(self.iwae_ks) > 1e8:
      raise ValueError('iwae_points x iwae_repeats x max(iwae_ks) exceeds '
                       '1e8 (memory); lower one of them.')
    for e in self.amortized_estimators + self.per_point_estimators:
      try:
        registry.check(e, am.objective_for(e), self.fit_samples)
      except ValueError as error:
        raise ValueError(f'fit_samples: {error}') from None


def _identity(model, x, key) -> list[dict]:
  """Rows for the first 5 points and the mean; all points are checked."""
  c = lg.identity_check(model, x, key)
  mean = {k: np.mean(v) for k, v in c.items() if k != 'disagrees'}
  return [{'point': i, **{k: v[i] for k, v in c.items()}} for i in range(
      min(5, len(x)))] + [{'point': f'mean over {len(x)}', **mean,
                           'max_abs_residual': np.max(np.abs(c['residual'])),
                           'disagrees': c['disagrees'].any()}]


def run(config: Config, seed: int, out: outputs.Run) -> list[dict]:
  """The four sections' rows (float64 by default), tables and figures."""
  with jax.enable_x64(config.x64):  # Scoped: no global config change.
    key = jax.random.PRNGKey(seed)
    keys = jax.random.split(key, 8)
    model, (x_train, x_test, x_pairs), ortho, (x_ortho,) = lg.draw_problem(
        keys[0], config.ppca_data_dim, config.ppca_latent_dim,
        config.noise_scale, (config.train_size, config.test_size,
                             config.identity_pairs), (config.identity_pairs,))
    sections = {
        'identity': _identity(model, x_pairs, keys[6]),
        'best_diagonal_q': [
            {'model': 'orthogonal W (WᵀW diagonal)',
             **am.best_diagonal_check(ortho, x_ortho)},
            {'model': 'random W', **am.best_diagonal_check(model, x_pairs)}],
        'iwae': [{'k': k, **r} for k, r in zip(config.iwae_ks, isl.iwae_check(
            model, x_test[:config.iwae_points], config.iwae_ks,
            config.iwae_repeats, keys[7]))]}
    sections['fit'], curves = am.compare_fits(
        x_train, x_test, model, config.ppca_latent_dim,
        config.amortized_estimators, config.per_point_estimators,
        jax.random.fold_in(key, 100), config.fit_steps,
        optim.OptimizerConfig(learning_rate=config.fit_learning_rate),
        config.fit_samples)
  records = outputs.to_jsonable(stats.mark_disagreements(  # The run's checks.
      [{'section': s, **r} for s, rows in sections.items() for r in rows]))
  for section in sections:
    out.log(f'\n== {section}')
    out.table([r for r in records if r['section'] == section],
              float_fmt='.6g')
  plot(records, curves, out)
  return records


def plot(records: list[dict], curves: dict, out: outputs.Run) -> None:
  """IWAE_k curve and fitted log-likelihoods; ELBO training curves."""
  plt = outputs.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  iw = [r for r in records if r['section'] == 'iwae']
  axes[0].errorbar([r['k'] for r in iw], [r['iwae_minus_log_px'] for r in iw],
                   yerr=[2 * r['stderr'] for r in iw], marker='o',
                   label='E[IWAE_k] - log p(x)  (q = best diagonal q*)')
  axes[0].axhline(iw[0]['elbo_minus_log_px'], color='tab:red', ls=':',
                  label='ELBO(q*) - log p(x)')
  axes[0].axhline(0.0, color='k', lw=0.8)
  axes[0].set(xscale='log', xlabel='k (importance samples)', ylabel='nats',
              title='IWAE_k climbs toward log p(x)')
  fit = [r for r in records if r['section'] == 'fit']
  y = np.arange(len(fit))
  axes[1].plot([r['train_ll'] for r in fit], y, 'o', label='train')
  axes[1].plot([r['test_ll'] for r in fit], y, 's', label='held-out')
  axes[1].set_yticks(y, [r['method'] for r in fit], fontsize=8)
  axes[1].set(xlabel='mean exact log p(x) under the fitted model',
              title='Fitted models (exact log-likelihood)', ylim=(len(y), -1))
  axes[0].legend(fontsize=8)
  axes[1].legend(fontsize=8)
  out.save_figure(fig, 'iwae_and_fits.png')
  fig, ax = plt.subplots(figsize=(8, 4.5))
  for name, hist in curves.items():
    ax.plot(np.arange(1, len(hist) + 1), hist, label=name, lw=1.2)
  top = fit[1]['train_ll']  # The pPCA maximum likelihood.
  ax.axhline(top, color='k', ls='--', label='max log-likelihood (pPCA MLE)')
  ax.set(ylim=(top - 1.5, top + 0.2), xlabel='Adam step',
         ylabel='exact mean train ELBO',
         title='Learning the model by maximizing the ELBO')
  ax.legend(fontsize=7)
  out.save_figure(fig, 'elbo_training.png')
