"""Variance, SNR and direction of VAE gradient estimators along training.

Trains a small VAE (784-64-8 tanh, binarized MNIST; `--dataset=synthetic`
for the synthetic images, no data needed) and at `eval_steps`
draws `num_draws` gradient estimates on one fixed minibatch with each
estimator of each bound and N (`vae.analysis.vae_gradients`, `vae.moments`): total
variance, SNR and cosine to a reference gradient per parameter group;
timings.json; variance/SNR plots vs step and vs N.

  python launch.py --experiment=vae_gradients --sample_counts=1,10 \\
      --eval_steps=0,500 --iwae_estimators=pathwise,dreg
"""

import numpy as np

from experiments.common import distributed
from experiments.common import outputs
from vae import comparison
from vae import config as cfg
from vae import data as data_lib
from vae import moments
from vae import optim
from vae import train
from vae.analysis import vae_gradients as vg
from vae.estimators import registry
from vae.models import image_vae


S = cfg.setting
_PASSED_ON = ('batch_size', 'train_objective', 'train_num_samples',
              'baseline_decay', 'common_random_numbers')


@cfg.settings
class Config:
  data: data_lib.DataConfig = data_lib.DataConfig(  # Grey: binarized once.
      dataset='binarized_mnist')
  latent_dim: int = cfg.like(image_vae.ModelConfig, 'latent_dim', 8)
  hidden_sizes: tuple[int, ...] = cfg.like(image_vae.ModelConfig,
                                           'hidden_sizes', (64,))
  batch_size: int = cfg.like(train.TrainConfig, 'batch_size', 32)
  optimizer: optim.OptimizerConfig = optim.OptimizerConfig()
  train_objective: str = cfg.like(train.TrainConfig, 'objective')  # Pathwise.
  train_num_samples: int = cfg.like(train.TrainConfig, 'num_samples')
  baseline_decay: float = cfg.like(train.TrainConfig, 'baseline_decay')
  eval_steps: tuple[int, ...] = S((0, 100, 300), 'Steps at which to measure '
                                  '(max: steps trained).', min=0, max=10**6)
  fixed_batch_size: int = S(16, 'Minibatch of the measurements (the first '
                            'training images).', min=1, max=10**4)
  objectives: tuple[str, ...] = S(('elbo', 'iwae'), 'Bounds.',
                                  choices=registry.OBJECTIVES)
  elbo_estimators: tuple[str, ...] = S(
      ('pathwise', 'score', 'score_moving_average', 'score_rloo'),
      'For elbo, elbo_mc_kl (stl: elbo_mc_kl).',
      choices=registry.names('elbo_mc_kl'))
  iwae_estimators: tuple[str, ...] = S(
      ('pathwise', 'stl', 'dreg', 'vimco'), 'For iwae.',
      choices=registry.names('iwae'))
  sample_counts: tuple[int, ...] = cfg.like(moments.Draws, 'sample_counts',
                                            (1, 5, 20), max=10**4)
  num_draws: int = cfg.like(moments.Draws, 'num_draws', 200, max=10**6)
  devices: int = cfg.like(moments.MeshConfig, 'devices')  # For the draws.
  reference_draws: int = S(200, 'Draws of g_ref (a multiple of num_draws).',
                           min=1, max=10**7)
  common_random_numbers: bool = S(True, 'Estimators of a draw share samples.')
  time_estimators: bool = S(False, 'Also time each estimator alone.')
  compile_threads: int = S(0, 'Compile threads (0: CPUs).', min=0, max=256)

  def estimators_for(self) -> dict[str, tuple[str, ...]]:
    """{objective: its estimators}."""
    return {o: tuple(dict.fromkeys(self.iwae_estimators if o == 'iwae' else
                                   self.elbo_estimators))
            for o in dict.fromkeys(self.objectives)}

  def check(self):
    for obj, ests in self.estimators_for().items():
      for e in ests:  # Refuses e.g. score_rloo when every N is 1.
        registry.check(e, obj, max(self.sample_counts))
    n = self.data.train_size
    if max(self.batch_size, self.fixed_batch_size) > n:
      raise ValueError(f'batch_size, fixed_batch_size: more than {n} images.')
    if self.devices > 1 and self.num_draws % self.devices:
      raise ValueError(f'num_draws: {self.num_draws} is not divisible by '
                       f'devices={self.devices}.')


# The y-axis of each statistic, with its units (the bound is a batch mean in
# nats; parameters have no units, so a gradient coordinate is in nats).
Y_LABELS = {'total_variance': 'total variance Σ_p Var[ĝ_p] (nats²)',
            'snr': 'SNR: mean_p |E ĝ_p| / sd ĝ_p (unitless)'}


def fixed_text(objective: str, fixed: dict) -> str:
  """The setting a panel holds fixed, in words: 'K = 20', 'step 300'."""
  words = []
  for name, value in fixed.items():
    if name == 'num_samples':
      words.append(f'{"K" if objective.startswith("iwae") else "N"} = '
                   f'{value}')
    else:
      words.append(f'{name.replace("_", " ")} {value}')
  return ', '.join(words)


