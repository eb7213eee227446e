"""Amortization vs approximation gap (Cremer et al. 2018), exact log p(x).

On the linear-Gaussian model.

For a fixed model and an encoder q_φ(z|x) trained to maximize the ELBO,

    log p(x) - ELBO(q_φ) = [log p(x) - ELBO(q*)] + [ELBO(q*) - ELBO(q_φ)]
                         =  approximation gap    +  amortization gap,

where q* is the best diagonal Gaussian for that x (closed form here,
`vae.amortization.optimal_diagonal_q`) and log p(x) is exact. Encoders: a
linear one (its family contains q*, so its gap can go to zero) and a tanh
MLP; both are trained on a small training set by full-batch Adam on the
closed-form ELBO and evaluated on training and held-out data as training
proceeds. Finally the model itself is learned jointly with a linear encoder
(ELBO, pathwise): the decoder adapts so that the posterior becomes nearly
factorized and the approximation gap of the learned model nearly vanishes.
(No MNIST path here: it needs a trained MNIST VAE, which this repository does
not provide yet.)
"""

import dataclasses
import functools
import os
from typing import Any

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from vae.problems import amortization as am
from vae import cli
from vae.problems import linear_gaussian as lg
from vae import results

_MODEL_DATA_DIM = flags.DEFINE_integer('model_data_dim', 10,
                                       'Observed dimension D.')
_MODEL_LATENT_DIM = flags.DEFINE_integer('model_latent_dim', 4,
                                         'Latent dimension d.')
_MODEL_NOISE = flags.DEFINE_float('model_noise', 0.5, 'Observation noise σ.')
_ENCODER_TRAIN_SIZE = flags.DEFINE_integer(
    'encoder_train_size', 100, 'Training points for the encoders.')
_ENCODER_TEST_SIZE = flags.DEFINE_integer('encoder_test_size', 2000,
                                          'Held-out points.')
_ENCODERS = flags.DEFINE_list('encoders', ['linear', 'mlp'],
                              'Encoder kinds (linear, mlp).')
_MLP_HIDDEN = flags.DEFINE_integer('mlp_hidden', 64,
                                   'Hidden units of the MLP encoder.')
_ENCODER_STEPS = flags.DEFINE_integer('encoder_steps', 3000,
                                      'Adam steps for each encoder.')
_ENCODER_LEARNING_RATE = flags.DEFINE_float('encoder_learning_rate', 3e-3,
                                            'Adam step size (encoders).')
_JOINT_STEPS = flags.DEFINE_integer(
    'joint_steps', 3000, 'Adam steps when learning model + linear encoder '
    'jointly (0: skip).')
cli.define_common_flags()
FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class Settings:
  """What to run (defaults = the script's defaults)."""
  data_dim: int = 10
  latent_dim: int = 4
  noise: float = 0.5
  train_size: int = 100
  test_size: int = 2000
  encoders: tuple[str, ...] = ('linear', 'mlp')
  mlp_hidden: int = 64
  encoder_steps: int = 3000
  encoder_learning_rate: float = 3e-3
  joint_steps: int = 3000
  seed: int = 0


_train_encoder = jax.jit(am.train_encoder, static_argnums=(3, 4))
_fit_by_elbo = jax.jit(am.fit_by_elbo, static_argnums=(1, 2, 4, 5, 7))


def _gap_records(model, encoder, x_train, x_test, name, step):
  """Gap summaries on both splits, from one `gap_terms` call."""
  terms = am.gap_terms(model, jnp.concatenate([x_train, x_test]), encoder)
  n = x_train.shape[0]
  records = []
  for split, sl in (('train', slice(0, n)), ('held-out', slice(n, None))):
    g = am.summarize_gaps({k: v[sl] for k, v in terms.items()})
    records.append({'kind': 'final', 'encoder': name, 'split': split,
                    'steps': step,
                    **{k: float(v) for k, v in g.items()}})
  return records


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _setup(key, data_dim, latent_dim, noise, train_size, test_size):
  """Model (W, b ~ N(0, 1)) and data sets from one normal draw."""
  dtype = jnp.result_type(float)
  d, dd = latent_dim, data_dim
  sizes = [dd * d, dd, (train_size + test_size) * (d + dd)]
  parts = jnp.split(jax.random.normal(key, (sum(sizes),), dtype),
                    np.cumsum(sizes)[:-1])
  model = lg.LinearGaussianModel(parts[0].reshape(dd, d), parts[1],
                                 jnp.log(jnp.asarray(noise, dtype)))
  zeta = parts[2].reshape(-1, d + dd)
  x = zeta[:, :d] @ model.weight.T + model.bias + noise * zeta[:, d:]
  return model, x[:train_size], x[train_size:]


