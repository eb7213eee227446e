"""Amortization vs approximation gap (Cremer et al. 2018) with exact log p(x).

On the linear-Gaussian model, for an encoder q_φ(z|x) trained by the ELBO,
log p(x) - ELBO(q_φ) = [log p(x) - ELBO(q*)] + [ELBO(q*) - ELBO(q_φ)], the
approximation gap plus the amortization gap, where q* is the best diagonal
Gaussian for that x (closed form). Encoders: linear (its family contains q*,
so its gap can vanish) and a tanh MLP, trained by full-batch Adam on the
closed-form ELBO of a small training set and evaluated on training and
held-out data. Then the model is learned jointly with a linear encoder: its
posterior becomes nearly factorized, its approximation gap nearly vanishes.
Checks (to rounding): each approximation gap equals ½(Σ_j log Λ_jj -
log det Λ); no amortization gap is negative (q* is the optimum); a value
that is not finite (a diverged encoder) disagrees and fails the run.
"""

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import outputs
from vae import config as cfg
from vae import stats
from vae import optim
from vae.problems import amortization as am
from vae.problems import linear_gaussian as lg

JOINT = 'linear + model learned by ELBO'


@cfg.settings
class Config:
  model_data_dim: int = cfg.setting(10, 'Observed dim D.', min=1, max=1000)
  model_latent_dim: int = cfg.setting(4, 'Latent dim d (<= D).', min=1,
                                      max=1000)
  # Below σ = 1e-3, log p(x) (covariance WWᵀ + σ²I, condition ~|W|²/σ²)
  # loses digits even in float64: the approximation gap is off by 5e-11 at
  # σ = 1e-3, 1e-6 at 1e-5, 7e-5 at 1e-6; log p(x) is NaN at 1e-8.
  model_noise: float = cfg.setting(
      0.5, 'Noise σ (>= 1e-3: below it float64 log p(x) loses digits).',
      min=1e-3, max=1e3)
  encoder_train_size: int = cfg.setting(100, 'Encoder training points.',
                                        min=1, max=10**6)
  encoder_test_size: int = cfg.setting(2000, 'Held-out points.', min=1,
                                       max=10**6)
  encoders: tuple[str, ...] = cfg.setting(am.ENCODERS, 'Encoder kinds.',
                                          choices=am.ENCODERS)
  mlp_hidden: int = cfg.setting(64, 'Hidden units of the MLP encoder.', min=1,
                                max=10**4)
  encoder_steps: int = cfg.setting(3000, 'Adam steps for each encoder.',
                                   min=0, max=10**6)
  encoder_learning_rate: float = cfg.setting(
      3e-3, 'Adam step size (encoders).', gt=0.0, max=10.0)
  joint_steps: int = cfg.setting(
      3000, 'Adam steps (learning rate 1e-2) when learning model + linear '
      'encoder jointly (0: skip).', min=0, max=10**6)

  def check(self):
    if self.model_latent_dim > self.model_data_dim:
      raise ValueError(f'model_latent_dim: {self.model_latent_dim} exceeds '
                       f'model_data_dim {self.model_data_dim}.')


def _final(model, encoder, x_train, x_test, name, steps) -> list[dict]:
  return [{'kind': 'final', 'encoder': name, 'split': split, 'steps': steps,
           **g} for split, g in zip(('train', 'held-out'), am.checked_gaps(
               model, (x_train, x_test), encoder))]


def _checkpoints(num_steps: int) -> list[int]:
  if num_steps == 0:
    return []
  return sorted({int(s) for s in np.geomspace(1, num_steps, 12).round()} |
                {num_steps})


