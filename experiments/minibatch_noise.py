"""Minibatch noise against Monte Carlo noise in VAE gradients (B x N grid).

Var Ĝ = Var_I[E_z Ĝ] + E_I[Var_z Ĝ] of the ELBO gradient on B examples drawn
with replacement, N samples each (`vae.analysis.minibatch_noise`): checked against
closed forms on a linear-Gaussian VAE (rows marked `disagrees`), then per
estimator and parameter group on an image VAE after each --eval_epochs; the
best (B, N) at each budget B·N; variance_vs_budget.png, check.png.

  python launch.py --experiment=minibatch_noise --dataset=binarized_mnist \\
      --tfds_data_dir=DATA_DIR --epochs=30 \\
      --eval_epochs=0,1,30
"""

import itertools
import tempfile

import jax
import numpy as np

from experiments.common import distributed
from experiments.common import metrics
from experiments.common import outputs
from vae import comparison
from vae import config as cfg
from vae import data as data_lib
from vae import moments
from vae import stats
from vae import optim
from vae import train
from vae.analysis import minibatch_noise as mn
from vae.estimators import registry
from vae.models import image_vae

S = cfg.setting
MAX_PASSES = 2**14  # Decoder passes of one minibatch estimate, B·N.


@cfg.settings
class Config:
  """Data, model, optimizer and training as train_vae; the (B, N) grid."""
  data: data_lib.DataConfig = data_lib.DataConfig(dataset='binarized_mnist')
  model: image_vae.ModelConfig = image_vae.ModelConfig()
  optimizer: optim.OptimizerConfig = optim.OptimizerConfig(adam_eps=1e-4)
  training: train.TrainConfig = train.TrainConfig(epochs=1, test_every=0)
  eval_epochs: tuple[int, ...] = S((0, 1), 'Measure after these epochs (0: '
                                   'at initialization).', min=0, max=10**5)
  estimators: tuple[str, ...] = cfg.like(
      moments.Comparison, 'estimators', ('pathwise', 'score_rloo'),
      choices=mn.VAE_ESTIMATORS)  # Exact kernels (∇ELBO); dreg: ∇IWAE_N.
  batch_sizes: tuple[int, ...] = S((1, 4), 'B: examples per minibatch '
                                   '(with replacement).', min=1, max=10**4)
  sample_counts: tuple[int, ...] = cfg.like(moments.Draws, 'sample_counts',
                                            (1, 4), max=10**4)
  num_draws: int = cfg.like(moments.Draws, 'num_draws', 16, max=10**6)
  baseline_examples: int = S(100, 'score_moving_average: its baseline is the '
                             'mean cost of this many images.', min=1,
                             max=10**5)
  linear_gaussian: mn.CheckConfig = mn.CheckConfig()

  def check(self):
    """Epochs, fixed binarization, estimators valid at some N, B·N."""
    if max(self.eval_epochs) > self.training.epochs:
      raise ValueError(f'eval_epochs: {max(self.eval_epochs)} > epochs.')
    if self.data.dataset not in ('binarized_mnist', 'synthetic'):
      raise ValueError(f'dataset: {self.data.dataset} is binarized '
                       'dynamically; use binarized_mnist or synthetic.')
    if self.training.batch_size > self.data.train_size:
      raise ValueError(f'batch_size: > {self.data.train_size} images.')
    for e in self.estimators:
      registry.check(e, mn.objective_of(e), max(self.sample_counts))
    if max(self.batch_sizes) * max(self.sample_counts) > MAX_PASSES:
      raise ValueError(f'batch_sizes x sample_counts: at most {MAX_PASSES} '
                       'decoder passes per minibatch estimate.')
    if self.training.devices > 1 and self.num_draws % self.training.devices:
      raise ValueError(f'num_draws: {self.num_draws} is not divisible by '
                       f'devices={self.training.devices}.')


