"""Variance, SNR and direction of VAE gradient estimators during training.

Trains a small VAE (784-64-8 tanh by default, on the built-in `synthetic`
images; `--dataset=binarized_mnist` reads TFDS data from `--tfds_data_dir` or
$VAE_TFDS_DATA_DIR) and, at the steps in `--eval_steps`, on one fixed
minibatch, draws `--num_draws` independent gradient estimates of each bound
with each estimator for each N in `--num_samples` (K for iwae): ELBO
pathwise / score / score_moving_average (moving average of past costs) /
score_rloo, IWAE pathwise / STL / DReG / VIMCO. Reports per parameter group
(encoder, decoder) the total variance Σ_p Var[ĝ_p], the SNR mean_p |E ĝ_p| /
std ĝ_p and the cosine of the estimates to a high-sample reference gradient.
Writes results.json/.csv, config.json, timings.json (wall times, kept out of
results.json, which is byte-identical across identical runs) and
variance/SNR plots against the training step and against N.

  python launch.py --experiment=estimator_variance --num_samples=1,10 \
      --eval_steps=0,500 --iwae_estimators=pathwise,dreg
"""

import os
import statistics
import time

from absl import app
from absl import flags

from vae import cli
from vae import results

_DATASET = flags.DEFINE_enum(
    'dataset', 'synthetic',
    ['synthetic', 'binarized_mnist', 'mnist', 'fashion_mnist'],
    'Training images (mnist/fashion_mnist are binarized once, with seed 0).')
_TFDS_DATA_DIR = flags.DEFINE_string(
    'tfds_data_dir', None, 'TFDS data dir holding the prepared dataset '
    '(default: $VAE_TFDS_DATA_DIR, then ~/tensorflow_datasets).')
_MANUAL_DIR = flags.DEFINE_string(
    'manual_dir', None, 'Folder with the raw files for TFDS to prepare '
    '(default: env VAE_MANUAL_DIR).')
_DATA_CACHE_DIR = flags.DEFINE_string(
    'data_cache_dir', None, 'Folder of a numpy cache <name>.npz of the '
    'dataset, read if present, written after a TFDS read (default: env '
    'VAE_DATA_CACHE).')
_NUM_TRAIN = flags.DEFINE_integer(
    'num_train', 0, 'Training images to use (0: all; synthetic: 2000).',
    lower_bound=0)
_LATENT_DIM = flags.DEFINE_integer('latent_dim', 8, 'Latent dimension.',
                                   lower_bound=1)
_HIDDEN_SIZES = flags.DEFINE_list('hidden_sizes', ['64'],
                                  'Hidden layer widths of encoder and decoder.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 32, 'Training batch size.',
                                   lower_bound=1)
_LEARNING_RATE = flags.DEFINE_float('learning_rate', 1e-3, 'Adam step size.',
                                    lower_bound=0.0)
_TRAIN_OBJECTIVE = flags.DEFINE_enum(
    'train_objective', 'elbo', ['elbo', 'elbo_mc_kl', 'iwae'],
    'Bound maximized (pathwise gradient) during training.')
_TRAIN_NUM_SAMPLES = flags.DEFINE_integer(
    'train_num_samples', 1, 'Samples per example for training.', lower_bound=1)
_BASELINE_DECAY = flags.DEFINE_float(
    'baseline_decay', 0.9, 'Decay of the moving-average score_moving_average.',
    lower_bound=0.0, upper_bound=0.999)
_EVAL_STEPS = flags.DEFINE_list(
    'eval_steps', ['0', '100', '300'],
    'Training steps at which the estimators are measured (their maximum is '
    'the number of training steps).')
_EVAL_BATCH_SIZE = flags.DEFINE_integer(
    'eval_batch_size', 16, 'Size of the fixed minibatch (the first training '
    'images) whose gradient is estimated.', lower_bound=1)
_OBJECTIVES = flags.DEFINE_list('objectives', ['elbo', 'iwae'],
                                'Bounds: elbo, elbo_mc_kl, iwae.')
