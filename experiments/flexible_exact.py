"""Exact check of every flexible family: 2-D latents, log p(x) by quadrature.

For each family of `vae.models.flexible_vae` (--checked_families: the
diagonal, full-covariance and IAF posteriors, the MoG and Vamp priors, the
autoregressive decoder, and IAF + VampPrior) a small model with a 2-D
latent space is trained (`vae.train`, --objective with --estimator) on
--dataset (synthetic binary images by default; binarized_mnist where its
files are); then, on the first --num_eval test images, log p(x) is computed
by quadrature on a grid over [-a, a]² with the prior's density computed
independently of the bounds' code (`vae.analysis.flexible_exact`), and
compared with the importance-sampling engine's estimates from --eval_k
samples of the family's own q (`vae.importance`): the mean of log p̂ over
the images must agree with the mean exact value within its standard error
(two-sided; the SE the larger of the delta-method one and the images'
spread) and each image's ELBO must lie below its exact value (one-sided),
through `vae.stats.mark_disagreements`. A row also disagrees when its
quadrature error (the grid sum at spacing h vs 2h, plus the mass on the
summed rectangle's outer band) is not below a tenth of every image's
sampling SE. One row per family; the run ends with `k of n rows disagree
with exact values` (--strict: exit 1 on a disagreement). docs/flexible.md.

  python launch.py --experiment=flexible_exact               # ~2 min on CPU
  python launch.py --experiment=flexible_exact --dataset=binarized_mnist \\
      --tfds_data_dir=/work/shared/data/tensorflow_datasets
"""

import os
import time

import jax
import numpy as np

from experiments.common import outputs
from vae import config as cfg
from vae import data as data_lib
from vae import evaluate as eval_lib
from vae import importance
from vae import optim
from vae import stats
from vae import train
from vae.analysis import flexible_exact as fe
from vae.models import flexible_vae
from vae.models import image_vae

COLUMNS = ('family', 'log_px_exact', 'log_px_is', 'log_px_is_se', 'is_z',
           'is_z_max_abs', 'elbo', 'elbo_se', 'elbo_z_max', 'gap',
           'quadrature_error', 'edge_mass', 'train_s', 'check_s',
           'disagrees')


@cfg.settings
class Config:
  """The families, their small models and training; the check's sizes."""
  data: data_lib.DataConfig = data_lib.DataConfig(num_train=1000)
  checked_families: tuple[str, ...] = cfg.setting(
      fe.NAMES, 'Families checked (posterior/prior/decoder; iaf_vamp: IAF q '
      'with the VampPrior; iaf_vamp_base: with the VampPrior over the IAF\'s '
      'base Gaussian).', choices=fe.NAMES)
  hidden_sizes: tuple[int, ...] = cfg.like(image_vae.ModelConfig,
                                           'hidden_sizes', (64,))
  num_components: int = cfg.like(flexible_vae.FamilyConfig,
                                 'num_components', 5)
  flow_steps: int = cfg.like(flexible_vae.FamilyConfig, 'flow_steps', 2)
  flow_hidden: int = cfg.like(flexible_vae.FamilyConfig, 'flow_hidden', 16)
  decoder_hidden_sizes: tuple[int, ...] = cfg.like(
      flexible_vae.FamilyConfig, 'decoder_hidden_sizes', (16,))
  optimizer: optim.OptimizerConfig = optim.OptimizerConfig(learning_rate=1e-3)
  # IWAE_10 with DReG: an encoder wide enough to be a good IS proposal (the
  # weights' tails light enough that the delta-method SEs hold).
  objective: str = cfg.like(train.TrainConfig, 'objective', 'iwae',
                            choices=('elbo_mc_kl', 'iwae'))
  estimator: str = cfg.like(train.TrainConfig, 'estimator', 'dreg',
                            choices=flexible_vae.FLEXIBLE_ESTIMATORS)
  num_samples: int = cfg.like(train.TrainConfig, 'num_samples', 10)
  batch_size: int = cfg.like(train.TrainConfig, 'batch_size', 50)
  epochs: int = cfg.like(train.TrainConfig, 'epochs', 10)
  num_eval: int | None = cfg.like(eval_lib.EvalConfig, 'num_eval', 20)
  eval_k: int = cfg.like(eval_lib.EvalConfig, 'eval_k', 4000)
  eval_chunk_size: int = cfg.like(eval_lib.EvalConfig, 'eval_chunk_size',
                                  100)
  quadrature_half_width: float = cfg.setting(
      8.0, 'Half-width a of the quadrature box [-a, a]² over z.', gt=0.0,
      max=1000.0)
  quadrature_points: int = cfg.setting(
      241, 'Quadrature grid points per axis (odd: the error check sums '
      'every other point).', min=3, max=4001)

  def check(self):
    """Odd grid; K a multiple of the chunk; batch ≤ training images; each
    family trainable with the objective and estimator."""
    if self.quadrature_points % 2 == 0:
      raise ValueError(f'quadrature_points: {self.quadrature_points} must be '
                       'odd (the error check sums every other point).')
    chunk = min(self.eval_chunk_size, self.eval_k)
    if self.eval_k % chunk:
      raise ValueError(f'eval_k: {self.eval_k} must be a multiple of '
                       f'eval_chunk_size {chunk}.')
    if self.batch_size > self.data.train_size:
      raise ValueError(f'batch_size: {self.batch_size} > the '
                       f'{self.data.train_size} training images.')
    if self.data.dataset not in ('synthetic', 'binarized_mnist'):
      raise ValueError(f'dataset: {self.data.dataset} is binarized '
                       'dynamically; use synthetic or binarized_mnist.')
    train.TrainConfig(objective=self.objective, estimator=self.estimator,
                      num_samples=self.num_samples)
    for name in self.checked_families:
      posterior, prior, decoder = fe.FAMILIES[name]
      flexible_vae.check_training(flexible_vae.FamilyConfig(
          posterior=posterior, prior=prior, decoder=decoder),
                                  self.objective, self.estimator)


