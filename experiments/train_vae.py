"""Train a VAE or IWAE on binary images (exact resume), then evaluate it.

Maximizes the ELBO or IWAE_k bound with the chosen gradient estimator, one
jitted `lax.scan` per epoch (`vae.train.train`), logging a line per epoch
into metrics.csv and TensorBoard; checkpoints every --checkpoint_every
epochs into <output_dir>/checkpoints. Rerun with the same --output_dir (and
settings; --epochs may grow) to continue a killed or stopped run from its
newest intact checkpoint to exactly the parameters of an uninterrupted run.
A NaN or diverged bound stops the run (exit 1, last good state kept); so
does a checkpoint that cannot be written (read-only folder, full disk: one
line, the earlier checkpoints kept). A folder whose checkpoint holds more
epochs than --epochs, or whose metrics.csv is not one this run wrote, is
refused (one line, exit 2) before anything is written (`check_resume`). At the
end: the evaluation of `evaluate_vae` (importance-sampled test NLL with
--eval_k samples, ELBO, IWAE_k, active units; latents.json, PNGs) in
results.json, the per-image values in per_image.json; timings in
timing.json; learning_curve.png (the bounds per epoch, from metrics.csv);
the settings and final numbers in TensorBoard's HPARAMS tab. Epochs and
the evaluation show their rate and ETA on stderr. An interrupted evaluation
resumes too: its importance sampling keeps its finished batches in
importance_partial.npz until it ends.

  python launch.py --experiment=train_vae --tfds_data_dir=DATA_DIR \\
      --output_dir=runs/vae_mnist --epochs=30

The data is binarized MNIST unless --dataset says otherwise (synthetic: no
files); DATA_DIR is a TFDS data dir holding it (or VAE_TFDS_DATA_DIR;
--download lets TFDS fetch it there first; README, "Data").
"""

import dataclasses
import os

import numpy as np

from experiments.common import distributed
from experiments.common import metrics
from experiments.common import outputs
from experiments.common import pictures
from experiments.common import progress
from vae import checkpoint
from vae import config as cfg
from vae import data as data_lib
from vae import evaluate as eval_lib
from vae import optim
from vae import train
from vae.models import flexible_vae
from vae.models import image_vae

RESUMABLE = ('epochs', 'devices')  # A run resumes on any number of devices.
CHECKPOINTS = 'checkpoints'
PER_IMAGE = 'per_image.json'  # log p̂(x_n), its SE, ELBO and KL per image.
COLUMNS = ('step', 'epoch', 'train_bound', 'test_bound', 'beta',
           'learning_rate', 'examples_per_s', 'epoch_wall_s', 'epoch_cpu_s')
TABLE = ('dataset', 'objective', 'estimator', 'k', 'epochs',
         'final_train_bound', 'final_test_bound', 'test_nll', 'test_elbo',
         'active_units', 'eval_k')


@cfg.settings
class Config:
  """Data, model, optimizer (adam ε = 1e-4, as Burda et al.), training."""
  # Real data by default (README: a binarized MNIST experiment); missing,
  # it is one line naming --download and --tfds_data_dir. --dataset=synthetic
  # needs no files.
  data: data_lib.DataConfig = data_lib.DataConfig(dataset='binarized_mnist')
  model: image_vae.ModelConfig = image_vae.ModelConfig()
  families: flexible_vae.FamilyConfig = flexible_vae.FamilyConfig()
  optimizer: optim.OptimizerConfig = optim.OptimizerConfig(adam_eps=1e-4)
  training: train.TrainConfig = train.TrainConfig()
  evaluation: eval_lib.EvalConfig = eval_lib.EvalConfig()
  evaluate: bool = cfg.setting(True, 'Evaluate the model after training.')
  tensorboard: bool = cfg.setting(True, 'Write TensorBoard event files.')

  def check(self):
    """batch_size ≤ training images; a step fits in half the memory."""
    size, batch = self.data.train_size, self.training.batch_size
    if batch > size:
      raise ValueError(f'batch_size: {batch} > the {size} training images '
                       f'of {self.data.dataset}.')
    train.check_memory(self.model, self.training, data_lib.IMAGE_SIZE)
    flexible_vae.check_training(self.families, self.training.objective,
                                self.training.estimator)