def trained(config: Config, dataset, model, seed: int, out: outputs.Run):
  """(epoch, params) after each eval epoch (checkpoints in a temp folder)."""
  with tempfile.TemporaryDirectory() as folder:
    for epoch in sorted(set(config.eval_epochs)):
      if epoch == 0:  # As vae.train.train initializes.
        yield 0, model.init(jax.random.fold_in(jax.random.PRNGKey(seed), 0),
                            dataset.train.mean(0))
        continue
      yield epoch, train.train(
          model, dataset, config.optimizer, config.training, seed, folder,
          on_epoch=lambda r: out.log(metrics.progress_line(
              r, config.training.epochs)), log=out.log,
          stop_after_epochs=epoch).state.params


def run(config: Config, seed: int, out: outputs.Run) -> list[dict]:
  """Checks on the linear-Gaussian VAE, trains, measures, tabulates, plots."""
  key, c = jax.random.PRNGKey(seed), config
  # --devices: training and the draws split over one mesh (None: 1 device).
  distributed.check_training('minibatch_noise', c.training)
  mesh = distributed.data_mesh('minibatch_noise', c.training.devices)
  with jax.enable_x64(True):  # Scoped: no global config change.
    checked = stats.mark_disagreements(  # The run's only checks.
        mn.check_linear_gaussian(jax.random.fold_in(key, 1),
                                 c.linear_gaussian, c.estimators,
                                 c.batch_sizes, c.sample_counts))
  out.log('\n== linear-Gaussian check: measured vs exact parts')
  out.table(checked, ['estimator', 'group', 'B', 'N', 'between', 'exact_'
                      'between', 'between_z', 'within', 'exact_within',
                      'within_z', 'signal', 'exact_signal', 'signal_z',
                      'b_noise', 'exact_b_noise', 'b_noise_z', 'disagrees'])
  dataset, model = data_lib.load(c.data, seed), image_vae.make(c.model)
  steps_per_epoch, rows = len(dataset.train) // c.training.batch_size, []
  for epoch, params in trained(c, dataset, model, seed, out):
    rows += mn.measure_vae(
        model, params, jax.numpy.asarray(dataset.train), jax.random.fold_in(
            jax.random.fold_in(key, 2), epoch), c.estimators, c.batch_sizes,
        c.sample_counts, c.num_draws, c.baseline_examples, mesh,
        section='vae', epoch=epoch, step=epoch * steps_per_epoch)
  out.log(f'\n== {dataset.name}: which part dominates (minibatch_share = '
          'Var_I[E_z Ĝ]/Var Ĝ at the largest B)')
  out.table(mn.dominance(rows), ['epoch', 'estimator', 'group', 'N', 'B',
                                 'between', 'between_se', 'within',
                                 'within_se', 'minibatch_share', 'dominant'])
  out.log(f'\n== {dataset.name}: gradient noise scale B_noise = (V_data + '
          'σ²_N)/‖G‖² (± delta-method SE), signal = ‖G‖², at the largest B; '
          'seconds per minibatch estimate on '
          f'{comparison.device_name()}, efficiency = Var Ĝ × seconds')
  out.table(mn.dominance(rows), ['epoch', 'estimator', 'group', 'N', 'B',
                                 'signal', 'signal_se', 'b_noise',
                                 'b_noise_se', 'total', 'seconds',
                                 'efficiency'])
  out.log('\nbest estimator per sample (least Var Ĝ) and per second (least '
          'Var Ĝ × seconds; time depends on the machine, variance does not):')
  out.table(comparison.ranking([r for r in rows if 'seconds' in r],
                               ('epoch', 'group', 'N'), variance='total'))
  best = mn.best_per_budget(rows, ('epoch', 'estimator', 'group'))
  out.log('\n== the best (B, N) at each budget B·N')
  out.table(best)
  plot(rows, checked, out)
  plot_noise_scale(mn.dominance(rows), out)
  out.write_json('efficiency.json', [r for r in checked + rows
                                     if 'seconds' in r])
  return comparison.without_timing(
      checked + rows + [{'section': 'best', **r} for r in best])