def model_of(config: Config, name: str, data_dim: int):
  """The family's 2-D-latent model at the configured sizes."""
  return fe.family_model(name, data_dim, config.hidden_sizes,
                         config.num_components, config.flow_steps,
                         config.flow_hidden, config.decoder_hidden_sizes)


def check_family(config: Config, name: str, dataset: data_lib.Dataset,
                 images: np.ndarray, seed: int, out: outputs.Run) -> dict:
  """Trains family `name` (checkpoints in the run folder: a rerun resumes),
  then its row of `fe.check_row` with the timings."""
  model = model_of(config, name, dataset.train.shape[1])
  training = train.TrainConfig(
      objective=config.objective, estimator=config.estimator,
      num_samples=config.num_samples, batch_size=config.batch_size,
      epochs=config.epochs, checkpoint_every=config.epochs, test_every=0)
  start = time.time()
  result = train.train(model, dataset, config.optimizer, training, seed,
                       out.path(os.path.join('checkpoints', name)),
                       log=out.log)
  params = result.state.params
  train_s = time.time() - start
  start = time.time()
  quad = fe.quadrature(model, params, images, config.quadrature_half_width,
                       config.quadrature_points)
  quad_s = time.time() - start
  key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), 3),
                           fe.NAMES.index(name))
  estimates = importance.importance_sampling(
      model, params, images, key, num_samples=config.eval_k,
      batch_size=len(images), chunk_size=config.eval_chunk_size)
  posterior, prior, decoder = fe.FAMILIES[name]
  train_bound = (result.history[-1]['train_bound'] if result.history
                 else None)  # None: resumed from a finished checkpoint.
  return {'family': name, 'posterior': posterior, 'prior': prior,
          'decoder': decoder, 'dataset': dataset.name,
          'eval_k': config.eval_k, 'final_train_bound': train_bound,
          **fe.check_row(quad, estimates), 'spacing': quad['spacing'],
          'half_width': quad['half_width'], 'grid_points': quad['grid_points'], 'train_s': train_s,
          'quadrature_s': quad_s, 'check_s': time.time() - start}


def run(config: Config, seed: int, out: outputs.Run) -> list[dict]:
  """Trains and checks each family; one row each, marked and tabulated."""
  dataset = data_lib.load(config.data, seed)
  images = eval_lib.test_images(dataset)[:config.num_eval]
  rows = []
  for name in config.checked_families:
    out.log(f'flexible_exact: {name}: training {config.epochs} epochs, then '
            f'quadrature on {config.quadrature_points}² points and IS with '
            f'K = {config.eval_k} on {len(images)} test images')
    rows.append(check_family(config, name, dataset, images, seed, out))
  rows = stats.mark_disagreements(rows)  # The run's only checks.
  out.log(f'\n== {dataset.name}: log p(x) by quadrature vs IS (K = '
          f'{config.eval_k}) and the ELBO, means over {len(images)} test '
          'images (is_z: of the mean, checked two-sided; elbo_z_max: the '
          'largest per-image ELBO z, each checked one-sided; is_z_max_abs: '
          'per image, not checked)')
  out.table(rows, COLUMNS)
  return rows