def run(settings: Settings) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """Trains each encoder; returns (records, per-step gap curves)."""
  key = jax.random.PRNGKey(settings.seed)
  k_model, k_enc, k_joint = jax.random.split(key, 3)
  dtype = jnp.result_type(float)
  model, x_train, x_test = _setup(k_model, settings.data_dim,
                                  settings.latent_dim, settings.noise,
                                  settings.train_size, settings.test_size)
  x_all = jnp.concatenate([x_train, x_test])
  opt_all = am.batch_elbo(model, x_all, am.optimal_diagonal_q(model, x_all))
  n = settings.train_size
  opt_elbo = {'train': float(jnp.mean(opt_all[:n])),
              'held-out': float(jnp.mean(opt_all[n:]))}
  records, curves = [], {}
  for i, kind in enumerate(settings.encoders):
    init = am.init_encoder(jax.random.fold_in(k_enc, i), kind,
                           settings.data_dim, settings.latent_dim,
                           settings.mlp_hidden)
    init = jax.tree_util.tree_map(lambda a: a.astype(dtype), init)
    params, _, (train_curve, test_curve) = _train_encoder(
        model, x_train, init, settings.encoder_steps,
        settings.encoder_learning_rate, (x_train, x_test))
    curves[kind] = {'train': opt_elbo['train'] - np.asarray(train_curve),
                    'held-out': opt_elbo['held-out'] - np.asarray(test_curve)}
    records += _gap_records(model, params, x_train, x_test, kind,
                            settings.encoder_steps)
    for step in _checkpoints(settings.encoder_steps):
      records.append({
          'kind': 'curve', 'encoder': kind, 'steps': step,
          'amortization_gap_train': float(curves[kind]['train'][step - 1]),
          'amortization_gap_held_out': float(
              curves[kind]['held-out'][step - 1])})

  if settings.joint_steps > 0:
    learned, encoder, _ = _fit_by_elbo(
        x_train, settings.latent_dim, 'pathwise', k_joint, 'amortized',
        settings.joint_steps, 1e-2, 2)
    records += _gap_records(learned, encoder, x_train, x_test,
                            'linear + model learned by ELBO',
                            settings.joint_steps)
  return records, curves


def _checkpoints(num_steps: int) -> list[int]:
  steps = sorted({int(s) for s in np.unique(np.geomspace(
      1, num_steps, 12).round())} | {num_steps})
  return [s for s in steps if 1 <= s <= num_steps]


def plot(records: list[dict[str, Any]], curves: dict[str, Any],
         out_dir: str) -> list[str]:
  """Gap curves during encoder training, and the final decomposition."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
  final = [r for r in records if r['kind'] == 'final']
  approx = final[0]['approximation_gap']
  for i, (kind, c) in enumerate(curves.items()):
    steps = np.arange(1, len(c['train']) + 1)
    axes[0].plot(steps, c['train'], color=f'C{i}', label=f'{kind}: train')
    axes[0].plot(steps, c['held-out'], color=f'C{i}', ls='--',
                 label=f'{kind}: held-out')
  axes[0].axhline(approx, color='k', ls=':',
                  label=f'approximation gap ({approx:.3f})')
  axes[0].set_xscale('log')
  axes[0].set_yscale('log')
  axes[0].set_xlabel('encoder Adam step')
  axes[0].set_ylabel('amortization gap ELBO(q*) - ELBO(q_φ) (nats)')
  axes[0].set_title('Amortization gap during encoder training')
  axes[0].legend(fontsize=8)

  labels = [f'{r["encoder"]}\n({r["split"]})' for r in final]
  y = np.arange(len(final))
  a = [r['approximation_gap'] for r in final]
  b = [r['amortization_gap'] for r in final]
  axes[1].barh(y, a, color='tab:blue', label='approximation gap')
  axes[1].barh(y, b, left=a, color='tab:orange', label='amortization gap')
  axes[1].set_yticks(y)
  axes[1].set_yticklabels(labels, fontsize=7)
  axes[1].invert_yaxis()
  axes[1].set_xlabel('log p(x) - ELBO(q_φ) (nats, mean over points)')
  axes[1].set_title('Inference gap = approximation + amortization')
  axes[1].legend(fontsize=8)
  return [results.save_figure(fig, os.path.join(out_dir,
                                                'amortization_gap.png'))]


def main(argv):
  del argv
  with jax.enable_x64(True):  # Scoped: no global config change.
    _main()


def _main():
  out_dir = cli.output_dir('amortization_gap')
  results.write_config(out_dir, FLAGS, FLAGS.seed)
  settings = Settings(
      data_dim=_MODEL_DATA_DIM.value, latent_dim=_MODEL_LATENT_DIM.value,
      noise=_MODEL_NOISE.value, train_size=_ENCODER_TRAIN_SIZE.value,
      test_size=_ENCODER_TEST_SIZE.value, encoders=tuple(_ENCODERS.value),
      mlp_hidden=_MLP_HIDDEN.value, encoder_steps=_ENCODER_STEPS.value,
      encoder_learning_rate=_ENCODER_LEARNING_RATE.value,
      joint_steps=_JOINT_STEPS.value, seed=FLAGS.seed)
  records, curves = run(settings)
  plot(records, curves, out_dir)
  results.write_results(out_dir, records)
  print(results.format_table(
      [r for r in records if r['kind'] == 'curve'],
      ('encoder', 'steps', 'amortization_gap_train',
       'amortization_gap_held_out')))
  print()
  print(results.format_table(
      [r for r in records if r['kind'] == 'final'],
      ('encoder', 'split', 'log_px', 'elbo_optimal_q', 'elbo_amortized',
       'approximation_gap', 'amortization_gap')))
  print(f'\nOutputs in {out_dir}')


if __name__ == '__main__':
  app.run(main)