def record(config: Config, seed: int, steps: int, summary: dict) -> dict:
  """One flat results record: the run's main settings, then `summary`."""
  t, m, o = config.training, config.model, config.optimizer
  f = config.families
  return dict(dataset=config.data.dataset, objective=t.objective,
              estimator=t.estimator, k=t.num_samples, beta=t.beta,
              epochs=t.epochs, steps=steps, batch_size=t.batch_size,
              optimizer=o.optimizer, learning_rate=o.learning_rate,
              lr_schedule=o.lr_schedule,
              hidden_sizes='-'.join(map(str, m.hidden_sizes)),
              latent_dim=m.latent_dim, activation=m.activation, seed=seed,
              **(dict(posterior=f.posterior, prior=f.prior, decoder=f.decoder)
                 if f.flexible else {}), **summary)


def write_evaluation(out: outputs.Run, ev: eval_lib.Evaluation) -> None:
  """latents.json, per_image.json (log p̂, its SE, ELBO and KL of every
  evaluation image, for paired comparisons: `compare_runs`) and the PNGs;
  refuses a NaN test NLL (exit 1)."""
  if ev.per_image is not None:
    out.write_json(PER_IMAGE, ev.per_image)
  out.write_json('latents.json', {
      'activity': ev.latents['activity'],
      'kl_per_dim': ev.latents['kl_per_dim'],
      'active_unit_threshold': eval_lib.ACTIVE_UNIT_THRESHOLD})
  if ev.pictures is not None:
    pictures.save_pictures(out, ev.pictures)
  s = ev.summary
  if not np.isfinite(s['test_nll']):
    raise SystemExit(f'the final evaluation is not finite: test_nll '
                     f'{s["test_nll"]}, test_elbo {s["test_elbo"]}.')


def check_resume(config: Config, directory: str) -> None:
  """Refuses a run folder this run cannot continue (one line).

  Its newest checkpoint may hold at most --epochs epochs (a run is never
  labelled with fewer epochs than its model was trained for), and its
  metrics.csv, if any, must be one this experiment wrote.

  Raises:
    outputs.RunDirError: naming the file and the fix.
  """
  t = config.training
  folder = os.path.join(directory, CHECKPOINTS)
  step = checkpoint.latest_step(folder)
  try:
    metrics.read_rows(os.path.join(directory, metrics.METRICS_CSV), COLUMNS)
    if step is not None:
      train.check_resume(step, config.data.train_size // t.batch_size,
                         t.epochs, folder)
  except (metrics.MetricsError, train.ResumeError) as e:
    raise outputs.RunDirError(f'train_vae: {_as_flags(str(e))}') from None


def make_model(config: Config):
  """The MLP VAE (`image_vae.make`) for the default families, else the
  `flexible_vae.FlexibleVAE` of the chosen posterior, prior and decoder."""
  if config.families.flexible:
    return flexible_vae.make(config.model, config.families)
  return image_vae.make(config.model)


def check_binary(dataset: data_lib.Dataset) -> None:
  """Refuses (SystemExit, one line) an autoregressive Bernoulli decoder on
  data that is not binary: pixels outside {0, 1}, unless binarized
  dynamically (each batch drawn as 0/1 before it is seen)."""
  if dataset.binarization == 'dynamic':
    return
  train_x = np.asarray(dataset.train)
  if not np.all((train_x == 0) | (train_x == 1)):
    raise SystemExit(f'train_vae: decoder=autoregressive models binary '
                     f'pixels; {dataset.name} has values outside {{0, 1}} '
                     f'({dataset.binarization} binarization).')


def _as_flags(message: str) -> str:
  return message.replace('epochs=', '--epochs=').replace(
      'another folder', 'another --output_dir')


