"""Train a VAE or IWAE (MLP, Bernoulli pixels) with checkpoints and resume, then evaluate it.

Maximizes the ELBO or IWAE_k bound with the chosen gradient estimator, one
jitted `lax.scan` per epoch, logging a line per epoch; checkpoints every
--checkpoint_every epochs into <output_dir>/checkpoints and, with --resume
(default), continues a killed run from its last checkpoint to exactly the
parameters of an uninterrupted run (pass the same --output_dir). Writes
metrics.csv, TensorBoard events, and at the end the evaluation of
`evaluate_vae` (importance-sampled test log-likelihood with --eval_k
samples, ELBO, IWAE_k, active units, pictures) into results.json/.csv;
timings go to timing.json.

  python launch.py --experiment=train_vae --dataset=binarized_mnist \
      --tfds_data_dir=/work/shared/data/tensorflow_datasets \
      --output_dir=runs/vae_mnist --epochs=30
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

from vae import cli
from vae import results

_DATASET = flags.DEFINE_enum(
    'dataset', 'synthetic',
    ['binarized_mnist', 'mnist', 'fashion_mnist', 'synthetic'],
    'Dataset; mnist and fashion_mnist are binarized dynamically (a new '
    'draw per batch).')
_TFDS_DATA_DIR = flags.DEFINE_string(
    'tfds_data_dir', None, 'TFDS data dir with the dataset prepared '
    '(default: env VAE_TFDS_DATA_DIR).')
_MANUAL_DIR = flags.DEFINE_string(
    'manual_dir', None, 'Folder with the raw files for TFDS to prepare '
    '(default: env VAE_MANUAL_DIR).')
_DATA_CACHE_DIR = flags.DEFINE_string(
    'data_cache_dir', None, 'Folder of a numpy cache <name>.npz of the '
    'dataset, read if present, written after a TFDS read (default: env '
    'VAE_DATA_CACHE).')
_NUM_TRAIN = flags.DEFINE_integer(
    'num_train', None, 'Use the first num_train training images (default: '
    'all).', lower_bound=1)
_HIDDEN_SIZES = flags.DEFINE_list(
    'hidden_sizes', ['200', '200'], 'Hidden layer widths of the encoder and '
    'of the decoder.')
_LATENT_DIM = flags.DEFINE_integer('latent_dim', 50, 'Dimension of z.',
                                   lower_bound=1)
_ACTIVATION = flags.DEFINE_enum(
    'activation', 'tanh', ['tanh', 'relu', 'elu', 'softplus', 'sigmoid',
                           'gelu', 'silu', 'swish', 'leaky_relu'],
    'Hidden-layer activation.')
_OBJECTIVE = flags.DEFINE_enum('objective', 'elbo',
                               ['elbo', 'elbo_mc_kl', 'iwae'],
                               'Training bound (elbo: analytic KL).')
_ESTIMATOR = flags.DEFINE_string(
    'estimator', 'pathwise', 'Gradient estimator: elbo: pathwise, score, '
    'score_moving_average, score_rloo; elbo_mc_kl: those and stl; iwae: pathwise, '
    'stl, dreg, score, vimco.')
_NUM_SAMPLES = flags.DEFINE_integer(
    'num_samples', 1, 'k: samples per example (IWAE_k for iwae).',
    lower_bound=1)
_BETA = flags.DEFINE_float('beta', 1.0, 'Weight of the KL term.',
                           lower_bound=0.0)
_WARMUP_STEPS = flags.DEFINE_integer(
    'warmup_steps', 0, 'KL warm-up: beta grows linearly from 0 over this '
    'many steps.', lower_bound=0)
_BASELINE_DECAY = flags.DEFINE_float(
    'baseline_decay', 0.9, 'Decay of the moving-average baseline of '
    'score_moving_average.', lower_bound=0.0, upper_bound=0.999999)
_OPTIMIZER = flags.DEFINE_enum(
    'optimizer', 'adam', ['adam', 'sgd', 'momentum', 'rmsprop', 'adagrad'],
    'Optimizer.')
_LEARNING_RATE = flags.DEFINE_float('learning_rate', 1e-3,
                                    'Initial learning rate.')
_LR_SCHEDULE = flags.DEFINE_enum(
    'lr_schedule', 'constant', ['constant', 'cosine', 'exponential', 'burda'],
    'constant; cosine or exponential decay to lr*lr_decay_rate at the end; '
    "burda: Burda et al.'s lr*10^(-i/7) for 3^i epochs.")
_LR_DECAY_RATE = flags.DEFINE_float(
    'lr_decay_rate', 0.1, 'Final lr / initial lr of cosine and exponential.')
_LR_DECAY_STEPS = flags.DEFINE_integer(
    'lr_decay_steps', 0, 'exponential: multiply the lr by lr_decay_rate '
    'every this many steps (0: once over the run).', lower_bound=0)
_ADAM_EPS = flags.DEFINE_float('adam_eps', 1e-4, 'Epsilon of adam.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 100, 'Examples per step.',
                                   lower_bound=1)
_EPOCHS = flags.DEFINE_integer('epochs', 30, 'Passes over the training set.',
                               lower_bound=1)
_CHECKPOINT_EVERY = flags.DEFINE_integer(
    'checkpoint_every', 1, 'Epochs between checkpoints (and one at the end).',
    lower_bound=1)
_RESUME = flags.DEFINE_bool(
    'resume', True, 'Continue from the checkpoints in --output_dir if any.')
_TEST_EVERY = flags.DEFINE_integer(
    'test_every', 1, 'Epochs between test-bound evaluations (0: never).',
    lower_bound=0)
_TENSORBOARD = flags.DEFINE_bool('tensorboard', True,
                                 'Write TensorBoard event files.')
_EVALUATE = flags.DEFINE_bool('evaluate', True,
                              'Evaluate the model after training.')
_EVAL_K = flags.DEFINE_integer(
    'eval_k', 5000, 'Importance samples for the test log-likelihood.',
    lower_bound=1)
_EVAL_BATCH_SIZE = flags.DEFINE_integer(
    'eval_batch_size', 100, 'Test images decoded together.', lower_bound=1)
_EVAL_CHUNK_SIZE = flags.DEFINE_integer(
    'eval_chunk_size', 100, 'Samples per image decoded together.',
    lower_bound=1)
_EVAL_IWAE_KS = flags.DEFINE_list(
    'eval_iwae_ks', ['1', '5', '50'], 'k of the test IWAE_k bounds to report '
    '(the training k is added when it divides --eval_chunk_size).')
_NUM_EVAL = flags.DEFINE_integer(
    'num_eval', None, 'Evaluate on the first num_eval test images '
    '(default: all).', lower_bound=1)
_PICTURES = flags.DEFINE_bool('pictures', True,
                              'Write prior samples, reconstructions and '
                              'inpainting PNGs.')
cli.define_common_flags()
FLAGS = flags.FLAGS


def _config():
  from vae import training  # pylint: disable=g-import-not-at-top
  try:
    hidden = tuple(int(h) for h in _HIDDEN_SIZES.value)
  except ValueError:
    sys.exit(f'train_vae: --hidden_sizes must be integers, got '
             f'{_HIDDEN_SIZES.value}.')
  config = training.TrainConfig(
      dataset=_DATASET.value, num_train=_NUM_TRAIN.value,
      hidden_sizes=hidden, latent_dim=_LATENT_DIM.value,
      activation=_ACTIVATION.value, objective=_OBJECTIVE.value,
      estimator=_ESTIMATOR.value, num_samples=_NUM_SAMPLES.value,
      beta=_BETA.value, warmup_steps=_WARMUP_STEPS.value,
      baseline_decay=_BASELINE_DECAY.value, optimizer=_OPTIMIZER.value,
      learning_rate=_LEARNING_RATE.value, lr_schedule=_LR_SCHEDULE.value,
      lr_decay_rate=_LR_DECAY_RATE.value, lr_decay_steps=_LR_DECAY_STEPS.value,
      adam_eps=_ADAM_EPS.value, batch_size=_BATCH_SIZE.value,
      epochs=_EPOCHS.value, seed=FLAGS.seed)
  try:
    training.validate(config)
  except ValueError as e:
    sys.exit(f'train_vae: {e}')
  return config


def main(argv):
  if len(argv) > 1:
    sys.exit(f'train_vae: unexpected arguments {argv[1:]}')
  config = _config()
  from vae import data  # pylint: disable=g-import-not-at-top
  from vae import evaluation  # pylint: disable=g-import-not-at-top
  from vae import training  # pylint: disable=g-import-not-at-top
  try:
    iwae_ks = evaluation.iwae_ks_for(_EVAL_K.value, _EVAL_CHUNK_SIZE.value,
                                     _EVAL_IWAE_KS.value, config.num_samples)
  except ValueError as e:
    sys.exit(f'train_vae: {e}')
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # TFDS and orbax log at INFO.
  out = cli.output_dir('train_vae')
  results.write_config(out, FLAGS, FLAGS.seed)
  try:
    dataset = data.load_dataset(
        config.dataset, data_dir=_TFDS_DATA_DIR.value,
        manual_dir=_MANUAL_DIR.value, cache_dir=_DATA_CACHE_DIR.value,
        num_train=config.num_train, seed=config.seed)
  except data.DataNotFoundError as e:
    sys.exit(f'train_vae: {e}')
  print(f'train_vae: {config.dataset} ({len(dataset.train)} train, '
        f'{len(dataset.test)} test, {dataset.binarization} binarization), '
        f'{config.objective}/{config.estimator} k={config.num_samples}, '
        f'{config.epochs} epochs; output in {out}', flush=True)
  try:
    run = training.train(
        config, dataset, out, checkpoint_every=_CHECKPOINT_EVERY.value,
        resume=_RESUME.value, test_every=_TEST_EVERY.value,
        tensorboard=_TENSORBOARD.value,
        log=lambda line: print(line, flush=True))
  except FloatingPointError as e:
    sys.exit(f'train_vae: {e}')
  timing = dict(train_wall_s=run.wall_s, train_cpu_s=run.cpu_s,
                compile_s=run.compile_s, epochs_this_run=len(run.history),
                resumed_from_step=run.resumed_from)
  summary = training.last_metrics(out)
  if _EVALUATE.value:
    evaluated, eval_timing = evaluation.evaluate(
        run.model, run.state.params, dataset, FLAGS.seed, eval_k=_EVAL_K.value,
        iwae_ks=iwae_ks, batch_size=_EVAL_BATCH_SIZE.value,
        chunk_size=_EVAL_CHUNK_SIZE.value, num_eval=_NUM_EVAL.value,
        output_dir=out, pictures=_PICTURES.value,
        log=lambda line: print(line, flush=True))
    summary.update(evaluated)
    timing.update(eval_timing)
  records = [training.result_record(config, int(run.state.step), summary)]
  print(results.format_table(records, columns=(
      'dataset', 'objective', 'estimator', 'k', 'epochs', 'final_train_bound',
      'final_test_bound', 'test_nll', 'test_elbo', 'active_units', 'eval_k')))
  results.write_results(out, records)
  results.write_json(os.path.join(out, 'timing.json'), timing)
  print(f'Results in {out}')


if __name__ == '__main__':
  app.run(main)
