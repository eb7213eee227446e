"""Mixture of Gaussians: Gaussian MLE vs EM vs a VAE; MLE = min KL(p_data‖p).

Data from a known 3-component mixture (1-D, 2-D) are fit by a Gaussian (MLE),
K-component mixtures (EM) and a small VAE (likelihood by quadrature over z in
1-D, IWAE in 2-D). KL(p_data ‖ p_model) by quadrature: E_data[-log p_model]
= H(p_data) + KL, so a higher held-out likelihood means a smaller KL. Check:
the Monte Carlo KL on held-out points agrees with the quadrature KL within
its standard error (models with an exact density).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import outputs
from vae import config as cfg
from vae import evaluate
from vae import importance
from vae import stats
from vae.models import gaussian_vae
from vae.models import image_vae
from vae.models import networks
from vae.problems import mixtures
from vae.problems import vae_density


# Old flag names, refused naming the new one (train_vae's names for K and
# for the widths of the hidden layers).
RENAMED = {'iwae_samples': 'eval_k', 'vae_hidden': 'hidden_sizes'}


@cfg.settings
class Config:
  dims: tuple[int, ...] = cfg.setting((1, 2), 'Data dimensions (1, 2).',
                                      min=1, max=2)
  train_points: int = cfg.setting(500, 'Training points from p_data.', min=1,
                                  max=10**6)
  test_points: int = cfg.setting(5000, 'Held-out points from p_data.', min=2,
                                 max=10**6)
  em_components: tuple[int, ...] = cfg.setting(
      (2, 3, 8), 'Numbers of mixture components fit by EM.', min=1, max=100)
  em_iters: int = cfg.setting(200, 'EM iterations.', min=0, max=10**5)
  vae_steps: int = cfg.setting(3000, 'Adam steps of the VAE (0: no VAE).',
                               min=0, max=10**6)
  hidden_sizes: tuple[int, ...] = cfg.like(
      image_vae.ModelConfig, 'hidden_sizes', (64,), max=4096)  # The VAE's.
  eval_k: int = cfg.like(evaluate.EvalConfig, 'eval_k', 500,
                         max=10**5)  # 2-D: K of the VAE's log p(x) at data.
  grid_iwae_samples: int = cfg.setting(200, '2-D: VAE IWAE samples (grid).',
                                       min=1, max=10**5)
  z_grid_points: int = cfg.setting(20000, '1-D: VAE latent quadrature '
                                   'points.', min=2, max=10**6)
  grid_points: int = cfg.setting(0, 'Quadrature grid points per axis (0: 2000'
                                 ' in 1-D, 120 in 2-D).', min=0, max=10**5)

  def check(self):
    need = max(self.em_components) * (max(self.dims) + 1)
    if self.train_points < need:
      raise ValueError(f'train_points: {self.train_points} cannot fit '
                       f'{max(self.em_components)} full-covariance components '
                       f'in {max(self.dims)}-D; need >= {need}.')
    if 2 in self.dims and self.grid_points > 1000:
      raise ValueError('grid_points: at most 1000 per axis in 2-D.')
    if max(self.eval_k, self.grid_iwae_samples) * max(
        self.hidden_sizes, default=1) > 5e5:
      raise ValueError('eval_k (or grid_iwae_samples) x max(hidden_sizes) '
                       'exceeds 5e5 (memory).')


def _run_dim(config: Config, dim: int, key) -> tuple[list[dict], dict]:
  k_train, _, k_em, k_vae, k_eval = jax.random.split(key, 5)
  true = mixtures.true_mixture(dim)
  n, m = config.train_points, config.test_points
  x, _ = mixtures.sample(true, k_train, n + m)
  points, volume = mixtures.quadrature_grid(
      true, config.grid_points or (2000 if dim == 1 else 120))
  models, histories = mixtures.fit_models(true, x[:n], config.em_components,
                                          config.em_iters, k_em)
  everywhere = jnp.concatenate([x, points])  # One call per model.
  log_q = {k: mixtures.log_prob(q, everywhere) for k, q in models.items()}
  sizes = {k: mixtures.num_params(q) for k, q in models.items()}
  if config.vae_steps > 0:
    vae = gaussian_vae.GaussianVAE(dim, dim, config.hidden_sizes)
    params = vae.init(jax.random.fold_in(k_vae, 0))
    params, _ = vae_density.fit(vae, params, x[:n],
                                jax.random.fold_in(k_vae, 1),
                                config.vae_steps)
    name = 'VAE (z quadrature)' if dim == 1 else 'VAE (IWAE estimate)'
    sizes[name] = networks.num_params(params['decoder'])
    if dim == 1:  # Exact up to quadrature error: a grid over the 1-D z.
      z, dz = mixtures.grid(-7.0, 7.0, config.z_grid_points)
      log_q[name] = vae_density.log_marginal_quadrature(vae, params,
                                                        everywhere, z, dz)
    else:  # log (1/K) Σ_k w_k, chunks of C samples (C divides K).
      log_q[name] = jnp.concatenate([jnp.asarray(
          importance.importance_sampling(
              vae, params, np.asarray(pts), k_eval, k,
              chunk_size=math.gcd(k, 100))['log_px'], jnp.float32)
          for pts, k in ((x, config.eval_k),
                         (points, config.grid_iwae_samples))])
  split = lambda lp: (lp[:n], lp[n:n + m], lp[n + m:])
  log_p = split(log_q['true p_data'])[1:]
  records = [{'dim': dim, 'model': name, 'num_params': sizes[name],
              **mixtures.compare(log_p, split(lp), volume)}
             for name, lp in log_q.items()]
  return records, {'histories': histories, 'points': np.asarray(points),
                   'train': np.asarray(x[:n]), 'densities': {
                       k: np.exp(split(v)[2]) for k, v in log_q.items()}}


def run(config: Config, seed: int, out: outputs.Run) -> list[dict]:
  """One row per (dimension, model), checked; three figures; a table."""
  records, extras = [], {}
  for dim in config.dims:
    rows, extras[dim] = _run_dim(config, dim, jax.random.fold_in(
        jax.random.PRNGKey(seed), dim))
    records += rows
  records = stats.mark_disagreements(  # Checked: rows with an exact density.
      [r if 'IWAE' in r['model'] else
       {**r, stats.CHECKS: [(r['z'], 'two-sided')]} for r in records])
  plot(records, extras, out)
  out.table(records)
  return records


def plot(records: list[dict], extras: dict, out: outputs.Run) -> None:
  """Fitted densities; EM curves; held-out NLL = entropy + KL."""
  plt = outputs.pyplot()
  for dim, e in extras.items():
    names = [k for k in e['densities'] if 'population' not in k]
    pts, dens, rows = e['points'], e['densities'], -(-len(names) // 3)
    fig, axes = plt.subplots(*((1, 1) if dim == 1 else (rows, 3)),
                             squeeze=False, figsize=(12, 3.6 * rows))
    if dim == 1:
      axes[0, 0].hist(e['train'][:, 0], bins=60, density=True, color='0.85')
      for i, name in enumerate(names):
        axes[0, 0].plot(pts[:, 0], dens[name], label=name, lw=1.3 + (i == 0),
                        ls='--' if i == 0 else '-')
      axes[0, 0].legend(fontsize=8)
    for ax, name in zip(axes.flat, names if dim == 2 else []):
      num = int(round(len(pts)**0.5))
      ax.contourf(*pts.T.reshape(2, num, num), dens[name].reshape(num, num),
                  15)
      ax.scatter(*e['train'].T, s=2, c='w', alpha=0.5)
      r = next(r for r in records if r['model'] == name and r['dim'] == dim)
      ax.set_title(f'{name}\ntest ll {r["test_ll"]:.3f}, KL '
                   f'{r["kl_quadrature"]:.3f}', fontsize=8)
    fig.suptitle(f'{dim}-D: fitted densities over the training data')
    out.save_figure(fig, f'densities_{dim}d.png')
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  for dim, e in extras.items():
    for k, hist in e['histories'].items():
      axes[0].plot(np.asarray(hist), label=f'{dim}-D, K={k}')
  axes[0].set(xlabel='EM iteration', ylabel='mean train log-likelihood',
              title='EM never decreases the likelihood')
  y, ent = np.arange(len(records)), [r['entropy_quadrature'] for r in records]
  axes[1].barh(y, ent, color='0.7', label='H(p_data) (same for all models)')
  axes[1].barh(y, [r['kl_quadrature'] for r in records], left=ent,
               color='tab:red', label='KL(p_data ‖ p_model)')
  axes[1].set_yticks(y, [f'{r["dim"]}-D {r["model"]}' for r in records],
                     fontsize=7)
  axes[1].set(xlabel='-E_data[log p_model] (nats) = H + KL',
              title='Held-out NLL = data entropy + KL')
  axes[0].legend(fontsize=8)
  axes[1].legend(fontsize=8)
  out.save_figure(fig, 'mle_is_min_kl.png')
