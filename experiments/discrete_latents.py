"""Bernoulli-latent VAE: estimators' bounds vs steps and time, variances.

A sigmoid belief net (`vae.models.sigmoid_belief_net`: linear maps, or MLPs
with `--hidden_sizes`) on binary images (default: the first 2,000 of
binarized MNIST; `--dataset=synthetic` needs no data), trained from one initialization by each
discrete-latent estimator: training ELBO, held-out ELBO and IWAE_K vs steps
and wall/CPU time (wall_time_curves.json/.csv; results.json is
deterministic); each encoder gradient's variance and bias at the
initialization and after training with the first estimator
(`vae.analysis.discrete_latents`). docs/discrete_latents.md.
"""

import jax
import jax.numpy as jnp
import numpy as np

from experiments import vae_gradients
from experiments.common import distributed
from experiments.common import outputs
from vae import comparison
from vae import config as cfg
from vae import data as data_lib
from vae import evaluate
from vae import moments
from vae import optim
from vae import train
from vae.analysis import discrete_latents
from vae.models import image_vae
from vae.models import sigmoid_belief_net as sbn

MAX = 10**5

# Old flag names, refused naming the new one (one name per concept across
# experiments: the names of train_vae, vae_gradients and the fits).
RENAMED = {'latents': 'latent_dim', 'hidden': 'hidden_sizes',
           'train_steps': 'fit_steps', 'batch': 'batch_size',
           'variance_keys': 'num_draws', 'variance_batch': 'fixed_batch_size'}


@cfg.settings
class Config:
  data: data_lib.DataConfig = data_lib.DataConfig(  # Binarized once.
      dataset='binarized_mnist', num_train=2000)
  test_examples: int = cfg.setting(500, 'Held-out images.', min=1, max=MAX)
  estimators_to_compare: tuple[str, ...] = cfg.setting(
      ('disarm', 'score_moving_average', 'vimco', 'straight_through',
       'gumbel_softmax'), 'Estimators (the first also gives the trained '
      'point of the variance).', choices=discrete_latents.ESTIMATORS)
  latent_dim: int = cfg.like(image_vae.ModelConfig, 'latent_dim',
                            32)  # Bernoulli latents.
  hidden_sizes: tuple[int, ...] = cfg.like(
      image_vae.ModelConfig, 'hidden_sizes', ())  # (): Dong et al. 2020.
  activation: str = cfg.like(image_vae.ModelConfig, 'activation',
                             'leaky_relu')
  negative_slope: float = cfg.setting(
      0.3, 'leaky_relu slope below 0 (0.3: the DisARM code).', min=0.0,
      max=1.0)
  fit_steps: int = cfg.like(optim.FitConfig, 'fit_steps', 1500)  # Training.
  batch_size: int = cfg.like(train.TrainConfig, 'batch_size', 50, max=MAX)
  optimizer: optim.OptimizerConfig = optim.OptimizerConfig(learning_rate=3e-3)
  evals_per_example: int = cfg.setting(
      2, 'Decoder evaluations per example and step (K samples; DisARM: K/2 '
      'pairs).', min=1, max=10**4)
  vimco_samples: int | None = cfg.setting(
      None, 'K of VIMCO (default: evals_per_example).', min=2, max=10**4)
  temperature: float = cfg.setting(0.5, 'Relaxation temperature.', gt=0.0,
                                   max=100.0)
  baseline_decay: float = cfg.like(train.TrainConfig, 'baseline_decay', 0.99)
  eval_every: int = cfg.setting(150, 'Steps between evaluations.', min=1,
                                max=10**8)
  eval_samples: int = cfg.setting(8, 'Samples of the ELBOs.', min=1, max=MAX)
  eval_k: int = cfg.like(evaluate.EvalConfig, 'eval_k', 100,
                         max=MAX)  # K of the held-out IWAE_K bound.
  train_eval_examples: int = cfg.setting(
      500, 'Training images of the training ELBO.', min=1, max=MAX)
  num_draws: int = cfg.like(moments.Draws, 'num_draws', 200,
                            max=10**6)  # Of the encoder-gradient variance.
  devices: int = cfg.like(moments.MeshConfig, 'devices')  # For the draws.
  fixed_batch_size: int = cfg.like(vae_gradients.Config, 'fixed_batch_size',
                                   32)

  def check(self):
    if self.devices > 1 and self.num_draws % self.devices:
      raise ValueError(f'num_draws: {self.num_draws} is not divisible by '
                       f'devices={self.devices}.')
    if self.fit_steps % self.eval_every:
      raise ValueError(f'fit_steps={self.fit_steps} must be a multiple '
                       f'of eval_every={self.eval_every}.')
    for name in ('fixed_batch_size', 'train_eval_examples'):
      if getattr(self, name) > self.data.train_size:
        raise ValueError(f'{name}={getattr(self, name)} exceeds the '
                         f'{self.data.train_size} training images.')
    discrete_latents.samples_per_estimator(
        self.estimators_to_compare, self.evals_per_example,
        self.vimco_samples)


