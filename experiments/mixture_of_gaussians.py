"""Mixture of Gaussians: Gaussian MLE vs EM vs a VAE; MLE = min KL(p_data‖p).

Data come from a known 3-component mixture in 1-D and 2-D. We fit a single
Gaussian (closed-form MLE), mixtures with K components by EM
(`vae.mixtures.fit_em`) and a small VAE with a continuous latent
(`vae.gaussian_vae`, log-likelihood by IWAE with many samples), and compare
mean log-likelihoods on the training data and on held-out data.

Because p_data is known, each model's KL(p_data ‖ p_model) is computed by
quadrature on a grid, and

    E_data[-log p_model] = H(p_data) + KL(p_data ‖ p_model),

so the model with the higher held-out log-likelihood is the one closer to
p_data in KL, and -mean log-likelihood - KL is the same number (the data
entropy) for every model: maximizing likelihood IS minimizing
KL(p_data ‖ p_model). The table shows both the quadrature KL and the Monte
Carlo KL on the held-out points (for which the identity is exact, sample by
sample).
"""

import dataclasses
import os
from typing import Any

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from vae import cli
from vae.models import gaussian_vae
from vae.problems import mixtures
from vae import results

_DIMS = flags.DEFINE_list('dims', ['1', '2'], 'Data dimensions to run (1, 2).')
_TRAIN_POINTS = flags.DEFINE_integer('train_points', 500,
                                     'Training points drawn from p_data.')
_TEST_POINTS = flags.DEFINE_integer('test_points', 5000,
                                    'Held-out points drawn from p_data.')
_EM_COMPONENTS = flags.DEFINE_list('em_components', ['2', '3', '8'],
                                   'Numbers of mixture components fit by EM.')
_EM_ITERS = flags.DEFINE_integer('em_iters', 200, 'EM iterations.')
_VAE_STEPS = flags.DEFINE_integer('vae_steps', 3000,
                                  'Adam steps for the VAE (0: no VAE).')
_VAE_HIDDEN = flags.DEFINE_integer('vae_hidden', 64,
                                   'Hidden units of the VAE MLPs.')
_IWAE_SAMPLES = flags.DEFINE_integer(
    'iwae_samples', 500, '2-D data: importance samples for the VAE '
    'log-likelihood of the train and held-out points.')
_GRID_IWAE_SAMPLES = flags.DEFINE_integer(
    'grid_iwae_samples', 200, 'Importance samples for the VAE density on the '
    'quadrature grid (2-D: KL and plots).')
_Z_GRID_POINTS = flags.DEFINE_integer(
    'z_grid_points', 20000, '1-D data: latent grid points for the VAE '
    'log-likelihood by quadrature over z (exact up to grid error).')
_GRID_POINTS = flags.DEFINE_integer(
    'grid_points', 0, 'Quadrature grid points per axis (0: 2000 in 1-D, '
    '120 in 2-D).')
cli.define_common_flags()
FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class Settings:
  """What to run (defaults = the script's defaults)."""
  dims: tuple[int, ...] = (1, 2)
  train_points: int = 500
  test_points: int = 5000
  em_components: tuple[int, ...] = (2, 3, 8)
  em_iters: int = 200
  vae_steps: int = 3000
  vae_hidden: int = 64
  iwae_samples: int = 500
  grid_iwae_samples: int = 200
  z_grid_points: int = 20000
  grid_points: int = 0
  seed: int = 0


def true_mixture(dim: int) -> mixtures.GaussianMixture:
  """The known p_data: 3 components, well separated but overlapping."""
  weights = jnp.array([0.3, 0.5, 0.2])
  if dim == 1:
    return mixtures.from_moments(weights, jnp.array([[-2.0], [1.0], [3.0]]),
                                 jnp.array([[[0.2]], [[0.5]], [[0.1]]]))
  if dim == 2:
    covs = jnp.array([[[0.3, 0.0], [0.0, 0.3]], [[0.5, 0.3], [0.3, 0.4]],
                      [[0.2, -0.1], [-0.1, 0.15]]])
    return mixtures.from_moments(
        weights, jnp.array([[-2.0, 0.0], [1.0, 1.0], [2.0, -1.5]]), covs)
  raise ValueError(f'dims must be 1 or 2, got {dim}.')