def plot(rows: list[dict], checked: list[dict], out: outputs.Run) -> None:
  """Var Ĝ (solid) and Var_I[E_z Ĝ] (dotted) against B·N, one line per N;
  the linear-Gaussian check: measured (±2 SE) against exact parts."""
  plt = outputs.pyplot()
  ests = list(dict.fromkeys(r['estimator'] for r in rows))
  cols = list(dict.fromkeys((r['epoch'], g) for r in rows for g in mn.GROUPS))
  fig, axes = plt.subplots(len(ests), len(cols), squeeze=False, figsize=(
      3.2 * len(cols), 2.8 * len(ests)), layout='constrained')
  for (i, est), (j, (epoch, group)) in itertools.product(enumerate(ests),
                                                         enumerate(cols)):
    for k, n in enumerate(sorted({r['N'] for r in rows})):
      pts = sorted((r['budget'], r['total'], r['between']) for r in rows if (
          r['estimator'], r['epoch'], r['group'], r['N']) == (
              est, epoch, group, n))
      if pts:
        x, total, between = zip(*pts)
        axes[i, j].plot(x, total, 'o-', ms=3, color=f'C{k}', label=f'N={n}')
        axes[i, j].plot(x, np.where(np.array(between) > 0, between, np.nan),
                        ':', color=f'C{k}')
    axes[i, j].set(xscale='log', yscale='log', xlabel='B·N decoder passes')
    axes[i, j].set_title(f'{est} {group}, epoch {epoch}', fontsize=8)
  axes[0, 0].legend(fontsize=7)
  fig.suptitle('Var Ĝ (solid) and its minibatch part Var_I[E_z Ĝ] (dotted)')
  out.save_figure(fig, 'variance_vs_budget.png')
  fig, ax = plt.subplots(figsize=(5, 4.5))
  for k, part in enumerate(('between', 'within')):
    ax.errorbar([r['exact_' + part] for r in checked],
                [r[part] for r in checked],
                [2 * r[part + '_se'] for r in checked], fmt='o', ms=3,
                color=f'C{k}', label=part)
  ax.axline((1, 1), slope=1, color='k', ls='--', lw=0.8)
  ax.set(xscale='log', yscale='log', xlabel='exact', ylabel='measured',
         title='Linear-Gaussian VAE: both parts vs closed forms')
  ax.legend(fontsize=8)
  out.save_figure(fig, 'check.png')


def plot_noise_scale(rows: list[dict], out: outputs.Run) -> None:
  """B_noise (±2 SE) against the epoch, one line per (estimator: colour,
  N: marker and dash); one panel per parameter group (`dominance` rows: at
  the largest B)."""
  plt = outputs.pyplot()
  groups = list(dict.fromkeys(r['group'] for r in rows))
  fig, axes = plt.subplots(1, len(groups), squeeze=False, figsize=(
      4.5 * len(groups), 3.6), layout='constrained')
  ests = sorted({r['estimator'] for r in rows})
  ns = sorted({r['N'] for r in rows})
  for j, group in enumerate(groups):
    ax = axes[0, j]
    for (c, est), (m, n) in itertools.product(enumerate(ests), enumerate(ns)):
      pts = sorted((r['epoch'], r['b_noise'], r['b_noise_se']) for r in rows
                   if (r['estimator'], r['N'], r['group']) == (est, n, group))
      if pts:
        x, y, se = (np.array(v, float) for v in zip(*pts))
        ax.errorbar(x, y, 2 * se, fmt='os^dv'[m % 5] + ('-', '--', ':')[
            m % 3], ms=3, color=f'C{c}', label=f'{est} N={n}')
    ax.set(yscale='log', xlabel='epoch', ylabel='B_noise',
           title=f'{group}: (V_data + σ²_N)/‖G‖²')
  axes[0, 0].legend(fontsize=6)
  fig.suptitle('Gradient noise scale along training (±2 SE)')
  out.save_figure(fig, 'noise_scale.png')
