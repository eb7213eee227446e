"""Missing data: MIWAE training; imputation by SIR, pseudo-Gibbs and MWG.

Two parts (`vae.missing`; docs/missing_data.md).

1. Exact checks on the linear-Gaussian model (pPCA, WᵀW diagonal, so that
   an encoder can be the exact posterior): for each mask, N independent
   draws of each method match p(x_miss|x_obs) = N(μ, Σ) in closed form
   (mean and covariance z-scores): SIR (proposal twice as wide as the
   posterior) and Metropolis-within-Gibbs (proposal 1.5 times as wide) are
   asymptotically exact, and so is MWG with the fixed proposal q(z|x̃)
   (mwg_masked, scale 3, 200 steps); pseudo-Gibbs is exact with the exact posterior as
   encoder, and with the wide one matches its own stationary law (a
   Lyapunov equation), which is not p(x_miss|x_obs) (its distance from it is
   reported, not checked). SIR's log p̂(x_miss|x_obs) is checked against
   log N(x_miss; μ, Σ).
2. Images: a model trained on complete data (a train_vae run folder,
   --complete_run_dir, or trained here with IWAE_k) and one trained with
   MIWAE_k on masked images (--train_mask, a fixed mask per image), each
   imputing the test images under every mask by every method: the held-out
   conditional log-likelihood log p̂(x_miss|x_obs), the pixel accuracy of the
   single imputation (the imputation mean rounded), the accuracy of single
   draws, ESS and MWG's acceptance; completions_<model>_<mask>.png.

  python launch.py --experiment=missing_data                 # ~2 min on CPU
  python launch.py --experiment=missing_data --dataset=binarized_mnist \\
      --complete_run_dir=/tmp/base_runs/train_vae_mnist --epochs=30
"""

import dataclasses
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments import evaluate_vae
from experiments import linear_gaussian as lg_experiment
from experiments.common import outputs
from experiments.common import pictures
from vae import config as cfg
from vae import data as data_lib
from vae import evaluate as eval_lib
from vae import missing
from vae import optim
from vae import stats
from vae import train
from vae.models import image_vae
from vae.problems import linear_gaussian as lg

FILLS = ('zero', 'pixel_mean')
# Proposal widths (multiples of the exact posterior's sd) of the exact checks.
SIR_SCALE, WIDE_SCALE, MASKED_SCALE = 2.0, 1.5, 3.0