_sample = jax.jit(mixtures.sample, static_argnums=2)
_kl_mc = jax.jit(mixtures.kl_decomposition_mc)
_kl_quadrature = jax.jit(mixtures.kl_decomposition_quadrature)


def _grid(true: mixtures.GaussianMixture, grid_points: int):
  dim = true.dim
  num = grid_points or (2000 if dim == 1 else 120)
  sd = jnp.sqrt(jnp.max(jnp.diagonal(true.covariances, axis1=1, axis2=2), 0))
  lo = jnp.min(true.means, 0) - 6.0 * sd
  hi = jnp.max(true.means, 0) + 6.0 * sd
  points, volume = mixtures.grid(lo, hi, num)
  return points, volume, (lo, hi, num)


def _num_params(kind: str, dim: int, k: int = 1, hidden: int = 0) -> int:
  if kind == 'mixture':
    return (k - 1) + k * dim + k * dim * (dim + 1) // 2
  # VAE decoder only (the encoder is not part of the model p(x)).
  return dim * hidden + hidden + hidden * 2 * dim + 2 * dim


def run_dim(dim: int, settings: Settings) -> dict[str, Any]:
  """Fits every model to one dataset of dimension `dim`.

  Args:
    dim: 1 or 2.
    settings: the `Settings`.

  Returns:
    Dict with 'records' (one per model), 'em_histories' {K: [iters+1]},
    'densities' {model: log-density on the grid}, 'grid' (points, lo, hi,
    num), 'train' data and 'true' mixture.
  """
  key = jax.random.fold_in(jax.random.PRNGKey(settings.seed), dim)
  k_train, k_test, k_em, k_vae, k_eval = jax.random.split(key, 5)
  true = true_mixture(dim)
  del k_test  # Train and test points come from one draw.
  x_all, _ = _sample(true, k_train,
                     settings.train_points + settings.test_points)
  x_train, x_test = x_all[:settings.train_points], x_all[settings.train_points:]
  points, volume, grid_info = _grid(true, settings.grid_points)

  # Each model maps (train, test, grid) points to their log-densities; the
  # three sets are evaluated in one call (one compilation per model size).
  models: dict[str, tuple[Any, int]] = {}  # name -> (fn, number of params)
  sizes = (x_train.shape[0], x_test.shape[0])
  all_points = jnp.concatenate([x_train, x_test, points])

  def mixture_fn(mixture):
    lp = log_prob(mixture, all_points)
    return lp[:sizes[0]], lp[sizes[0]:sum(sizes)], lp[sum(sizes):]

  log_prob = jax.jit(mixtures.log_prob)
  models['true p_data'] = (lambda: mixture_fn(true),
                           _num_params('mixture', dim, 3))
  m, c = mixtures.mean_and_covariance(true)
  best_gaussian = mixtures.from_moments(jnp.ones(1), m[None], c[None])
  models['gaussian (min KL, population)'] = (
      lambda: mixture_fn(best_gaussian), _num_params('mixture', dim, 1))
  gaussian = mixtures.fit_gaussian(x_train)
  models['gaussian MLE'] = (lambda: mixture_fn(gaussian),
                            _num_params('mixture', dim, 1))
  em_histories = {}
  fit_em = jax.jit(mixtures.fit_em, static_argnums=(1, 3))
  for k in settings.em_components:
    fitted, history = fit_em(x_train, k, jax.random.fold_in(k_em, k),
                             settings.em_iters)
    em_histories[k] = np.asarray(history)
    models[f'mixture EM K={k}'] = (lambda f=fitted: mixture_fn(f),
                                   _num_params('mixture', dim, k))
  if settings.vae_steps > 0:
    params = gaussian_vae.init(jax.random.fold_in(k_vae, 0), dim, dim,
                               (settings.vae_hidden,))
    params, _ = jax.jit(gaussian_vae.fit, static_argnums=3)(
        params, x_train, jax.random.fold_in(k_vae, 1), settings.vae_steps)

    def vae_fn(p=params):
      if dim == 1:  # Exact up to quadrature error: a grid over the 1-D z.
        z_points, z_volume = mixtures.grid(-7.0, 7.0, settings.z_grid_points)
        lp = jax.jit(gaussian_vae.log_marginal_quadrature)(
            p, all_points, z_points, z_volume)
        return lp[:sizes[0]], lp[sizes[0]:sum(sizes)], lp[sum(sizes):]
      lp = gaussian_vae.log_marginal(p, all_points[:sum(sizes)], k_eval,
                                     settings.iwae_samples)
      grid_lp = gaussian_vae.log_marginal(p, points, k_eval,
                                          settings.grid_iwae_samples)
      return lp[:sizes[0]], lp[sizes[0]:], grid_lp

    name = 'VAE (z quadrature)' if dim == 1 else 'VAE (IWAE estimate)'
    models[name] = (vae_fn, _num_params('vae', dim,
                                        hidden=settings.vae_hidden))

  _, log_true_test, log_true_grid = models['true p_data'][0]()
  records, densities = [], {}
  for name, (log_density, num_params) in models.items():
    log_q_train, log_q_test, log_q_grid = log_density()
    densities[name] = np.asarray(log_q_grid)
    mc = _kl_mc(log_true_test, log_q_test)
    quad = _kl_quadrature(log_true_grid, log_q_grid,
                                                volume)
    test_ll = float(jnp.mean(log_q_test))
    records.append({
        'dim': dim,
        'model': name,
        'num_params': num_params,
        'train_ll': float(jnp.mean(log_q_train)),
        'test_ll': test_ll,
        'kl_quadrature': float(quad['kl']),
        'kl_mc': float(mc['kl']),
        'kl_mc_stderr': float(mc['kl_stderr']),
        'minus_test_ll_minus_kl_quad': -test_ll - float(quad['kl']),
        'minus_test_ll_minus_kl_mc': -test_ll - float(mc['kl']),
        'entropy_quadrature': float(quad['entropy']),
        'model_mass_on_grid': float(jnp.sum(jnp.exp(log_q_grid)) * volume),
    })
  return {'records': records, 'em_histories': em_histories,
          'densities': densities, 'grid': (np.asarray(points), grid_info),
          'train': np.asarray(x_train), 'true': true}