_ELBO_ESTIMATORS = flags.DEFINE_list(
    'elbo_estimators', ['pathwise', 'score', 'score_moving_average', 'score_rloo'],
    'Estimators for elbo / elbo_mc_kl (stl: elbo_mc_kl only).')
_IWAE_ESTIMATORS = flags.DEFINE_list(
    'iwae_estimators', ['pathwise', 'stl', 'dreg', 'vimco'],
    'Estimators for iwae: pathwise, stl, dreg, score, vimco.')
_NUM_SAMPLES = flags.DEFINE_list(
    'num_samples', ['1', '5', '20'],
    'Samples per example N (K for iwae); score_rloo and vimco need >= 2.')
_NUM_DRAWS = flags.DEFINE_integer(
    'num_draws', 200, 'Independent estimates per configuration.',
    lower_bound=2)
_REFERENCE_DRAWS = flags.DEFINE_integer(
    'reference_draws', 200, 'Estimates averaged into the reference gradient '
    '(rounded up to a multiple of --num_draws).', lower_bound=1)
_COMMON_RANDOM_NUMBERS = flags.DEFINE_bool(
    'common_random_numbers', True, 'Give all estimators of a draw the same '
    'samples (paired comparisons, cheaper); else independent samples.')
_TIME_ESTIMATORS = flags.DEFINE_bool(
    'time_estimators', False, 'Also time each estimator alone at the last '
    'step (compiles one more function per estimator and N).')
_COMPILE_THREADS = flags.DEFINE_integer(
    'compile_threads', 0, 'Threads compiling XLA programs (0: CPU count).',
    lower_bound=0)
cli.define_common_flags()
FLAGS = flags.FLAGS


def _ints(name: str, values, minimum: int, sort: bool = True) -> list[int]:
  """Parses a list flag of integers >= minimum (sorted and unique if sort)."""
  out = []
  for v in values:
    try:
      x = int(v)
    except ValueError:
      raise app.UsageError(f'--{name}: {v!r} is not an integer.') from None
    if x < minimum:
      raise app.UsageError(f'--{name}: values must be >= {minimum}, got {x}.')
    out.append(x)
  if not out:
    raise app.UsageError(f'--{name} must not be empty.')
  return sorted(set(out)) if sort else out


def _validate():
  """Checks the flags; returns (steps, num_samples, hidden, estimators_for)."""
  from vae.estimators import registry  # pylint: disable=g-import-not-at-top
  steps = _ints('eval_steps', _EVAL_STEPS.value, 0)
  num_samples = _ints('num_samples', _NUM_SAMPLES.value, 1)
  hidden = _ints('hidden_sizes', _HIDDEN_SIZES.value, 1, sort=False)
  if not _OBJECTIVES.value:
    raise app.UsageError('--objectives must not be empty.')
  estimators_for = {}
  for obj in dict.fromkeys(_OBJECTIVES.value):
    if obj not in objectives.OBJECTIVES:
      raise app.UsageError(f'--objectives: unknown objective {obj!r}; choose '
                           f'from {", ".join(objectives.OBJECTIVES)}.')
    flag = 'iwae_estimators' if obj == 'iwae' else 'elbo_estimators'
    ests = list(dict.fromkeys(FLAGS[flag].value))
    if not ests:
      raise app.UsageError(f'--{flag} must not be empty.')
    for e in ests:
      if e not in registry.names(obj):
        raise app.UsageError(
            f'--{flag}: estimator {e!r} does not apply to objective {obj!r}; '
            f'choose from {", ".join(registry.names(obj))}.')
    estimators_for[obj] = tuple(ests)
  return steps, num_samples, hidden, estimators_for