def _run(config: Config, seed: int) -> tuple[list[dict], dict]:
  k_model, k_enc, k_joint = jax.random.split(jax.random.PRNGKey(seed), 3)
  dtype = jnp.result_type(float)
  model, (x_train, x_test), _, _ = lg.draw_problem(
      k_model, config.model_data_dim, config.model_latent_dim,
      config.model_noise, (config.encoder_train_size, config.encoder_test_size))
  optimal = {split: float(jnp.mean(am.batch_elbo(
      model, x, am.optimal_diagonal_q(model, x))))
             for split, x in (('train', x_train), ('held-out', x_test))}
  records, curves = [], {}
  for i, kind in enumerate(config.encoders):
    init = jax.tree_util.tree_map(lambda a: a.astype(dtype), am.init_encoder(
        jax.random.fold_in(k_enc, i), kind, config.model_data_dim,
        config.model_latent_dim, config.mlp_hidden))
    params, _, evals = am.train_encoder(
        model, x_train, init, config.encoder_steps,
        optim.OptimizerConfig(learning_rate=config.encoder_learning_rate),
        (x_train, x_test))
    curves[kind] = {s: optimal[s] - np.asarray(e)
                    for s, e in zip(('train', 'held-out'), evals)}
    records += _final(model, params, x_train, x_test, kind,
                      config.encoder_steps)
    tol = stats.rounding_tolerance(max(map(abs, optimal.values())), dtype)
    for step in _checkpoints(config.encoder_steps):
      gaps = [float(curves[kind][s][step - 1]) for s in ('train', 'held-out')]
      records.append({'kind': 'curve', 'encoder': kind, 'steps': step,
                      'amortization_gap_train': gaps[0],
                      'amortization_gap_held_out': gaps[1],
                      'disagrees': not all(g >= -tol for g in gaps)})
  if config.joint_steps > 0:
    learned, encoder, _ = am.fit_by_elbo(
        x_train, config.model_latent_dim, 'pathwise', k_joint, 'amortized',
        config.joint_steps, optim.OptimizerConfig(learning_rate=1e-2), 2)
    records += _final(learned, encoder, x_train, x_test, JOINT,
                      config.joint_steps)
  return records, curves


def run(config: Config, seed: int, out: outputs.Run) -> list[dict]:
  """Curve and final rows (float64), the figure and two tables."""
  with jax.enable_x64(True):  # Scoped: no global config change.
    records, curves = _run(config, seed)
  plot(records, curves, out)
  out.table([r for r in records if r['kind'] == 'curve'],
            ('encoder', 'steps', 'amortization_gap_train',
             'amortization_gap_held_out'))
  out.table([r for r in records if r['kind'] == 'final'],
            ('encoder', 'split', 'log_px', 'elbo_optimal_q', 'elbo_amortized',
             'approximation_gap', 'amortization_gap'))
  return records


# Gaps beyond this (a diverged encoder) are left out of the figure: a log
# axis up to ~1e300 overflows matplotlib's tick computation.
_PLOTTABLE = 1e100


def _plottable(values) -> np.ndarray:
  """`values` with NaN where not finite or beyond ±_PLOTTABLE (not drawn)."""
  a = np.asarray(values, np.float64)
  return np.where(np.abs(a) <= _PLOTTABLE, a, np.nan)  # NaN fails too.


def plot(records: list[dict], curves: dict, out: outputs.Run) -> None:
  """Gap curves during encoder training, and the final decomposition.

  Values that are not finite or beyond ±1e100 (a diverged encoder; the rows
  say so) are not drawn.
  """
  fig, axes = outputs.pyplot().subplots(1, 2, figsize=(13, 4.5))
  final = [r for r in records if r['kind'] == 'final']
  approx = final[0]['approximation_gap']
  for i, (kind, c) in enumerate(curves.items()):
    steps = np.arange(1, len(c['train']) + 1)
    axes[0].plot(steps, _plottable(c['train']), color=f'C{i}',
                 label=f'{kind}: train')
    axes[0].plot(steps, _plottable(c['held-out']), color=f'C{i}', ls='--',
                 label=f'{kind}: held-out')
  axes[0].axhline(approx, color='k', ls=':',
                  label=f'approximation gap ({approx:.3f})')
  drawn = any(np.any(_plottable(a) > 0) for c in curves.values()
              for a in c.values())  # Else log axes have nothing to show.
  scale = 'log' if drawn else 'linear'
  axes[0].set(xscale=scale, yscale=scale, xlabel='encoder Adam step',
              ylabel='amortization gap ELBO(q*) - ELBO(q_φ) (nats)',
              title='Amortization gap during encoder training')
  axes[0].legend(fontsize=8)
  y, left = np.arange(len(final)), np.zeros(len(final))
  for gap in ('approximation_gap', 'amortization_gap'):  # Stacked bars.
    width = np.nan_to_num(_plottable([r[gap] for r in final]))
    axes[1].barh(y, width, left=left, label=gap.replace('_', ' '))
    left = left + width
  axes[1].set_yticks(y, [f'{r["encoder"]}\n({r["split"]})' for r in final],
                     fontsize=7)
  axes[1].set(xlabel='log p(x) - ELBO(q_φ) (nats, mean over points)',
              title='Inference gap = approximation + amortization',
              ylim=(len(y), -1))
  axes[1].legend(fontsize=8)
  out.save_figure(fig, 'amortization_gap.png')