@cfg.settings
class Config:
  """The exact checks, the models, and the imputation settings."""
  ppca_data_dim: int = cfg.like(lg_experiment.Config, 'ppca_data_dim', 6)
  ppca_latent_dim: int = cfg.like(lg_experiment.Config, 'ppca_latent_dim', 2)
  noise_scale: float = cfg.like(lg_experiment.Config, 'noise_scale', 0.5)
  exact_draws: int = cfg.setting(
      2000, 'Independent draws per method in the exact checks.', min=10,
      max=10**6)
  images: bool = cfg.setting(True, 'Run the image part (2).')
  data: data_lib.DataConfig = data_lib.DataConfig()
  complete_run_dir: str | None = cfg.setting(
      None, 'A train_vae run folder: its model is the complete-data model '
      '(and its architecture and data those of the MIWAE model); default: '
      'train one here with IWAE_k.', text=True)
  model: image_vae.ModelConfig = image_vae.ModelConfig()
  optimizer: optim.OptimizerConfig = optim.OptimizerConfig()
  num_samples: int = cfg.like(train.TrainConfig, 'num_samples', 5)
  batch_size: int = cfg.like(train.TrainConfig, 'batch_size', 100)
  epochs: int = cfg.like(train.TrainConfig, 'epochs', 10)
  train_mask: str = cfg.setting('random_50', 'Missing pattern of the MIWAE '
                                'training images (fixed per image).',
                                choices=missing.MASKS)
  mask_rate: float = cfg.setting(0.3, 'Missing probability of the mcar '
                                 'mask.', gt=0.0, lt=1.0)
  fill: str = cfg.setting('zero', 'What the encoder sees in missing pixels.',
                          choices=FILLS)
  impute_masks: tuple[str, ...] = cfg.setting(
      missing.MASKS, 'Masks of the test images.', choices=missing.MASKS)
  impute_methods: tuple[str, ...] = cfg.setting(
      missing.METHODS, 'Imputation methods.', choices=missing.METHODS)
  impute_images: int = cfg.setting(100, 'Test images imputed.', min=1,
                                   max=10_000)
  sir_samples: int = cfg.setting(1000, 'K of SIR.', min=1, max=10**5)
  gibbs_chains: int = cfg.setting(10, 'Chains per image (pseudo-Gibbs, '
                                  'MWG).', min=1, max=10_000)
  gibbs_steps: int = cfg.setting(300, 'Steps per chain.', min=2, max=10**5)
  gibbs_burn_in: int = cfg.setting(100, 'Steps left out of the averages.',
                                   min=0, max=10**5)
  figure_images: int = cfg.setting(6, 'Images in each completions figure.',
                                   min=1, max=50)

  def check(self):
    """D even (the pPCA masks view x as a 2 x D/2 image), d < D, burn-in
    shorter than the chains."""
    if self.ppca_data_dim % 2 or self.ppca_latent_dim >= self.ppca_data_dim:
      raise ValueError(f'ppca_data_dim: need an even D > ppca_latent_dim, got '
                       f'{self.ppca_data_dim} and {self.ppca_latent_dim}.')
    if self.gibbs_burn_in >= self.gibbs_steps:
      raise ValueError(f'gibbs_burn_in: {self.gibbs_burn_in} must be < '
                       f'gibbs_steps {self.gibbs_steps}.')


# Part 1: exact checks.


def _moment_row(mask, method, scale, target, draws, mean, cov, extra=None):
  mean_z, cov_z = lg.gaussian_moment_z(draws, mean, cov)
  z = np.concatenate([mean_z, cov_z])
  return {'section': 'exact', 'mask': mask, 'method': method,
          'encoder_scale': scale, 'against': target, 'draws': len(draws),
          'hidden': len(mean), 'max_abs_mean_z': np.max(np.abs(mean_z)),
          'max_abs_cov_z': np.max(np.abs(cov_z)), **(extra or {}),
          stats.CHECKS: [(float(v), 'two-sided') for v in z]}