def run(settings: Settings) -> list[dict[str, Any]]:
  """Runs every dimension; returns the per-dimension outputs of `run_dim`."""
  return [run_dim(d, settings) for d in settings.dims]


def plot(outputs: list[dict[str, Any]], out_dir: str) -> list[str]:
  """Density plots over the data, EM curves, and the H + KL decomposition."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  paths = []
  for out in outputs:
    dim = out['records'][0]['dim']
    points, (lo, hi, num) = out['grid']
    names = [n for n in out['densities'] if 'population' not in n]
    if dim == 1:
      fig, ax = plt.subplots(figsize=(8, 4.5))
      ax.hist(out['train'][:, 0], bins=60, density=True, color='0.85',
              label='training data')
      for name in names:
        style = dict(lw=2.5, color='k', ls='--') if name.startswith(
            'true') else dict(lw=1.3)
        ax.plot(points[:, 0], np.exp(out['densities'][name]), label=name,
                **style)
      ax.set_xlabel('x')
      ax.set_ylabel('density')
      ax.legend(fontsize=8)
      ax.set_title('1-D: fitted densities over the training data')
    else:
      cols = 3
      rows = -(-len(names) // cols)
      fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.6 * rows),
                               squeeze=False)
      shape = (num, num)
      xs = points[:, 0].reshape(shape)
      ys = points[:, 1].reshape(shape)
      for ax, name in zip(axes.ravel(), names):
        dens = np.exp(out['densities'][name]).reshape(shape)
        ax.contourf(xs, ys, dens, levels=15, cmap='viridis')
        ax.scatter(out['train'][:, 0], out['train'][:, 1], s=2, c='w',
                   alpha=0.5)
        rec = next(r for r in out['records'] if r['model'] == name)
        ax.set_title(f'{name}\ntest ll {rec["test_ll"]:.3f}, '
                     f'KL {rec["kl_quadrature"]:.3f}', fontsize=8)
      for ax in axes.ravel()[len(names):]:
        ax.axis('off')
      fig.suptitle('2-D: fitted densities (white: training data)')
    paths.append(results.save_figure(
        fig, os.path.join(out_dir, f'densities_{dim}d.png')))

  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  for out in outputs:
    dim = out['records'][0]['dim']
    for k, hist in out['em_histories'].items():
      axes[0].plot(hist, label=f'{dim}-D, K={k}')
  axes[0].set_xlabel('EM iteration')
  axes[0].set_ylabel('mean train log-likelihood')
  axes[0].set_title('EM never decreases the likelihood')
  axes[0].legend(fontsize=8)
  labels, ent, kls = [], [], []
  for out in outputs:
    for r in out['records']:
      labels.append(f'{r["dim"]}-D {r["model"]}')
      ent.append(r['entropy_quadrature'])
      kls.append(r['kl_quadrature'])
  y = np.arange(len(labels))
  axes[1].barh(y, ent, color='0.7', label='H(p_data) (same for all models)')
  axes[1].barh(y, kls, left=ent, color='tab:red',
               label='KL(p_data ‖ p_model)')
  axes[1].set_yticks(y)
  axes[1].set_yticklabels(labels, fontsize=7)
  axes[1].set_xlabel('-E_data[log p_model] (nats) = H + KL')
  axes[1].legend(fontsize=8)
  axes[1].set_title('Held-out NLL = data entropy + KL')
  paths.append(results.save_figure(fig, os.path.join(out_dir,
                                                     'mle_is_min_kl.png')))
  return paths


_TABLE_COLUMNS = ('dim', 'model', 'num_params', 'train_ll', 'test_ll',
                  'kl_quadrature', 'kl_mc', 'minus_test_ll_minus_kl_quad',
                  'minus_test_ll_minus_kl_mc', 'model_mass_on_grid')


def main(argv):
  del argv
  out_dir = cli.output_dir('mixture_of_gaussians')
  results.write_config(out_dir, FLAGS, FLAGS.seed)
  settings = Settings(
      dims=tuple(int(d) for d in _DIMS.value),
      train_points=_TRAIN_POINTS.value, test_points=_TEST_POINTS.value,
      em_components=tuple(int(k) for k in _EM_COMPONENTS.value),
      em_iters=_EM_ITERS.value, vae_steps=_VAE_STEPS.value,
      vae_hidden=_VAE_HIDDEN.value, iwae_samples=_IWAE_SAMPLES.value,
      grid_iwae_samples=_GRID_IWAE_SAMPLES.value,
      z_grid_points=_Z_GRID_POINTS.value,
      grid_points=_GRID_POINTS.value, seed=FLAGS.seed)
  outputs = run(settings)
  records = [r for out in outputs for r in out['records']]
  plot(outputs, out_dir)
  results.write_results(out_dir, records)
  print(results.format_table(records, _TABLE_COLUMNS))
  for out in outputs:
    rs = out['records']
    spread = np.ptp([r['minus_test_ll_minus_kl_quad'] for r in rs])
    print(f'{rs[0]["dim"]}-D: H(p_data) = {rs[0]["entropy_quadrature"]:.4f} '
          f'nats; -test_ll - KL_quad ranges over {spread:.2e} across models '
          '(Monte Carlo error of the held-out mean).')
  print(f'Outputs in {out_dir}')


if __name__ == '__main__':
  app.run(main)