def _load_images():
  """Training images, float32 0/1; data seed 0 (--seed varies the rest)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vae import data  # pylint: disable=g-import-not-at-top
  try:
    images = data.load_split(_DATASET.value, 'train',
                             data_dir=_TFDS_DATA_DIR.value,
                             manual_dir=_MANUAL_DIR.value,
                             cache_dir=_DATA_CACHE_DIR.value,
                             num_examples=_NUM_TRAIN.value or None, seed=0)
  except data.DataNotFoundError as e:
    raise app.UsageError(str(e)) from None
  if _DATASET.value in ('mnist', 'fashion_mnist'):
    images = np.asarray(data.binarize(0, images))
  return images


def _plot(rows, x_key: str, fixed: dict, path: str, title: str) -> str:
  """Total variance and SNR (rows: objectives; columns: group x statistic)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  objs = list(dict.fromkeys(r['objective'] for r in rows))
  panels = [(g, s) for s in ('total_variance', 'snr')
            for g in ('encoder', 'decoder')]
  fig, axes = plt.subplots(len(objs), 4, figsize=(15, 3.2 * len(objs)),
                           squeeze=False)
  for i, obj in enumerate(objs):
    ests = list(dict.fromkeys(r['estimator'] for r in rows
                              if r['objective'] == obj))
    for j, (group, stat) in enumerate(panels):
      ax = axes[i, j]
      for k, est in enumerate(ests):
        pts = sorted((r[x_key], r[stat]) for r in rows
                     if r['objective'] == obj and r['estimator'] == est and
                     r['group'] == group and r[stat] is not None and
                     all(r[f] == v for f, v in fixed[obj].items()))
        if pts:
          ax.plot([p[0] for p in pts], [p[1] for p in pts], 'o-', ms=3,
                  color=f'C{k}', label=est)
      ax.set_yscale('log')
      if x_key == 'num_samples':
        ax.set_xscale('log')
      where = ', '.join(f'{f}={v}' for f, v in fixed[obj].items())
      ax.set_title(f'{obj} {group}: {stat} ({where})', fontsize=8)
      ax.set_xlabel('training step' if x_key == 'step' else 'N (K for iwae)')
      if j == 0:
        ax.legend(fontsize=7)
  if all(r['common_random_numbers'] for r in rows):
    title += ('\n(common random numbers: estimators whose decoder gradients '
              'agree sample by sample draw coinciding lines)')
  fig.suptitle(title)
  fig.tight_layout()
  return results.save_figure(fig, path)


