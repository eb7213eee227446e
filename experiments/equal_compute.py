"""Training at equal compute over batch sizes: the measured critical batch.

For each batch size B in --batch_sizes and each of --replicates seeds
(seed, seed + 1, ...; the same initialization for every B of a replicate),
trains the image VAE with one (objective, estimator, N) for the same budget
of decoder passes per training example (--passes = epochs × N), with the
held-out bound (the training objective, β = 1, on the test images) after
every epoch and at initialization. From the learning curves: the examples
E(B) each B needs to reach a target bound, the line E(B) = E_min + S_min·B
of McCandlish et al. (2018) and the critical batch B_crit = E_min/S_min
with its SE over replicates (`vae.analysis.critical_batch`), for each target
in turn (the final mean bound of each B but the smallest); beside it the
predicted gradient noise scale B_noise = tr Σ/‖G‖² (`vae.analysis.
minibatch_noise`) at initialization and after training the reference run.
Writes results.json/csv, curves.json (every epoch of every run) and
equal_compute.png. Resumable: every run checkpoints each epoch in
points/B<B>_r<r>/, and a rerun of the same command skips finished runs.

  python launch.py --experiment=equal_compute --dataset=binarized_mnist \\
      --tfds_data_dir=DATA_DIR --estimator=pathwise --objective=elbo \\
      --num_samples=1 --passes=8 --batch_sizes=16,32,64,128,256,512,1024
"""

import os

import jax
import jax.numpy as jnp
import numpy as np

from experiments import minibatch_noise
from experiments.common import outputs
from experiments.common import progress
from vae import checkpoint
from vae import comparison
from vae import config as cfg
from vae import data as data_lib
from vae import evaluate as eval_lib
from vae import moments
from vae import optim
from vae import train
from vae.analysis import critical_batch as cb
from vae.analysis import minibatch_noise as mn
from vae.models import image_vae

S = cfg.setting
T = train.TrainConfig


@cfg.settings
class Config:
  """Data, model and optimizer as train_vae; what to train; the B grid."""
  data: data_lib.DataConfig = data_lib.DataConfig(dataset='binarized_mnist')
  model: image_vae.ModelConfig = image_vae.ModelConfig()
  optimizer: optim.OptimizerConfig = optim.OptimizerConfig(adam_eps=1e-4)
  objective: str = cfg.like(T, 'objective')
  estimator: str = cfg.like(T, 'estimator')
  num_samples: int = cfg.like(T, 'num_samples')
  batch_sizes: tuple[int, ...] = cfg.like(  # One training run each.
      minibatch_noise.Config, 'batch_sizes', (16, 64, 256, 1024))
  passes: int = S(8, 'Decoder passes per training example, epochs × N '
                  '(the same compute for every B); a multiple of N.', min=1,
                  max=10**5)
  replicates: int = S(3, 'Training runs per B (seeds seed, seed + 1, ...).',
                      min=1, max=1000)
  num_draws: int = cfg.like(moments.Draws, 'num_draws', 64, max=10**5)
  noise_batch: int = S(64, 'B of the B_noise measurement.', min=2,
                       max=10**4)

  def check(self):
    """passes a multiple of N; B ≤ the training images; a valid estimator."""
    if self.passes % self.num_samples:
      raise ValueError(f'passes: {self.passes} is not a multiple of '
                       f'num_samples {self.num_samples}.')
    if max(self.batch_sizes) > self.data.train_size:
      raise ValueError(f'batch_sizes: {max(self.batch_sizes)} > the '
                       f'{self.data.train_size} training images.')
    if len(set(self.batch_sizes)) < 2:
      raise ValueError('batch_sizes: needs at least two batch sizes.')
    self.training(self.batch_sizes[0])  # Its own check (registry).

  def training(self, batch_size: int) -> train.TrainConfig:
    """The run of one B: every epoch tested and checkpointed."""
    return train.TrainConfig(
        objective=self.objective, estimator=self.estimator,
        num_samples=self.num_samples, batch_size=batch_size,
        epochs=self.passes // self.num_samples, checkpoint_every=1,
        test_every=1)


def _curve(config: Config, dataset, model, batch_size: int, seed: int,
           folder: str, bar: progress.Progress, out: outputs.Run
           ) -> list[dict]:
  """The held-out bound after each epoch (epoch 0: at initialization) of
  one run, trained or resumed into `folder`; its rows saved as it goes."""
  path = os.path.join(folder, 'curve.json')
  rows = outputs.read_json(path) if os.path.exists(path) else []
  t = config.training(batch_size)
  if not rows:
    params = model.init(train.init_key(seed),
                        np.asarray(dataset.train).mean(0))
    rows = [dict(epoch=0, step=0, examples=0, test_bound=eval_lib.mean_bound(
        model, params, eval_lib.test_images(dataset), train.test_key(seed),
        t.objective, t.num_samples), wall_s=0.0)]
  if rows[-1]['epoch'] < t.epochs:
    def on_epoch(row):
      rows[:] = [r for r in rows if r['epoch'] < row['epoch']]
      rows.append(dict(epoch=row['epoch'], step=row['step'],
                       examples=row['step'] * batch_size,
                       test_bound=row['test_bound'],
                       wall_s=rows[-1]['wall_s'] + row['epoch_wall_s']))
      outputs.write_json(path, rows)
      bar.update()
    train.train(model, dataset, config.optimizer, t, seed,
                os.path.join(folder, 'checkpoints'), on_epoch=on_epoch,
                log=out.log)
  outputs.write_json(path, rows)
  return rows