def exact_checks(config: Config, key) -> list[dict]:
  """Rows of part 1 (one data point x of the pPCA, every mask but mcar,
  which may hide all or none of D coordinates)."""
  dd, d, n = config.ppca_data_dim, config.ppca_latent_dim, config.exact_draws
  _, _, ortho, (xs,) = lg.draw_problem(key, dd, d, config.noise_scale, (1,),
                                       (1,))
  x0 = np.asarray(xs[0])
  model = lg.LinearGaussianVAE(dd, d)
  rows = []
  for i, kind in enumerate(k for k in missing.MASKS if k != 'mcar'):
    mask = np.asarray(missing.make_masks(kind, jax.random.fold_in(key, i), 1,
                                         dd, image_shape=(2, dd // 2)))[0]
    missing.check_mask(mask[None], dd)
    mean, cov = lg.conditional(ortho, x0, mask)
    keys = jax.random.split(jax.random.fold_in(key, 100 + i), 4)
    x1, m1 = jnp.asarray(x0[None]), jnp.asarray(mask[None])
    sir = missing.importance_impute(
        model, lg.vae_params(ortho, SIR_SCALE), jnp.tile(x0, (n, 1)),
        jnp.tile(mask, (n, 1)), keys[0], num_samples=1000,
        fill_value=ortho.bias)
    cond = np.asarray(sir['cond_ll'], np.float64)
    exact_ll = lg.log_conditional(ortho, x0, mask)
    rows.append(_moment_row(kind, 'sir', SIR_SCALE, 'p(x_miss|x_obs)',
                            np.asarray(sir['draws'][:, 0])[:, mask], mean,
                            cov, {'mean_ess': float(np.mean(sir['ess']))}))
    rows.append({'section': 'exact', 'mask': kind, 'method': 'sir',
                 'encoder_scale': SIR_SCALE,
                 'against': 'log p(x_miss|x_obs)', 'draws': n,
                 'hidden': int(mask.sum()), 'cond_ll': cond.mean(),
                 'exact_cond_ll': exact_ll,
                 'cond_ll_se': cond.std() / np.sqrt(n),
                 stats.CHECKS: [((cond.mean() - exact_ll) /
                                 (cond.std() / np.sqrt(n)), 'two-sided')]})
    chains = dict(num_chains=n, num_steps=60, burn_in=30,
                  fill_value=ortho.bias)
    mwg = missing.metropolis_gibbs(model, lg.vae_params(ortho, WIDE_SCALE),
                                   x1, m1, keys[1], **chains)
    rows.append(_moment_row(kind, 'mwg', WIDE_SCALE, 'p(x_miss|x_obs)',
                            np.asarray(mwg['draws'][0])[:, mask], mean, cov,
                            {'acceptance': float(mwg['acceptance'][0])}))
    # A fixed proposal must cover p(z|x̂) for every x̂: wider, and slower.
    mwg = missing.metropolis_gibbs(
        model, lg.vae_params(ortho, MASKED_SCALE), x1, m1,
        jax.random.fold_in(keys[1], 1), proposal='masked',
        **{**chains, 'num_steps': 200, 'burn_in': 100})
    rows.append(_moment_row(kind, 'mwg_masked', MASKED_SCALE,
                            'p(x_miss|x_obs)',
                            np.asarray(mwg['draws'][0])[:, mask], mean, cov,
                            {'acceptance': float(mwg['acceptance'][0])}))
    pg = missing.pseudo_gibbs(model, lg.vae_params(ortho, 1.0), x1, m1,
                              keys[2], **chains)
    rows.append(_moment_row(kind, 'pseudo_gibbs', 1.0, 'p(x_miss|x_obs)',
                            np.asarray(pg['draws'][0])[:, mask], mean, cov))
    wide = lg.vae_params(ortho, WIDE_SCALE)
    pg = missing.pseudo_gibbs(model, wide, x1, m1, keys[3], **chains)
    draws = np.asarray(pg['draws'][0])[:, mask]
    pg_mean, pg_cov = lg.pseudo_gibbs_stationary(wide, x0, mask)
    _, off = lg.gaussian_moment_z(draws, mean, cov)
    rows.append(_moment_row(
        kind, 'pseudo_gibbs', WIDE_SCALE, 'its stationary law', draws,
        pg_mean, pg_cov, {
            'var_ratio_to_exact': float(np.mean(np.diag(pg_cov) /
                                                np.diag(cov))),
            'max_abs_cov_z_vs_exact': float(np.max(np.abs(off)))}))
  return rows


# Part 2: images.


def _load_complete(config: Config, log):
  """(model, params, dataset, description) of --complete_run_dir."""
  assert config.complete_run_dir is not None
  run_dir = os.path.abspath(os.path.expanduser(config.complete_run_dir))
  trained, seed, model, params, step = evaluate_vae.load_run(run_dir, None,
                                                             log)
  paths = {f.name: getattr(config.data.paths, f.name) or
           getattr(trained.data.paths, f.name)
           for f in dataclasses.fields(data_lib.DataPaths)}
  dataset = data_lib.load(dataclasses.replace(
      trained.data, paths=data_lib.DataPaths(**paths)), seed)
  t = trained.training
  return model, params, dataset, trained.model, (
      f'{t.objective} k={t.num_samples}, {t.epochs} epochs (step {step}), '
      f'complete data')


def _accuracy(filled, x, mask):
  """Fraction of hidden pixels where `filled` (rounded) equals x."""
  hit = (np.round(filled) == x) & mask
  return float(hit.sum() / mask.sum())


def impute_images(name: str, model, params, images: np.ndarray,
                  fill_value, config: Config, key, out) -> list[dict]:
  """Rows of model `name` for every mask × method, and its figures."""
  rows = []
  n = len(images)
  x = jnp.asarray(images)
  for i, kind in enumerate(config.impute_masks):
    mask = np.asarray(missing.make_masks(
        kind, jax.random.fold_in(key, i), n, images.shape[1],
        config.mask_rate))
    missing.check_mask(mask, images.shape[1])
    m = jnp.asarray(mask)
    shown = {}
    for method in config.impute_methods:
      mkey = jax.random.fold_in(jax.random.fold_in(key, 100 + i),
                                missing.METHODS.index(method))
      start = time.time()
      if method == 'sir':
        res = missing.importance_impute(
            model, params, x, m, mkey, num_samples=config.sir_samples,
            num_draws=3, fill_value=fill_value)
      else:
        chains = dict(num_chains=config.gibbs_chains,
                      num_steps=config.gibbs_steps,
                      burn_in=config.gibbs_burn_in, fill_value=fill_value)
        if method == 'pseudo_gibbs':
          res = missing.pseudo_gibbs(model, params, x, m, mkey, **chains)
        else:
          res = missing.metropolis_gibbs(
              model, params, x, m, mkey, proposal='masked' if
              method == 'mwg_masked' else 'completed', **chains)
      res = jax.device_get(res)
      wall = time.time() - start
      cond = np.asarray(res['cond_ll'], np.float64)
      draws = np.asarray(res['draws'])
      rows.append({
          'section': 'images', 'model': name, 'mask': kind, 'method': method,
          'images': n, 'hidden_pixels': float(mask.sum(1).mean()),
          'cond_ll': cond.mean(), 'cond_ll_se': cond.std() / np.sqrt(n),
          'cond_ll_per_pixel': float(np.mean(cond / mask.sum(1))),
          'pixel_accuracy': _accuracy(np.asarray(res['mean']), images, mask),
          'draw_accuracy': float(np.mean([
              _accuracy(draws[:, j], images, mask)
              for j in range(draws.shape[1])])),
          'median_ess': float(np.median(res['ess'])),
          'acceptance': (float(np.mean(res['acceptance']))
                         if method != 'sir' else None),
          'wall_s': wall})
      shown[method] = res
    _figure(out, name, kind, images, mask, shown, config.figure_images)
  return rows


def _figure(out, name, kind, images, mask, shown, count):
  """Rows: images; columns: truth, observed (hidden pixels grey), then per
  method its mean and three single completions."""
  k = min(count, len(images))
  columns, labels = [images[:k], np.where(mask[:k], 0.5, images[:k])], [
      'truth', 'observed']
  for method, res in shown.items():
    columns.append(np.asarray(res['mean'])[:k])
    labels.append(f'{method} mean')
    for j in range(min(3, np.asarray(res['draws']).shape[1])):
      columns.append(np.asarray(res['draws'])[:k, j])
      labels.append(f'{method} draw')
  grid = pictures.image_grid(np.stack(columns, 1).reshape(
      -1, images.shape[1]), k, len(columns))
  plt = outputs.pyplot()
  fig, ax = plt.subplots(figsize=(len(columns) * 0.8 + 0.6, k * 0.8 + 0.8))
  ax.imshow(grid, cmap='gray', vmin=0, vmax=1, interpolation='nearest')
  ax.set_title(f'{name} model, mask {kind}', fontsize=8)
  ax.set_xticks([14.5 + 29 * i for i in range(len(labels))])
  ax.set_xticklabels(labels, fontsize=6, rotation=90)
  ax.set_yticks([])
  out.save_figure(fig, f'completions_{name}_{kind}.png')


def image_part(config: Config, seed: int, out) -> list[dict]:
  """Trains (or loads) the two models and imputes the test images."""
  log = out.log
  if config.complete_run_dir is not None:
    complete, complete_params, dataset, arch, how = _load_complete(config,
                                                                   log)
  else:
    dataset = data_lib.load(config.data, seed)
    arch, how = config.model, None
    complete = complete_params = None
  model = image_vae.make(arch)
  train_images = eval_lib.test_images(dataset, 'train')
  pixel_mean = dataset.pixel_mean
  fill_value = 0.0 if config.fill == 'zero' else jnp.asarray(pixel_mean)
  dynamic = dataset.binarization == 'dynamic'
  key = jax.random.PRNGKey(seed)
  rows: list[dict] = []

  def fit(masks: Any, label: str) -> Any:
    history: list[dict] = []
    start = time.time()

    def on_epoch(r: dict) -> None:
      history.append(r)
      log(f'  {label} epoch {r["epoch"]}: bound {r["train_bound"]:.3f} '
          f'({r["epoch_wall_s"]:.1f} s)')

    params = missing.train_miwae(
        model, dataset.train if dynamic else train_images, masks,
        config.optimizer, num_samples=config.num_samples,
        batch_size=config.batch_size, epochs=config.epochs, seed=seed,
        fill_value=fill_value, dynamic_binarization=dynamic,
        on_epoch=on_epoch)
    rows.append({'section': 'training', 'model': label,
                 'final_train_bound': history[-1]['train_bound'],
                 'epochs': config.epochs, 'k': config.num_samples,
                 'train_mask': config.train_mask if masks is not None
                 else None, 'wall_s': time.time() - start})
    return params

  if complete is None:
    log(f'training the complete-data model: IWAE_{config.num_samples}, '
        f'{config.epochs} epochs')
    complete_params = fit(None, 'complete')
    how = f'iwae k={config.num_samples}, {config.epochs} epochs, complete data'
  masks = missing.make_masks(config.train_mask, jax.random.fold_in(key, 1),
                             len(train_images), model.data_dim,
                             config.mask_rate)
  log(f'training the MIWAE model: MIWAE_{config.num_samples}, mask '
      f'{config.train_mask}, {config.epochs} epochs')
  miwae_params = fit(masks, 'miwae')
  test = eval_lib.test_images(dataset)[:config.impute_images]
  for name, params in (('complete', complete_params),
                       ('miwae', miwae_params)):
    log(f'imputing {len(test)} test images with the {name} model')
    rows += [{**r, 'trained': how if name == 'complete' else
              f'miwae k={config.num_samples}, {config.epochs} epochs, mask '
              f'{config.train_mask}'} for r in impute_images(
                  name, model, params, test, fill_value, config,
                  jax.random.fold_in(key, 2), out)]
  return rows


def run(config: Config, seed: int, out: outputs.Run) -> list[dict]:
  """Part 1 (checked rows), then part 2; tables per part."""
  start = time.time()
  rows = exact_checks(config, jax.random.PRNGKey(seed))
  exact_s = time.time() - start
  if config.images:
    rows += image_part(config, seed, out)
  records = outputs.to_jsonable(stats.mark_disagreements(rows))
  out.log('\n== exact checks on the linear-Gaussian model '
          f'({exact_s:.0f} s)')
  out.table([r for r in records if r['section'] == 'exact'],
            ('mask', 'method', 'encoder_scale', 'against', 'hidden',
             'max_abs_mean_z', 'max_abs_cov_z', 'cond_ll', 'exact_cond_ll',
             'acceptance', 'var_ratio_to_exact', 'disagrees'))
  if config.images:
    out.log('\n== training')
    out.table([r for r in records if r['section'] == 'training'])
    out.log('\n== imputation of test images (cond_ll: log p(x_miss|x_obs) '
            'per image, nats)')
    out.table([r for r in records if r['section'] == 'images'],
              ('model', 'mask', 'method', 'hidden_pixels', 'cond_ll',
               'cond_ll_se', 'pixel_accuracy', 'draw_accuracy', 'median_ess',
               'acceptance', 'wall_s'))
  return records