def plot(out, rows, x_key: str, fixed: dict, name: str, title: str):
  """Total variance and SNR (rows: objectives; columns: group x statistic)."""
  plt = outputs.pyplot()
  objs = list(dict.fromkeys(r['objective'] for r in rows))
  fig, axes = plt.subplots(len(objs), 4, figsize=(15, 3.4 * len(objs)),
                           squeeze=False)
  for i, obj in enumerate(objs):
    rs = [r for r in rows if r['objective'] == obj and all(
        r[f] == v for f, v in fixed.items())]
    for j, (stat, group) in enumerate((s, g) for s in ('total_variance', 'snr')
                                      for g in vg.GROUPS):
      ax = axes[i, j]
      for k, est in enumerate(dict.fromkeys(r['estimator'] for r in rs)):
        pts = sorted((r[x_key], r[stat]) for r in rs if r['estimator'] == est
                     and r['group'] == group and r[stat] is not None)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], 'o-', ms=3,
                color=f'C{k}', label=est)
      ax.set(yscale='log', xscale='linear' if x_key == 'step' else 'log',
             xlabel='training step' if x_key == 'step' else (
                 'K (samples of IWAE_K)' if obj.startswith('iwae') else
                 'N (samples per estimate)'),
             ylabel=Y_LABELS[stat])
      ax.yaxis.label.set_size(8)
      if x_key != 'step':  # N on a log axis: its values as plain ticks.
        xs = sorted({r[x_key] for r in rs})
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xticks([], minor=True)
      ax.set_title(f'objective {obj}, {group}, {fixed_text(obj, fixed)}',
                   fontsize=9)
    axes[i, 0].legend(fontsize=7)
  crn = rows[0]['common_random_numbers']
  fig.suptitle(title + crn * ('\n(common random numbers: estimators whose '
                              'decoder gradients agree draw one line)'))
  fig.tight_layout()
  out.save_figure(fig, name)


def run(config: Config, seed: int, out: outputs.Run) -> list[dict]:
  """Trains, measures every (objective, estimator, N, step), plots."""
  # --devices: the draws' devices (None: one device).
  mesh = distributed.data_mesh('vae_gradients', config.devices)
  ds = data_lib.load(config.data, seed=0)
  images = ds.train if ds.binarization == 'fixed' else np.asarray(
      data_lib.binarize(0, ds.train))
  steps, ns = sorted(set(config.eval_steps)), sorted(set(config.sample_counts))
  model = vg.small_vae(config.latent_dim, config.hidden_sizes,
                       images.mean(axis=0))
  out.log(f'vae_gradients: {len(images)} {ds.name} images; at steps '
          f'{steps}, {config.num_draws} draws per estimator and N in {ns}')
  records, timings = vg.measure(
      model, images, steps, seed, optim.make_optimizer(
          config.optimizer, steps[-1]), config.estimators_for(), ns,
      config.num_draws, config.reference_draws, config.time_estimators,
      workers=config.compile_threads or None,
      eval_batch_size=config.fixed_batch_size, mesh=mesh,
      **{k: getattr(config, k) for k in _PASSED_ON})
  out.write_json('timings.json', timings)
  for x, fixed in (('step', {'num_samples': ns[-1]}),
                   ('num_samples', {'step': steps[-1]})):
    plot(out, records, x, fixed, f'variance_snr_vs_{x}.png',
         'Total variance and SNR of the gradient estimates vs ' + (
             'training step' if x == 'step' else 'samples N (K)'))
  out.table(vg.summary_rows(records))
  out.log(f'ms: seconds per estimate ×10³ on {comparison.device_name()} '
          '(one estimate alone, compiled, median of repeats, at the last '
          'step); eff: var × seconds, lower is better. Time depends on the '
          'machine, variance does not.\nbest estimator per sample (least '
          'var) and per second (least var × seconds), at the last step:')
  out.table(comparison.ranking([r for r in records if r['step'] == steps[-1]],
                               ('objective', 'group', 'num_samples'),
                               variance='total_variance'))
  out.log('\nms per draw of all estimators of one call (median over steps):')
  out.table(vg.draw_time_rows(timings['draws']))
  if config.time_estimators:
    out.table(timings['estimators'])
  compiling = sum(c['compile_seconds'] for c in timings['compile'])
  out.log(f'training {timings["train_seconds"]:.1f} s, study '
          f'{timings["study_seconds"]:.1f} s (compiling, summed over '
          f'threads, {compiling:.1f} s). enc/dec: encoder/decoder; var: '
          'Σ_p Var[ĝ_p]; snr: mean |mean|/std; cos: mean cosine of one '
          'estimate to g_ref (elbo: pathwise at the largest N; iwae: dreg at '
          f'the same K; {config.reference_draws} draws).')
  out.write_json('efficiency.json', [r for r in records if 'seconds' in r])
  return comparison.without_timing(records)
