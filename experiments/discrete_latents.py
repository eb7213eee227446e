"""Bernoulli-latent VAE: estimators' bound vs wall time, gradient variance.

Estimators: REINFORCE + moving-average baseline, RLOO, VIMCO,
straight-through, Gumbel-softmax and DisARM.

Model (`vae.bernoulli_vae`): a one-stochastic-layer sigmoid belief net
p(b) p(x|b) with b ∈ {0,1}^d and a factorized Bernoulli encoder q(b|x),
linear maps by default (`--hidden` for tanh MLPs). Each estimator trains its
own copy from the same initialization with Adam on the ELBO (VIMCO: on the
K-sample bound IWAE_K), with the same number of decoder evaluations per
example (`--evals_per_example`; DisARM uses them as antithetic pairs). We
report the held-out ELBO (and the 100-sample IWAE bound) against steps and
against wall-clock time, and the variance of each estimator's encoder
gradient at two fixed parameter settings (the initialization and the model
trained with the first estimator listed), computed by vmapping over PRNG keys
in one jitted function, together with its distance to a pooled unbiased
reference (the average of the unbiased estimators' means). Published
numbers for the standard setting are in docs/discrete_latents.md.

Default data: the built-in `synthetic` binary images of `vae.data` (no
download); `--dataset=binarized_mnist` uses the real data through TFDS
(`VAE_TFDS_DATA_DIR`). Wall-clock curves go to wall_time_curves.csv (not to
results.json, which is deterministic).
"""

import dataclasses
import os
import time
from typing import Any

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from vae.models import sigmoid_belief_net as sbn
from vae import cli
from vae import results

_DATASET = flags.DEFINE_enum('dataset', 'synthetic',
                             ['synthetic', 'binarized_mnist'],
                             'Binary image dataset.')
_TRAIN_EXAMPLES = flags.DEFINE_integer(
    'train_examples', 2000, 'Training images used (0: the whole split).')
_TEST_EXAMPLES = flags.DEFINE_integer('test_examples', 500,
                                      'Held-out images used for the bounds.')
_ESTIMATORS_TO_COMPARE = flags.DEFINE_list(
    'estimators_to_compare', ['disarm', 'score_moving_average', 'vimco',
                              'straight_through', 'gumbel_softmax'],
    'Estimators (from vae.bernoulli_vae.ESTIMATORS).')
_LATENTS = flags.DEFINE_integer('latents', 32, 'Number of Bernoulli latents.')
_HIDDEN = flags.DEFINE_list('hidden', [],
                            'Hidden layer sizes of encoder and decoder '
                            '(empty: linear, as the "linear" model of '
                            'Dong et al. 2020).')
_TRAIN_STEPS = flags.DEFINE_integer('train_steps', 1500, 'Adam steps.')
_BATCH = flags.DEFINE_integer('batch', 50, 'Examples per step.')
_LR = flags.DEFINE_float('lr', 3e-3, 'Adam step size.')
_EVALS_PER_EXAMPLE = flags.DEFINE_integer(
    'evals_per_example', 2, 'Decoder evaluations per example and step (K for '
    'VIMCO/RLOO/REINFORCE, K/2 pairs for DisARM).')
_TEMPERATURE = flags.DEFINE_float('temperature', 0.5,
                                  'Relaxation temperature (ST, Gumbel).')
_EVAL_EVERY = flags.DEFINE_integer('eval_every', 150,
                                   'Steps between held-out evaluations.')
_VARIANCE_KEYS = flags.DEFINE_integer(
    'variance_keys', 200, 'Independent gradient draws for the variance.')
_VARIANCE_BATCH = flags.DEFINE_integer(
    'variance_batch', 32, 'Examples in the fixed batch of the variance.')
cli.define_common_flags()
FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class Settings:
  """What to run (defaults = the script's defaults)."""
  estimators: tuple[str, ...] = ('disarm', 'score_moving_average', 'vimco',
                                 'straight_through', 'gumbel_softmax')
  latents: int = 32
  hidden: tuple[int, ...] = ()
  train_steps: int = 1500
  batch: int = 50
  lr: float = 3e-3
  evals_per_example: int = 2
  temperature: float = 0.5
  eval_every: int = 150
  eval_samples: int = 8
  iwae_samples: int = 100
  variance_keys: int = 200
  variance_batch: int = 32
  seed: int = 0


