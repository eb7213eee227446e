"""Bernoulli-latent VAE: estimators' bound vs wall time, gradient variance.

A sigmoid belief net with a Bernoulli encoder (`vae.models.
sigmoid_belief_net`; linear maps unless `--hidden`) on binary images, from
one initialization, trained by each discrete-latent estimator of the
registry with the same decoder evaluations per example: held-out ELBO and
IWAE_100 vs steps and wall time (wall_time_curves.json/.csv; results.json
is deterministic), and each encoder gradient's variance (`vae.moments`)
and bias against a pooled unbiased reference at the initialization and at
the model trained with the first estimator. docs/discrete_latents.md.
"""

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import outputs
from vae import config as cfg
from vae import data as data_lib
from vae import train
from vae import vae_gradients
from vae.estimators import registry
from vae.models import sigmoid_belief_net as sbn


@cfg.settings
class Config:
  data: data_lib.DataConfig = data_lib.DataConfig(num_train=2000)  # Binary.
  test_examples: int = cfg.setting(500, 'Held-out images.', min=1, max=10**5)
  estimators_to_compare: tuple[str, ...] = cfg.setting(
      ('disarm', 'score_moving_average', 'vimco', 'straight_through',
       'gumbel_softmax'), 'Estimators (the first also gives the trained '
      'point of the variance).', choices=sbn.ESTIMATORS)
  latents: int = cfg.setting(32, 'Bernoulli latents.', min=1, max=10**4)
  hidden: tuple[int, ...] = cfg.setting(
      (), 'Hidden sizes of encoder and decoder (empty: linear maps as '
      'Dong et al. 2020).', min=1, max=10**4, empty=True)
  train_steps: int = cfg.setting(1500, 'Training steps.', min=1, max=10**8)
  batch: int = cfg.setting(50, 'Examples per step.', min=1, max=10**5)
  optimizer: train.OptimizerConfig = train.OptimizerConfig(learning_rate=3e-3)
  evals_per_example: int = cfg.setting(
      2, 'Decoder evaluations per example and step (K samples; DisARM: K/2 '
      'pairs).', min=1, max=10**4)
  temperature: float = cfg.setting(0.5, 'Relaxation temperature.', gt=0.0,
                                   max=100.0)
  baseline_decay: float = cfg.setting(0.99, 'Decay of the moving-average '
                                      'baseline.', min=0.0, max=0.9999)
  eval_every: int = cfg.setting(150, 'Steps between held-out evaluations.',
                                min=1, max=10**8)
  eval_samples: int = cfg.setting(8, 'Samples of the held-out ELBO.', min=1,
                                  max=10**5)
  iwae_samples: int = cfg.setting(100, 'K of the final held-out IWAE bound.',
                                  min=1, max=10**5)
  variance_keys: int = cfg.setting(200, 'Gradient draws for the variance.',
                                   min=2, max=10**6)
  variance_batch: int = cfg.setting(32, 'Examples of the fixed batch.', min=1,
                                    max=10**5)

  def check(self):
    if self.train_steps % self.eval_every:
      raise ValueError(f'train_steps={self.train_steps} must be a multiple '
                       f'of eval_every={self.eval_every}.')
    if self.variance_batch > self.data.train_size:
      raise ValueError(f'variance_batch={self.variance_batch} exceeds the '
                       f'{self.data.train_size} training images.')
    for name in self.estimators_to_compare:
      e = registry.lookup(name)
      if self.evals_per_example < e.min_samples * e.evaluations_per_sample:
        raise ValueError(f'estimator {name!r} needs evals_per_example >= '
                         f'{e.min_samples * e.evaluations_per_sample}.')


