"""Evaluate a trained VAE checkpoint: importance-sampled test NLL, ELBO, IWAE_k, active units, pictures.

Loads the latest (or --step) checkpoint of a `train_vae` output folder
(--checkpoint_dir) and estimates, on the test images,

    test_nll = -(1/N) Σ_n log (1/K) Σ_k p(x_n|z_k) p(z_k) / q(z_k|x_n),

with K = --eval_k samples z_k ~ q(z|x_n) (chunked, jitted logsumexp), the
ELBO and IWAE_k from the same samples, the number of active units
(Cov_x(E_q[z_u|x]) > 1e-2), the KL per latent dimension (latents.json),
and PNGs of prior samples, reconstructions and inpainting. Writes
results.json/.csv, config.json and timing.json.

  python launch.py --experiment=evaluate_vae --checkpoint_dir=runs/vae_mnist \
      --tfds_data_dir=/work/shared/data/tensorflow_datasets
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

from vae import cli
from vae import results

_CHECKPOINT_DIR = flags.DEFINE_string(
    'checkpoint_dir', None, 'Output folder of a train_vae run (holding '
    'checkpoints/).')
_STEP = flags.DEFINE_integer(
    'step', None, 'Checkpoint step to evaluate (default: the latest).',
    lower_bound=0)
_SPLIT = flags.DEFINE_enum('split', 'test', ['test', 'validation'],
                           'Images to evaluate on.')
_TFDS_DATA_DIR = flags.DEFINE_string(
    'tfds_data_dir', None, 'TFDS data dir with the dataset prepared '
    '(default: env VAE_TFDS_DATA_DIR).')
_MANUAL_DIR = flags.DEFINE_string(
    'manual_dir', None, 'Folder with the raw files for TFDS to prepare '
    '(default: env VAE_MANUAL_DIR).')
_DATA_CACHE_DIR = flags.DEFINE_string(
    'data_cache_dir', None, 'Folder of a numpy cache <name>.npz of the '
    'dataset (default: env VAE_DATA_CACHE).')
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
    'num_eval', None, 'Evaluate on the first num_eval images (default: all).',
    lower_bound=1)
_PICTURES = flags.DEFINE_bool('pictures', True,
                              'Write prior samples, reconstructions and '
                              'inpainting PNGs.')
cli.define_common_flags()
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    sys.exit(f'evaluate_vae: unexpected arguments {argv[1:]}')
  if not _CHECKPOINT_DIR.value:
    sys.exit('evaluate_vae: --checkpoint_dir (a train_vae output folder) is '
             'required.')
  from vae import data  # pylint: disable=g-import-not-at-top
  from vae import evaluation  # pylint: disable=g-import-not-at-top
  from vae import training  # pylint: disable=g-import-not-at-top
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # TFDS and orbax log at INFO.
  run_dir = os.path.abspath(os.path.expanduser(_CHECKPOINT_DIR.value))
  try:
    config, model, params, step = training.load_params(run_dir, _STEP.value)
    iwae_ks = evaluation.iwae_ks_for(_EVAL_K.value, _EVAL_CHUNK_SIZE.value,
                                     _EVAL_IWAE_KS.value, config.num_samples)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f'evaluate_vae: {e}')
  out = cli.output_dir('evaluate_vae')
  results.write_config(out, FLAGS, FLAGS.seed)
  try:
    dataset = data.load_dataset(
        config.dataset, data_dir=_TFDS_DATA_DIR.value,
        manual_dir=_MANUAL_DIR.value, cache_dir=_DATA_CACHE_DIR.value,
        num_train=config.num_train, seed=config.seed)
  except data.DataNotFoundError as e:
    sys.exit(f'evaluate_vae: {e}')
  print(f'evaluate_vae: {run_dir} step {step} ({config.dataset}, '
        f'{config.objective}/{config.estimator} k={config.num_samples}); '
        f'output in {out}', flush=True)
  summary, timing = evaluation.evaluate(
      model, params, dataset, FLAGS.seed, eval_k=_EVAL_K.value,
      iwae_ks=iwae_ks, batch_size=_EVAL_BATCH_SIZE.value,
      chunk_size=_EVAL_CHUNK_SIZE.value, num_eval=_NUM_EVAL.value,
      split=_SPLIT.value, output_dir=out, pictures=_PICTURES.value,
      log=lambda line: print(line, flush=True))
  records = [training.result_record(config, step, summary)]
  results.write_results(out, records)
  results.write_json(os.path.join(out, 'timing.json'), timing)
  print(results.format_table(records, columns=(
      'dataset', 'objective', 'estimator', 'k', 'steps', 'test_nll',
      'test_nll_stderr', 'test_elbo', 'active_units', 'eval_k')))
  print(f'Results in {out}')


if __name__ == '__main__':
  app.run(main)