def load_data(name: str, train_examples: int, test_examples: int,
              seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train, test) binary images [N, 784] from `vae.data`."""
  from vae import data  # pylint: disable=g-import-not-at-top
  if name == 'synthetic':
    ds = data.load_dataset('synthetic', num_train=train_examples or 2000,
                           num_validation=1, num_test=test_examples,
                           seed=seed)
    return ds.train, ds.test
  train = data.load_split(name, 'train', num_examples=train_examples or None)
  test = data.load_split(name, 'test', num_examples=test_examples)
  return train, test




def train_all(train_x: jax.Array, test_x: jax.Array, settings: Settings
              ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """Trains one model per estimator; returns (curve records, final states)."""
  key = jax.random.PRNGKey(settings.seed)
  params0 = sbn.init(jax.random.fold_in(key, 0), train_x.shape[1],
                    settings.latents, settings.hidden,
                    data_mean=jnp.mean(train_x, 0))
  evaluate = jax.jit(lambda p, k: sbn.mean_bound(sbn.elbo, p, test_x, k,
                                                 settings.eval_samples))
  final_iwae = jax.jit(lambda p, k: sbn.mean_bound(sbn.iwae, p, test_x, k,
                                                  settings.iwae_samples))
  eval_key = jax.random.fold_in(key, 1)
  records, states = [], {}
  for name in settings.estimators:
    init_state, run_steps = sbn.make_trainer(
        train_x, name, settings.evals_per_example, settings.batch,
        settings.lr, settings.temperature)
    state = init_state(params0)
    init_point = (params0, state[2])
    chunk = settings.eval_every
    keys_shape = jax.random.split(key, chunk)
    # Compile first (ahead of time) so that wall time counts training only.
    run = jax.jit(run_steps).lower(state, keys_shape).compile()
    elbo = evaluate(state[0], eval_key)
    records.append({'kind': 'curve', 'estimator': name, 'step': 0,
                    'wall_time_s': 0.0, 'test_elbo': float(elbo),
                    'train_surrogate': None})
    wall, step = 0.0, 0
    step_key = jax.random.fold_in(key, 2)  # Same minibatch/noise seeds.
    while step < settings.train_steps:
      keys = jax.random.split(jax.random.fold_in(step_key, step), chunk)
      start = time.perf_counter()
      state, values = run(state, keys)
      jax.block_until_ready(values)
      wall += time.perf_counter() - start
      step += chunk
      elbo = evaluate(state[0], eval_key)
      records.append({'kind': 'curve', 'estimator': name, 'step': step,
                      'wall_time_s': wall, 'test_elbo': float(elbo),
                      'train_surrogate': float(jnp.mean(values))})
    records.append({'kind': 'final', 'estimator': name, 'step': step,
                    'wall_time_s': wall, 'test_elbo': float(elbo),
                    f'test_iwae{settings.iwae_samples}': float(
                        final_iwae(state[0], eval_key))})
    states[name] = state
  return records, {'init': init_point, 'states': states}


def gradient_variance(train_x: jax.Array, settings: Settings,
                      points: dict[str, Any]) -> list[dict[str, Any]]:
  """Encoder-gradient variance of every estimator at two fixed parameters.

  For each estimator, R = variance_keys independent gradients of the batch
  surrogate on one fixed batch (vmapped over keys in one jitted function).
  total_variance = Σ_j Var[g_j]. The reference gradient is the
  inverse-variance weighted mean of the unbiased estimators' means, and
  bias_sq ≈ ‖mean(g) - reference‖² - tr Σ_g / R - tr Σ_ref / R_ref (the
  Monte Carlo noise of both means subtracted); mse = bias_sq + total_variance
  is the mean squared error of one gradient draw.
  """
  x = train_x[:settings.variance_batch]
  keys = jax.random.split(jax.random.PRNGKey(settings.seed + 7),
                          settings.variance_keys)
  r = settings.variance_keys
  first = settings.estimators[0]
  where = {'initialization': points['init'],
           f'trained with {first}': (points['states'][first][0],
                                     points['states'][first][2])}
  fns = {name: jax.jit(lambda p, b, k, name=name: sbn.encoder_gradients(
      p, x, k, name, settings.evals_per_example, b, settings.temperature))
         for name in settings.estimators}
  records = []
  for label, (params, baseline) in where.items():
    stats = {}
    for name, fn in fns.items():
      g = np.asarray(fn(params, baseline, keys), np.float64)
      stats[name] = (g.mean(0), float(np.sum(g.var(0, ddof=1))))
    unbiased = [n for n in settings.estimators if sbn.unbiased_for_elbo(n)]
    reference, ref_noise = None, 0.0
    if unbiased:
      weights = np.array([r / stats[n][1] for n in unbiased])
      reference = sum(w * stats[n][0] for w, n in zip(weights, unbiased))
      reference = reference / weights.sum()
      ref_noise = 1.0 / weights.sum()  # tr Σ of the weighted mean.
    for name, (mean, total_var) in stats.items():
      bias_sq, noise = None, None
      if reference is not None and name != 'vimco':
        noise = total_var / r + (0.0 if name in unbiased else ref_noise)
        bias_sq = float(np.sum((mean - reference)**2) - noise)
      records.append({
          'kind': 'variance', 'at': label, 'estimator': name,
          'total_variance': total_var,
          'mean_norm_sq': float(np.sum(mean**2)),
          'bias_sq': bias_sq,
          'bias_sq_noise_level': None if bias_sq is None else noise,
          'mse': None if bias_sq is None else bias_sq + total_var,
          'unbiased_for_elbo': sbn.unbiased_for_elbo(name)})
  return records


def run(train_x, test_x, settings: Settings) -> list[dict[str, Any]]:
  """Training curves, then gradient variances; returns all records."""
  train_x, test_x = jnp.asarray(train_x), jnp.asarray(test_x)
  curves, points = train_all(train_x, test_x, settings)
  return curves + gradient_variance(train_x, settings, points)


def plot(records: list[dict[str, Any]], out_dir: str) -> list[str]:
  """Held-out ELBO vs steps and vs wall time; gradient variance bars."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  curves = [r for r in records if r['kind'] == 'curve']
  names = list(dict.fromkeys(r['estimator'] for r in curves))
  fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
  for i, name in enumerate(names):
    rows = [r for r in curves if r['estimator'] == name]
    axes[0].plot([r['step'] for r in rows], [r['test_elbo'] for r in rows],
                 'o-', ms=3, color=f'C{i}', label=name)
    axes[1].plot([r['wall_time_s'] for r in rows],
                 [r['test_elbo'] for r in rows], 'o-', ms=3, color=f'C{i}',
                 label=name)
  final = [r['test_elbo'] for r in curves if r['step'] > 0]
  for ax, xlabel in ((axes[0], 'training step'),
                     (axes[1], 'wall-clock training time (s)')):
    ax.set_xlabel(xlabel)
    ax.set_ylabel('held-out ELBO (nats)')
    if final:
      ax.set_ylim(np.percentile(final, 5) - 10, max(final) + 5)
    ax.legend(fontsize=8)
  axes[0].set_title('Bound vs steps')
  axes[1].set_title('Bound vs wall time')
  var = [r for r in records if r['kind'] == 'variance']
  ats = list(dict.fromkeys(r['at'] for r in var))
  width = 0.8 / max(1, len(ats))
  for j, at in enumerate(ats):
    rows = [r for r in var if r['at'] == at]
    axes[2].bar(np.arange(len(rows)) + j * width,
                [r['total_variance'] for r in rows], width, label=at)
  axes[2].set_xticks(np.arange(len(names)) + width * (len(ats) - 1) / 2)
  axes[2].set_xticklabels(names, rotation=20, fontsize=8)
  axes[2].set_yscale('log')
  axes[2].set_ylabel('Σ variance of encoder gradient')
  axes[2].set_title('Gradient variance (same #decoder evaluations)')
  axes[2].legend(fontsize=8)
  return [results.save_figure(fig, os.path.join(out_dir,
                                                'discrete_latents.png'))]