def plot(out: outputs.Run, records: list[dict]) -> None:
  """Held-out ELBO vs steps and vs wall time; gradient variance bars."""
  plt = outputs.pyplot()
  curves = [r for r in records if r['kind'] == 'curve']
  names = list(dict.fromkeys(r['estimator'] for r in curves))
  fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
  final = [r['test_elbo'] for r in curves if r['step'] > 0]
  for ax, x, title in ((axes[0], 'step', 'training step'),
                       (axes[1], 'wall_time_s', 'training wall time (s)')):
    for i, name in enumerate(names):
      rows = [r for r in curves if r['estimator'] == name]
      ax.plot([r[x] for r in rows], [r['test_elbo'] for r in rows], 'o-',
              ms=3, color=f'C{i}', label=name)
    ax.set(xlabel=title, ylabel='held-out ELBO (nats)',
           title=f'Bound vs {title}', ylim=(np.percentile(final, 5) - 10,
                                            max(final) + 5))
    ax.legend(fontsize=8)
  var = [r for r in records if r['kind'] == 'variance']
  ats = list(dict.fromkeys(r['at'] for r in var))
  width = 0.8 / len(ats)
  for j, at in enumerate(ats):
    rows = [r for r in var if r['at'] == at]
    axes[2].bar(np.arange(len(rows)) + j * width,
                [r['total_variance'] for r in rows], width, label=at)
  axes[2].set_xticks(np.arange(len(names)) + width * (len(ats) - 1) / 2)
  axes[2].set_xticklabels(names, rotation=20, fontsize=8)
  axes[2].set(yscale='log', ylabel='Σ variance of encoder gradient',
              title='Gradient variance (same #decoder evaluations)')
  axes[2].legend(fontsize=8)
  out.save_figure(fig, 'discrete_latents.png')


def run(config: Config, seed: int, out: outputs.Run) -> list[dict]:
  """Curves and final bounds per estimator, then the gradient statistics."""
  paths = config.data.paths
  ds = data_lib.load_dataset(
      config.data.dataset, data_dir=paths.tfds_data_dir, seed=seed,
      manual_dir=paths.manual_dir, cache_dir=paths.data_cache_dir,
      num_train=config.data.num_train, num_validation=1,
      num_test=config.test_examples)
  train_x, test_x = (jnp.asarray(x if ds.binarization == 'fixed' else
                                 data_lib.binarize(0, x))
                     for x in (ds.train, ds.test))
  key = jax.random.PRNGKey(seed)
  params0 = sbn.init(jax.random.fold_in(key, 0), train_x.shape[1],
                     config.latents, config.hidden,
                     data_mean=jnp.mean(train_x, 0))
  optimizer = train.make_optimizer(config.optimizer, config.train_steps)
  records, states = [], {}
  for name in config.estimators_to_compare:
    curve, states[name] = sbn.train_and_evaluate(
        train_x, test_x, params0, name, optimizer, key,
        num_steps=config.train_steps, eval_every=config.eval_every,
        num_samples=config.evals_per_example, batch_size=config.batch,
        temperature=config.temperature, ma_decay=config.baseline_decay,
        eval_samples=config.eval_samples, iwae_samples=config.iwae_samples)
    records += curve
  first = config.estimators_to_compare[0]
  points = {'initialization': (params0, sbn.initial_baseline(params0,
                                                             train_x)),
            f'trained with {first}': (states[first].params,
                                      states[first].baseline)}
  records += vae_gradients.bernoulli_encoder_records(
      points, train_x[:config.variance_batch], config.estimators_to_compare,
      config.evals_per_example, config.temperature,
      jax.random.PRNGKey(seed + 7), config.variance_keys)
  plot(out, records)
  outputs.write_results(out.dir, [r for r in records if r['kind'] != (
      'variance')], 'wall_time_curves')
  out.table([r for r in records if r['kind'] == 'final'], (
      'estimator', 'step', 'wall_time_s', 'test_elbo',
      f'test_iwae{config.iwae_samples}'))
  out.table([r for r in records if r['kind'] == 'variance'])
  return [{k: v for k, v in r.items() if k != 'wall_time_s'}
          for r in records]