def plot(out: outputs.Run, records: list[dict], iwae: str) -> None:
  """Training ELBO and held-out IWAE_K vs steps and wall time; variances.

  A 2 x 3 grid (about 1800 x 1050 pixels): the bounds in the first two
  columns (rows: training ELBO, held-out IWAE_K; columns: steps, wall time),
  the encoder-gradient variances in the third. One color per estimator.
  """
  plt = outputs.pyplot()
  curves = [r for r in records if r['kind'] == 'curve']
  names = list(dict.fromkeys(r['estimator'] for r in curves))
  fig, axes = plt.subplot_mosaic([['elbo_step', 'elbo_wall', 'variance'],
                                  ['iwae_step', 'iwae_wall', 'variance']],
                                 figsize=(12, 7), layout='constrained')
  for y, label, row in (('train_elbo', 'training ELBO', 'elbo'),
                        (iwae, f'held-out IWAE_{iwae[9:]}', 'iwae')):
    last = [r[y] for r in curves if r['step'] > 0]
    for x, col, words in (('step', 'step', 'training step'),
                          ('wall_time_s', 'wall', 'wall time (s)')):
      ax = axes[f'{row}_{col}']
      for i, name in enumerate(names):
        rows = [r for r in curves if r['estimator'] == name]
        ax.plot([r[x] for r in rows], [r[y] for r in rows], 'o-', ms=3,
                color=f'C{i}', label=name)
      ax.set(xlabel=words, ylabel=f'{label} (nats)',
             title=f'{label} vs {words.split(" (")[0]}',
             ylim=(np.percentile(last, 5) - 10, max(last) + 5))
      ax.title.set_size(10)
  axes['elbo_step'].legend(fontsize=8, title='estimator', title_fontsize=8)
  var = [r for r in records if r['kind'] == 'variance']
  ats = list(dict.fromkeys(r['at'] for r in var))
  width = 0.8 / len(ats)
  ax = axes['variance']
  for j, at in enumerate(ats):
    ax.bar(np.arange(len(names)) + j * width, [
        r['total_variance'] for r in var if r['at'] == at], width, label=at,
           color=str(0.75 - 0.5 * j / max(len(ats) - 1, 1)))  # Greys.
  ax.set_xticks(np.arange(len(names)) + width * (len(ats) - 1) / 2, names,
                rotation=30, ha='right', fontsize=8)
  ax.set(yscale='log', ylabel='Σ_j Var[ĝ_j] of the encoder gradient (nats²)',
         title='Encoder-gradient variance at fixed parameters')
  ax.title.set_size(10)
  ax.set_ylim(top=ax.get_ylim()[1] * 30)  # Room for the legend.
  ax.legend(fontsize=8, loc='upper right')
  out.save_figure(fig, 'discrete_latents.png')


def run(config: Config, seed: int, out: outputs.Run) -> list[dict]:
  """Curves and final bounds per estimator, then the gradient statistics."""
  # --devices: the draws' devices (None: one device).
  mesh = distributed.data_mesh('discrete_latents', config.devices)
  train_x, test_x = discrete_latents.binary_images(config.data,
                                                   config.test_examples, seed)
  key = jax.random.PRNGKey(seed)
  model = sbn.SBN(config.latent_dim, train_x.shape[1], config.hidden_sizes,
                  config.activation, config.negative_slope)
  params0 = model.init(jax.random.fold_in(key, 0), jnp.mean(train_x, 0))
  optimizer = optim.make_optimizer(config.optimizer, config.fit_steps)
  names = config.estimators_to_compare
  samples = discrete_latents.samples_per_estimator(
      names, config.evals_per_example, config.vimco_samples)
  records, states = discrete_latents.train_estimators(
      model, train_x, test_x, params0, samples, optimizer, key,
      num_steps=config.fit_steps, eval_every=config.eval_every,
      batch_size=config.batch_size, temperature=config.temperature,
      ma_decay=config.baseline_decay, eval_samples=config.eval_samples,
      iwae_samples=config.eval_k,
      train_eval_examples=config.train_eval_examples,
      on_record=lambda r: out.log(', '.join(
          f'{k} {v:.5g}' if isinstance(v, float) else f'{k} {v}'
          for k, v in r.items() if v is not None)))
  first = states[names[0]]
  points = {'initialization': (params0, discrete_latents.initial_baseline(
      model, params0, train_x)),
            f'trained with {names[0]}': (first.params, first.baseline)}
  records += discrete_latents.encoder_variance_records(
      model, points, train_x[:config.fixed_batch_size], samples,
      config.temperature, jax.random.PRNGKey(seed + 7), config.num_draws,
      mesh)
  iwae = f'test_iwae{config.eval_k}'
  plot(out, records, iwae)
  timed = ('wall_time_s', 'cpu_time_s')
  outputs.write_results(out.dir, [r for r in records if r['kind'] != (
      'variance')], 'wall_time_curves')
  out.table([r for r in records if r['kind'] == 'final'], (
      'estimator', 'step', *timed, 'train_elbo', 'test_elbo', iwae))
  variance = [r for r in records if r['kind'] == 'variance']
  out.table(variance, ('at', 'estimator', 'total_variance', 'seconds',
                       'efficiency', 'mean_norm_sq', 'bias_sq',
                       'bias_sq_noise_level', 'mse', 'unbiased_for_elbo',
                       'variance_per_parameter'))
  out.log(f'seconds: one encoder-gradient estimate alone on '
          f'{comparison.device_name()} (compiled, median of repeats); '
          'efficiency = total_variance × seconds, lower is better. Time '
          'depends on the machine, variance does not.\nbest estimator per '
          'sample (least total_variance) and per second (least efficiency):')
  out.table(comparison.ranking(variance, ('at',),
                               variance='total_variance'))
  out.log('the same among the estimators unbiased for ∇ELBO (the biased ones '
          'trade variance for bias_sq):')
  out.table(comparison.ranking([r for r in variance if r[
      'unbiased_for_elbo']], ('at',), variance='total_variance'))
  out.write_json('efficiency.json', variance)
  return [{k: v for k, v in r.items() if k not in timed + (
      comparison.TIMING_FIELDS)} for r in records]