def main(argv):
  del argv
  out_dir = cli.output_dir('discrete_latents')
  results.write_config(out_dir, FLAGS, FLAGS.seed)
  settings = Settings(
      estimators=tuple(_ESTIMATORS_TO_COMPARE.value), latents=_LATENTS.value,
      hidden=tuple(int(h) for h in _HIDDEN.value),
      train_steps=_TRAIN_STEPS.value, batch=_BATCH.value, lr=_LR.value,
      evals_per_example=_EVALS_PER_EXAMPLE.value,
      temperature=_TEMPERATURE.value, eval_every=_EVAL_EVERY.value,
      variance_keys=_VARIANCE_KEYS.value, variance_batch=_VARIANCE_BATCH.value,
      seed=FLAGS.seed)
  for name in settings.estimators:
    if name not in sbn.ESTIMATORS:
      raise ValueError(f'unknown estimator {name!r}; choose from '
                       f'{", ".join(sbn.ESTIMATORS)}.')
  train_x, test_x = load_data(_DATASET.value, _TRAIN_EXAMPLES.value,
                              _TEST_EXAMPLES.value, FLAGS.seed)
  records = run(train_x, test_x, settings)
  plot(records, out_dir)
  curves = [r for r in records if r['kind'] in ('curve', 'final')]
  results.write_csv(os.path.join(out_dir, 'wall_time_curves.csv'), curves)
  deterministic = [{k: v for k, v in r.items() if k != 'wall_time_s'}
                   for r in records]
  results.write_results(out_dir, deterministic)
  final = [r for r in records if r['kind'] == 'final']
  print(results.format_table(final, (
      'estimator', 'step', 'wall_time_s', 'test_elbo',
      f'test_iwae{settings.iwae_samples}')))
  print()
  print(results.format_table(
      [r for r in records if r['kind'] == 'variance'],
      ('at', 'estimator', 'total_variance', 'mean_norm_sq', 'bias_sq',
       'bias_sq_noise_level', 'mse', 'unbiased_for_elbo')))
  print(f'\nOutputs in {out_dir}')


if __name__ == '__main__':
  app.run(main)