def _noise_scale(config: Config, model, params, images, key,
                 **labels) -> list[dict]:
  """B_noise per parameter group and for all parameters together,
  B·Σ_g Var Ĝ_g / Σ_g ‖G_g‖² (no SE: the groups' covariance is not kept)."""
  rows = mn.measure_vae(model, params, images, key, (config.estimator,),
                        (config.noise_batch,), (config.num_samples,),
                        config.num_draws, 100, **labels)
  rows = [dict(r, section='b_noise') for r in rows
          if r['B'] == config.noise_batch]
  total = sum(r['total'] for r in rows) * config.noise_batch
  rows.append(dict(labels, section='b_noise', estimator=config.estimator,
                   group='all', B=config.noise_batch, N=config.num_samples,
                   b_noise=total / sum(r['signal'] for r in rows)))
  return comparison.without_timing(rows)


def critical(runs: dict[tuple[int, int], list[dict]], batch_sizes) -> list[dict]:
  """B_crit for each target: the final mean bound of each B but the
  smallest, fitted over the B whose every replicate reaches it after its
  first epoch (a crossing between initialization and the first evaluation
  is not resolved: `critical_batch.crossing`), at least 3 B."""
  finals = {b: np.mean([runs[b, r][-1]['test_bound'] for (bb, r) in runs
                        if bb == b]) for b in batch_sizes}
  out = []
  for b_target in sorted(batch_sizes)[1:]:
    target = float(finals[b_target])
    crossings = {b: [cb.crossing([p['examples'] for p in runs[b, r]],
                                 [p['test_bound'] for p in runs[b, r]],
                                 target, resolved_from=1)
                     for (bb, r) in sorted(runs)
                     if bb == b] for b in batch_sizes}
    crossings = {b: e for b, e in crossings.items()
                 if all(v is not None for v in e)}
    row = dict(section='critical', target_of_B=b_target, target=target,
               batch_sizes_fitted=','.join(map(str, sorted(crossings))))
    if len(crossings) >= 3:
      row.update(cb.fit(crossings))
      row.update({f'E_B{b}': float(np.mean([v for v in e if v is not None]))
                  for b, e in crossings.items()})
    out.append(row)
  return out


def run(config: Config, seed: int, out: outputs.Run) -> list[dict]:
  """Trains every (B, replicate), fits B_crit, measures B_noise, plots."""
  c = config
  dataset, model = data_lib.load(c.data, seed), image_vae.make(c.model)
  epochs = c.passes // c.num_samples
  grid = [(b, r) for r in range(c.replicates) for b in c.batch_sizes]
  out.log(f'equal_compute: {dataset.name}, {c.objective}/{c.estimator} '
          f'N={c.num_samples}, {epochs} epochs ({c.passes} decoder passes '
          f'per example) for B in {c.batch_sizes}, {c.replicates} '
          f'replicates: {len(grid)} runs')
  runs = {}
  with progress.Progress(len(grid) * epochs, 'equal_compute',
                         unit='epochs') as bar:
    for b, r in grid:
      folder = out.path(os.path.join('points', f'B{b}_r{r}'))
      os.makedirs(folder, exist_ok=True)
      runs[b, r] = _curve(c, dataset, model, b, seed + r, folder, bar, out)
      done = sum(len(v) - 1 for v in runs.values())
      if done != bar.done:  # Resumed runs count as done.
        bar.set(done)
  out.write_json('curves.json', [dict(B=b, replicate=r, **p)
                                 for (b, r), pts in runs.items()
                                 for p in pts])
  finals = []
  for b in c.batch_sizes:
    ends = np.array([runs[b, r][-1]['test_bound']
                     for r in range(c.replicates)])
    walls = np.array([runs[b, r][-1]['wall_s'] for r in range(c.replicates)])
    finals.append(dict(section='final', B=b, epochs=epochs,
                       steps=runs[b, 0][-1]['step'],
                       examples=runs[b, 0][-1]['examples'],
                       test_bound=float(ends.mean()),
                       test_bound_sd=float(ends.std(ddof=1)) if len(ends) > 1
                       else np.nan, n=len(ends),
                       wall_s=float(walls.mean())))
  out.log(f'\n== held-out {c.objective} bound after {c.passes} decoder '
          'passes per example (mean, sd over replicates)')
  out.table(finals, ['B', 'steps', 'examples', 'test_bound', 'test_bound_sd',
                     'n', 'wall_s'])
  crit = critical(runs, c.batch_sizes)
  out.log('\n== E(B) = E_min + S_min·B to reach each target; B_crit = '
          'E_min/S_min (pooled fit; mean ± SE over replicates)')
  out.table(crit, ['target_of_B', 'target', 'batch_sizes_fitted', 'e_min',
                   's_min', 'b_crit', 'b_crit_mean', 'b_crit_se',
                   'replicates'])
  ref = min(c.batch_sizes, key=lambda b: abs(np.log(b / 100)))
  images = jnp.asarray(dataset.train)
  key = jax.random.fold_in(jax.random.PRNGKey(seed), 7)
  init = model.init(train.init_key(seed), np.asarray(dataset.train).mean(0))
  tree, _ = checkpoint.restore_latest(  # The finished run's final state.
      out.path(os.path.join('points', f'B{ref}_r0', 'checkpoints')),
      {'params': jax.tree.map(np.zeros_like, init)}, out.log,
      move_aside=False)
  params = tree['params']
  noise = (_noise_scale(c, model, init, images, key, epoch=0) +
           _noise_scale(c, model, params, images, key, epoch=epochs))
  out.log(f'\n== predicted: B_noise = tr Σ/‖G‖² at B = {c.noise_batch}, '
          f'{c.num_draws} draws, at initialization and after the B = {ref} '
          'run')
  out.table(noise, ['epoch', 'group', 'b_noise', 'b_noise_se', 'signal'])
  plot(c, runs, finals, crit, noise, out)
  return finals + crit + noise