def run(config: Config, seed: int, out: outputs.Run) -> list[dict]:
  """Loads the data, trains (or resumes), evaluates; one record."""
  t = config.training
  distributed.check_training('train_vae', t)  # --devices: one line.
  check_resume(config, out.dir)
  dataset = data_lib.load(config.data, seed)
  if config.families.decoder == 'autoregressive':
    check_binary(dataset)
  if t.batch_size > len(dataset.train):
    raise SystemExit(f'train_vae: batch_size {t.batch_size} > the '
                     f'{len(dataset.train)} training images.')
  out.log(f'train_vae: {config.data.dataset} ({len(dataset.train)} train, '
          f'{len(dataset.test)} test, {dataset.binarization} binarization), '
          f'{t.objective}/{t.estimator} k={t.num_samples}, {t.epochs} epochs;'
          f' output in {out.dir}')
  steps_per_epoch = len(dataset.train) // t.batch_size
  log: list[metrics.MetricsLog] = []
  # Epochs with rate and ETA on stderr (bar, or a plain line per interval).
  done = (checkpoint.latest_step(out.path(CHECKPOINTS)) or 0) // max(
      steps_per_epoch, 1)
  bar = progress.Progress(t.epochs, 'training', 'epochs',
                          initial=min(done, t.epochs))

  def on_epoch(row):
    if not log:  # The first epoch of this call: the rows before stay.
      log.append(metrics.MetricsLog(out.dir, COLUMNS,
                                    row['step'] - steps_per_epoch,
                                    config.tensorboard))
    log[0].write(row)
    out.log(metrics.progress_line(row, t.epochs))
    bar.set(row['epoch'])

  model = make_model(config)
  try:
    result = train.train(model, dataset, config.optimizer, t, seed,
                         out.path(CHECKPOINTS), on_epoch=on_epoch,
                         log=out.log)
  except (train.Diverged, checkpoint.CheckpointError) as e:
    raise SystemExit(f'train_vae: {e}') from None
  except train.ResumeError as e:
    raise outputs.RunDirError(f'train_vae: {_as_flags(str(e))}') from None
  finally:
    bar.close()
    for m in log:
      m.close()
  if result.history:
    out.log(metrics.summary_line(result.history, result.compile_s))
  timing = dict(train_wall_s=result.wall_s, train_cpu_s=result.cpu_s,
                compile_s=result.compile_s,
                epochs_this_run=len(result.history),
                resumed_from_step=result.resumed_from)
  rows = metrics.read_rows(out.path(metrics.METRICS_CSV), COLUMNS)
  f = config.families
  families = (f'q {f.posterior}, p(z) {f.prior}, p(x|z) {f.decoder}, '
              if f.flexible else '')
  metrics.learning_curve(out, rows, f'{config.data.dataset}: {t.objective}/'
                         f'{t.estimator} k={t.num_samples}, {families}latent '
                         f'{config.model.latent_dim}, seed {seed}')
  tested = [r for r in rows if r['test_bound']]
  summary = {'final_train_bound': float(rows[-1]['train_bound'])
                                  if rows and rows[-1]['train_bound'] else None,
             'final_test_bound': float(tested[-1]['test_bound'])
                                 if tested else None}
  if config.evaluate:
    evaluation = config.evaluation
    if config.families.decoder == 'autoregressive' and evaluation.pictures:
      out.log('train_vae: no pictures: an autoregressive decoder has no '
              'closed-form E[x|z].')
      evaluation = dataclasses.replace(evaluation, pictures=False)
    ev = progress.evaluate(model, result.state.params, dataset, evaluation,
                           seed, t.num_samples, log=out.log,
                           partial=out.path(progress.PARTIAL))
    write_evaluation(out, ev)
    summary.update(ev.summary)
    timing.update(ev.timing)
  records = [record(config, seed, int(result.state.step), summary)]
  if config.tensorboard:  # Settings and final numbers: the HPARAMS tab.
    metrics.write_hparams(out.dir, {k: v for k, v in records[0].items()
                                    if k not in summary},
                          {k: v for k, v in summary.items() if k in TABLE})
  out.table(records, TABLE)
  out.write_json('timing.json', timing)
  return records
