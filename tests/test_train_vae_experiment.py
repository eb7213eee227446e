"""End-to-end: train_vae killed with SIGKILL and rerun, then evaluate_vae."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from vae import checkpointing
from vae import data
from vae import training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--dataset=synthetic', '--num_train=200', '--hidden_sizes=8',
        '--latent_dim=2', '--batch_size=20', '--epochs=10',
        '--notensorboard', '--nopictures', '--eval_k=100',
        '--eval_chunk_size=50', '--num_eval=20', '--eval_iwae_ks=1,5']
EVAL = ['--eval_k=100', '--eval_chunk_size=50', '--num_eval=20',
        '--eval_iwae_ks=1,5']


def _command(experiment, args):
  return [sys.executable, '-m', f'experiments.{experiment}', *args]


_CACHE = {}


def _env():
  # A persistent compilation cache shared by the subprocesses: the resumed
  # run and evaluate_vae reuse what the first run compiled.
  return dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu',
              JAX_COMPILATION_CACHE_DIR=_CACHE.get('dir', ''),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')


def _run(experiment, args):
  return subprocess.run(_command(experiment, args), cwd=REPO, env=_env(),
                        capture_output=True, text=True, timeout=300)


def _kill_after_first_checkpoint(args, directory, timeout=240):
  """Starts train_vae; SIGKILLs it once a checkpoint exists; returns rc."""
  proc = subprocess.Popen(_command('train_vae', args), cwd=REPO, env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
  deadline = time.time() + timeout
  try:
    while time.time() < deadline and proc.poll() is None:
      if checkpointing.latest_step(directory) is not None:
        proc.send_signal(signal.SIGKILL)
        break
      time.sleep(0.02)
    _, stderr = proc.communicate(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == -signal.SIGKILL, stderr[-2000:]
  return proc.returncode


@pytest.fixture(scope='module')
def killed_and_resumed(tmp_path_factory):
  out = tmp_path_factory.mktemp('train')
  _CACHE['dir'] = str(tmp_path_factory.mktemp('jax_cache'))
  args = TINY + [f'--output_dir={out}']
  _kill_after_first_checkpoint(args, training.checkpoint_dir(str(out)))
  killed_at = checkpointing.latest_step(training.checkpoint_dir(str(out)))
  assert killed_at is not None and killed_at < 100
  proc = _run('train_vae', args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return out, killed_at, proc.stdout


def test_resumed_run_equals_an_uninterrupted_one(killed_and_resumed,
                                                 tmp_path):
  out, killed_at, stdout = killed_and_resumed
  assert f'resuming from {out}' in stdout and f'at step {killed_at}' in stdout
  assert 'epoch 10/10' in stdout
  config, _, params, step = training.load_params(str(out))
  assert step == 100
  # The same run, uninterrupted, in this process.
  dataset = data.load_dataset('synthetic', num_train=200, seed=0)
  reference = training.train(config, dataset, str(tmp_path), tensorboard=False,
                             use_orbax=False, test_every=0,
                             checkpoint_every=10, log=lambda _: None)
  for a, b in zip(jax.tree.leaves(params),
                  jax.tree.leaves(reference.state.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6,
                               atol=1e-7)
  with open(out / 'metrics.csv') as f:
    steps = [int(r['step']) for r in csv.DictReader(f)]
  assert steps == list(range(10, 101, 10))


def test_outputs_and_evaluate_vae_agree(killed_and_resumed, tmp_path):
  out, _, _ = killed_and_resumed
  records = json.loads((out / 'results.json').read_text())
  assert len(records) == 1
  record = records[0]
  for key in ('dataset', 'objective', 'estimator', 'k', 'epochs', 'test_nll',
              'test_elbo', 'test_iwae_1', 'test_iwae_5', 'active_units',
              'eval_k', 'final_train_bound', 'final_test_bound'):
    assert key in record, key
  assert record['eval_k'] == 100 and record['steps'] == 100
  assert record['test_elbo'] <= -record['test_nll'] + 1e-3
  assert (out / 'config.json').exists() and (out / 'timing.json').exists()
  assert (out / 'latents.json').exists()
  # evaluate_vae on the same checkpoint: same numbers (same keys and images).
  ev = tmp_path / 'eval'
  proc = _run('evaluate_vae', [f'--checkpoint_dir={out}', '--nopictures',
                               f'--output_dir={ev}', *EVAL])
  assert proc.returncode == 0, proc.stderr[-3000:]
  ev_record = json.loads((ev / 'results.json').read_text())[0]
  for key in ('test_nll', 'test_elbo', 'test_iwae_5', 'active_units'):
    assert ev_record[key] == pytest.approx(record[key], rel=1e-6), key
  assert (ev / 'latents.json').exists() and (ev / 'config.json').exists()


def test_invalid_estimator_is_a_one_line_error(tmp_path):
  proc = _run('train_vae', ['--objective=iwae', '--estimator=score_rloo',
                            f'--output_dir={tmp_path / "x"}'])
  assert proc.returncode != 0
  lines = [l for l in proc.stderr.strip().splitlines() if l]
  assert lines[-1] == (
      "train_vae: estimator 'score_rloo' does not apply to objective 'iwae'; "
      'choose from pathwise, stl, dreg, score, vimco.')
  assert not (tmp_path / 'x').exists()