def summary_rows(records) -> list[dict]:
  """One row per (objective, N, estimator, step), encoder | decoder columns."""
  rows = {}
  for r in records:
    key = (r['objective'], r['num_samples'], r['estimator'], r['step'])
    row = rows.setdefault(key, {'objective': key[0], 'N': key[1],
                                'estimator': key[2], 'step': key[3]})
    g = 'enc' if r['group'] == 'encoder' else 'dec'
    row[f'{g}_var'] = r['total_variance']
    row[f'{g}_snr'] = r['snr']
    row[f'{g}_cos'] = r['cosine_to_reference']
    row['bound'] = r['bound']
  return list(rows.values())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  steps, num_samples, hidden, estimators_for = _validate()
  start = time.perf_counter()
  images = _load_images()
  if _EVAL_BATCH_SIZE.value > len(images) or _BATCH_SIZE.value > len(images):
    raise app.UsageError(f'--batch_size/--eval_batch_size exceed the '
                         f'{len(images)} training images.')
  import jax  # pylint: disable=g-import-not-at-top
  from vae import variance_study as vs  # pylint: disable=g-import-not-at-top
  out = cli.output_dir('estimator_variance')
  results.write_config(out, FLAGS, FLAGS.seed)
  model = vs.small_vae(_LATENT_DIM.value, hidden, images.mean(axis=0))
  print(f'estimator_variance: {_DATASET.value} ({len(images)} images), VAE '
        f'784-{"-".join(map(str, hidden))}-{_LATENT_DIM.value}, training '
        f'{steps[-1]} steps; measuring at steps {steps} on a batch of '
        f'{_EVAL_BATCH_SIZE.value}: {_NUM_DRAWS.value} draws per '
        f'(objective, estimator, N in {num_samples})', flush=True)
  t0 = time.perf_counter()
  baseline_objectives = [o for o, ests in estimators_for.items()
                         if 'score_moving_average' in ests]
  checkpoints = vs.train_checkpoints(
      model, images, steps, jax.random.PRNGKey(FLAGS.seed),
      batch_size=_BATCH_SIZE.value, learning_rate=_LEARNING_RATE.value,
      objective=_TRAIN_OBJECTIVE.value,
      num_samples=_TRAIN_NUM_SAMPLES.value,
      baseline_objectives=baseline_objectives,
      baseline_decay=_BASELINE_DECAY.value)
  train_seconds = time.perf_counter() - t0
  t0 = time.perf_counter()
  workers = _COMPILE_THREADS.value or None
  batch = images[:_EVAL_BATCH_SIZE.value]
  records, timings = vs.study(
      model, checkpoints, batch, estimators_for, num_samples,
      _NUM_DRAWS.value, _REFERENCE_DRAWS.value, FLAGS.seed,
      common_random_numbers=_COMMON_RANDOM_NUMBERS.value, workers=workers)
  study_seconds = time.perf_counter() - t0
  if _TIME_ESTIMATORS.value:
    timings['estimators'] = vs.time_estimators(
        model, checkpoints[-1], batch, estimators_for, num_samples,
        _NUM_DRAWS.value, FLAGS.seed, workers)
  results.write_results(out, records)
  timings.update(train_seconds=train_seconds, study_seconds=study_seconds,
                 total_seconds=time.perf_counter() - start)
  results.write_json(os.path.join(out, 'timings.json'), timings)
  largest = {o: {'num_samples': max(num_samples)} for o in estimators_for}
  last = {o: {'step': steps[-1]} for o in estimators_for}
  _plot(records, 'step', largest, os.path.join(out, 'variance_snr_vs_step.png'),
        'Total variance and SNR of the gradient estimates vs training step')
  _plot(records, 'num_samples', last,
        os.path.join(out, 'variance_snr_vs_num_samples.png'),
        'Total variance and SNR of the gradient estimates vs N')
  print(results.format_table(summary_rows(records)))
  _print_timings(timings)
  refs = sorted({(r['objective'], r['reference_estimator'],
                  r['reference_draws'],
                  'N=' + str(max(num_samples)) if r['objective'] != 'iwae'
                  else 'the same K') for r in records})
  refs = '; '.join(f'{o}: mean of {d} {e} estimates at {n}'
                   for o, e, d, n in refs)
  print(f'\nenc/dec: encoder/decoder parameters. var: total variance '
        f'Σ_p Var[ĝ_p]; snr: mean over parameters of |mean| / std; cos: mean '
        f'cosine of one estimate to the reference gradient ({refs}).\n'
        f'Results in {out}')


def _print_timings(timings) -> None:
  """Wall time per draw of each compiled call (median over steps), compiles."""
  per = {}
  for t in timings['draws']:
    per.setdefault((t['objective'], t['num_samples'], t['estimators']),
                   []).append(t['seconds_per_draw'])
  rows = [{'objective': o, 'N': n, 'estimators (one call)': e,
           'ms/draw (all)': 1e3 * statistics.median(v)}
          for (o, n, e), v in per.items()]
  print('\nWall time per draw of all estimators of one call (after '
        'compilation, median over steps):')
  print(results.format_table(rows))
  if timings.get('estimators'):
    print('\nWall time per estimate, each estimator alone (last step):')
    print(results.format_table([
        {'objective': t['objective'], 'estimator': t['estimator'],
         'N': t['num_samples'], 'ms/estimate': 1e3 * t['seconds_per_estimate']}
        for t in timings['estimators']]))
  compile_s = sum(c['compile_seconds'] for c in timings['compile'])
  print(f'\ntraining {timings["train_seconds"]:.1f} s, study '
        f'{timings["study_seconds"]:.1f} s (of which compiling '
        f'{len(timings["compile"])} programs, summed over threads, '
        f'{compile_s:.1f} s), total {timings["total_seconds"]:.1f} s')


if __name__ == '__main__':
  app.run(main)