def plot(c: Config, runs, finals, crit, noise, out: outputs.Run) -> None:
  """Bound vs examples and vs wall time per B; E(B) per target with its
  line, B_crit and B_noise; the final bound against B."""
  plt = outputs.pyplot()
  fig, grid = plt.subplots(2, 2, figsize=(11, 8), layout='constrained')
  axes = grid.ravel()
  for k, b in enumerate(c.batch_sizes):
    for r in range(c.replicates):
      pts = runs[b, r][1:]
      kw = dict(color=f'C{k}', lw=1, alpha=0.8,
                label=f'B = {b}' if r == 0 else None)
      axes[0].plot([p['examples'] for p in pts],
                   [p['test_bound'] for p in pts], **kw)
      axes[1].plot([p['wall_s'] for p in pts],
                   [p['test_bound'] for p in pts], **kw)
  axes[0].set(xscale='log', xlabel='training examples processed',
              ylabel=f'held-out {c.objective} (nats)')
  axes[1].set(xscale='log', xlabel='wall seconds (this machine)',
              ylabel=f'held-out {c.objective} (nats)')
  axes[0].legend(fontsize=7)
  bs = np.array(sorted(c.batch_sizes), float)
  for k, row in enumerate(r for r in crit if 'b_crit' in r):
    pts = sorted((int(key[3:]), v) for key, v in row.items()
                 if key.startswith('E_B'))
    axes[2].plot(*zip(*pts), 'o', color=f'C{k}', ms=4,
                 label=f'target {row["target"]:.1f}: B_crit '
                 f'{row["b_crit"]:.3g}')
    axes[2].plot(bs, row['e_min'] + row['s_min'] * bs, '-', color=f'C{k}',
                 lw=0.8)
  for row in noise:
    if row['group'] == 'all':
      axes[2].axvline(row['b_noise'], color='k', ls=':' if row['epoch'] == 0
                      else '--', lw=0.8)
  axes[2].set(xscale='log', yscale='log', xlabel='batch size B',
              ylabel='examples to reach the target, E(B)',
              title='E = E_min + S_min·B (lines); B_noise: dotted init, '
              'dashed trained', )
  axes[2].title.set_fontsize(8)
  if axes[2].get_legend_handles_labels()[0]:
    axes[2].legend(fontsize=6)
  axes[3].errorbar([f['B'] for f in finals], [f['test_bound'] for f in finals],
                   [f['test_bound_sd'] for f in finals], fmt='o-')
  axes[3].set(xscale='log', xlabel='batch size B',
              ylabel=f'held-out {c.objective} after {c.passes} passes (nats)',
              title='equal compute: final bound (± sd over replicates)')
  axes[3].title.set_fontsize(8)
  for ax in axes:  # Log axes: label the decades only (no crowded minors).
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
  fig.suptitle(f'{c.objective}/{c.estimator}, N = {c.num_samples}: '
               f'training at equal compute ({c.passes} decoder passes per '
               'example)')
  out.save_figure(fig, 'equal_compute.png')

