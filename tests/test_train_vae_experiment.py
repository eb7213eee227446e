"""train_vae and evaluate_vae end to end: outputs, refusals, NaN stop, and
SIGTERM + SIGKILL through launch.py, resumed to bitwise-equal parameters."""

import csv
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from experiments import evaluate_vae
from experiments import train_vae
from experiments.common import outputs
from experiments.common import runner
from vae import checkpoint
from vae import data
from vae import distributions as dists
from vae import evaluate
from vae import optim
from vae import train
from vae.models import flexible_vae
from vae.models import image_vae

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL = evaluate.EvalConfig(eval_k=100, eval_chunk_size=50, num_eval=20,
                           eval_iwae_ks=(1, 5))
TINY = train_vae.Config(
    data=data.DataConfig(dataset='synthetic', num_train=200),
    model=image_vae.ModelConfig(hidden_sizes=(8,), latent_dim=2),
    training=train.TrainConfig(batch_size=20, epochs=10), evaluation=EVAL)
FLAGS = ['--dataset=synthetic', '--num_train=200', '--hidden_sizes=8', '--latent_dim=2',
         '--batch_size=20', '--epochs=10', '--eval_k=100',
         '--eval_chunk_size=50', '--num_eval=20', '--eval_iwae_ks=1,5']


def _run(name, config, directory):
  # JAX's persistent compilation cache (the launcher's default): the
  # launch.py subprocesses below load what this process compiled.
  return runner.run_point(name, config, 0, str(directory))


def _params(directory):
  return evaluate_vae.load_run(str(directory), None)[3]


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  out = tmp_path_factory.mktemp('train')
  return out, _run('train_vae', TINY, out)


def test_outputs(tiny_run):
  out, records = tiny_run
  (record,) = records
  assert record == json.loads((out / 'results.json').read_text())[0]
  assert (record['dataset'], record['k'], record['steps']) == (
      'synthetic', 1, 100)
  assert record['test_elbo'] <= record['test_iwae_5'] <= (
      -record['test_nll'] + 1e-3)
  with open(out / 'metrics.csv') as f:
    rows = list(csv.DictReader(f))
  assert [int(r['step']) for r in rows] == list(range(10, 101, 10))
  assert float(rows[-1]['train_bound']) == record['final_train_bound']
  assert checkpoint.list_steps(str(out / 'checkpoints')) == [80, 90, 100]
  for name in ('config.json', 'timing.json', 'latents.json',
               'prior_samples.png', 'reconstructions.png', 'inpainting.png'):
    assert (out / name).exists(), name
  assert os.listdir(out / 'tensorboard')
  latents = json.loads((out / 'latents.json').read_text())
  assert len(latents['activity']) == 2
  # One value per evaluation image, the summary's mean over them.
  per_image = json.loads((out / 'per_image.json').read_text())
  assert {len(v) for v in per_image.values()} == {record['num_eval']}
  np.testing.assert_allclose(-np.mean(per_image['log_px']),
                             record['test_nll'], rtol=1e-6)
  assert np.all(np.asarray(per_image['elbo']) <=
                np.asarray(per_image['log_px']) + 1e-3)


def test_evaluate_vae_reproduces_the_final_evaluation(tiny_run, tmp_path):
  out, (record,) = tiny_run
  config = evaluate_vae.Config(checkpoint_dir=str(out), evaluation=dataclasses
                               .replace(EVAL, pictures=False))
  (again,) = _run('evaluate_vae', config, tmp_path)
  for key in ('test_nll', 'test_elbo', 'test_iwae_5', 'active_units',
              'steps', 'dataset', 'hidden_sizes'):
    assert again[key] == record[key], key
  assert (json.loads((tmp_path / 'per_image.json').read_text()) ==
          json.loads((out / 'per_image.json').read_text()))
  with pytest.raises(ValueError, match='not a train_vae run folder'):
    dataclasses.replace(config, checkpoint_dir=str(tmp_path))


def test_evaluate_vae_with_another_seed_says_so(tiny_run, tmp_path, capsys):
  out, (record,) = tiny_run
  config = evaluate_vae.Config(checkpoint_dir=str(out), evaluation=dataclasses
                               .replace(EVAL, pictures=False))
  (again,) = runner.run_point('evaluate_vae', config, 1, str(tmp_path))
  assert ('--seed=1, the run was trained with seed 0: other samples than '
          "train_vae's final evaluation (--seed=0 repeats it exactly)."
          in capsys.readouterr().out)
  assert again['test_nll'] != record['test_nll']  # Other samples indeed.


@pytest.mark.parametrize('families, objective, encoder', [
    (flexible_vae.FamilyConfig(posterior='full'), 'elbo',
     dists.MultivariateNormal),
    (flexible_vae.FamilyConfig(posterior='iaf', prior='vamp',
                               num_components=3), 'elbo_mc_kl',
     dists.InverseAutoregressiveFlow)])
def test_evaluate_vae_restores_the_trained_families(families, objective,
                                                    encoder, tmp_path):
  # A run of a flexible model is restored as that model (its flow, prior
  # and covariance heads), not as the MLP VAE with part of its parameters:
  # evaluate_vae then reproduces the final evaluation exactly.
  config = dataclasses.replace(
      TINY, families=families, tensorboard=False, training=dataclasses.replace(
          TINY.training, epochs=2, objective=objective),
      evaluation=dataclasses.replace(EVAL, pictures=False))
  (record,) = _run('train_vae', config, tmp_path / 'train')
  trained, _, model, params, _ = evaluate_vae.load_run(
      str(tmp_path / 'train'), None)
  assert trained.families == families
  assert isinstance(model.encoder(params, np.zeros((1, 784), np.float32)),
                    encoder)
  (again,) = _run('evaluate_vae', evaluate_vae.Config(
      checkpoint_dir=str(tmp_path / 'train'), evaluation=config.evaluation),
                  tmp_path / 'eval')
  for key in ('test_nll', 'test_elbo', 'test_iwae_5'):
    assert again[key] == record[key], key
  assert (json.loads((tmp_path / 'eval' / 'per_image.json').read_text()) ==
          json.loads((tmp_path / 'train' / 'per_image.json').read_text()))


@pytest.mark.parametrize('changes, message', [
    (dict(training=train.TrainConfig(batch_size=300)),
     'batch_size: 300 > the 200 training images of synthetic.'),
    (dict(training=train.TrainConfig(num_samples=10_000, batch_size=10**5),
          data=data.DataConfig(dataset='synthetic', num_train=10**5)),
     'a training step needs'),
])
def test_refused_before_any_work(changes, message):
  with pytest.raises(ValueError) as info:
    dataclasses.replace(TINY, **changes)
  assert message in str(info.value) and '\n' not in str(info.value)


def test_nan_stops_the_run_in_one_line(tmp_path):
  config = dataclasses.replace(TINY, optimizer=optim.OptimizerConfig(
      optimizer='sgd', learning_rate=10.0))
  with pytest.raises(SystemExit) as info:
    _run('train_vae', config, tmp_path)
  message = str(info.value)
  assert '\n' not in message and 'NaN/Inf in epoch 1' in message
  assert checkpoint.list_steps(str(tmp_path / 'checkpoints')) == [0]
  assert not (tmp_path / 'results.json').exists()


def _launch(args, env):
  return subprocess.Popen(
      [sys.executable, 'launch.py', '--experiment=train_vae', *FLAGS, *args],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True)


def _signal_after_a_new_checkpoint(proc, directory, sig, timeout=240):
  before = checkpoint.latest_step(directory) or 0
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if (checkpoint.latest_step(directory) or 0) > before:
      proc.send_signal(sig)
      break
    time.sleep(0.01)
  out, err = proc.communicate(timeout=120)
  return proc.returncode, out, err


def test_sigterm_then_sigkill_then_resume_is_bitwise_equal(tiny_run,
                                                          tmp_path):
  reference, _ = tiny_run
  out = tmp_path / 'run'
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  args = [f'--output_dir={out}', '--nopictures', '--notensorboard']
  rc, stdout, stderr = _signal_after_a_new_checkpoint(
      _launch(args, env), str(out / 'checkpoints'), signal.SIGTERM)
  assert rc == 130, stderr[-2000:]
  assert stderr.strip().splitlines()[-1] == 'launch.py: stopped by SIGTERM/SIGINT'
  assert 'interrupted: step' in stdout
  stopped_at = checkpoint.latest_step(str(out / 'checkpoints'))
  assert 0 < stopped_at < 100
  rc, stdout, stderr = _signal_after_a_new_checkpoint(
      _launch(args, env), str(out / 'checkpoints'), signal.SIGKILL)
  assert rc == -signal.SIGKILL, stderr[-2000:]
  assert f'at step {stopped_at}' in stdout
  config = dataclasses.replace(TINY, evaluation=dataclasses.replace(
      EVAL, pictures=False), tensorboard=False)
  (record,) = _run('train_vae', config, out)
  assert record['steps'] == 100
  for a, b in zip(jax.tree.leaves(_params(out)),
                  jax.tree.leaves(_params(reference))):
    np.testing.assert_array_equal(a, b)
  with open(out / 'metrics.csv') as f:
    assert [int(r['step']) for r in csv.DictReader(f)] == list(
        range(10, 101, 10))


def _read_only(folder):
  """Makes `folder` unwritable, as root too (chattr +i); False if it can't."""
  if os.geteuid() == 0:
    if subprocess.run(['chattr', '+i', str(folder)],
                      capture_output=True).returncode:
      return False
  else:
    os.chmod(folder, 0o555)
  try:
    (folder / 'probe').mkdir()
  except OSError:
    return True
  (folder / 'probe').rmdir()
  _writable(folder)
  return False


def _writable(folder):
  if os.geteuid() == 0:
    subprocess.run(['chattr', '-i', str(folder)], capture_output=True)
  os.chmod(folder, 0o755)


def test_a_failed_checkpoint_write_exits_in_one_line(tiny_run, tmp_path):
  reference, _ = tiny_run
  out = tmp_path / 'run'
  config = dataclasses.replace(TINY, training=dataclasses.replace(
      TINY.training, epochs=1), evaluate=False, tensorboard=False)
  _run('train_vae', config, out)
  folder = out / 'checkpoints'
  assert checkpoint.list_steps(str(folder)) == [10]
  if not _read_only(folder):
    pytest.skip('cannot make a folder read-only here (chattr +i)')
  try:
    start = time.time()
    done = subprocess.run(
        [sys.executable, 'launch.py', '--experiment=train_vae', *FLAGS,
         '--epochs=2', '--noevaluate', '--notensorboard',
         f'--output_dir={out}'], cwd=REPO, capture_output=True, text=True,
        timeout=60, env=dict(os.environ, JAX_PLATFORMS='cpu'))
    elapsed = time.time() - start
  finally:
    _writable(folder)
  assert elapsed < 30, elapsed
  assert done.returncode == 1, done.stderr[-2000:]
  (line,) = done.stderr.splitlines()
  assert line.startswith(f'train_vae: cannot write checkpoint {folder}'
                         f'{os.sep}step_20: ')
  assert checkpoint.list_steps(str(folder)) == [10]
  tree = checkpoint.restore(str(folder), 10, {'step': np.int32(0)})
  assert int(tree['step']) == 10


def _finished_copy(reference, out):
  shutil.copytree(reference, out, ignore=shutil.ignore_patterns('.lock'))
  return out


def test_fewer_epochs_than_the_checkpoint_is_refused(tiny_run, tmp_path):
  out = _finished_copy(tiny_run[0], tmp_path / 'run')
  before = (out / 'config.json').read_bytes(), (out / 'results.json'
                                                ).read_bytes()
  config = dataclasses.replace(TINY, training=dataclasses.replace(
      TINY.training, epochs=3))
  with pytest.raises(outputs.RunDirError) as info:
    _run('train_vae', config, out)
  message = str(info.value)
  assert '\n' not in message
  assert message == (f'train_vae: {out / "checkpoints"} holds a model trained '
                     'for 10 epochs (step 100), more than --epochs=3; rerun '
                     'with --epochs=10 or more (it is done), or use another '
                     '--output_dir.')
  assert before == ((out / 'config.json').read_bytes(),
                    (out / 'results.json').read_bytes())
  with pytest.raises(train.ResumeError, match='trained for 10 epochs'):
    train.check_resume(100, 10, 3, 'x')


@pytest.mark.parametrize('content', ['garbage\x00,,\nzz', 'a,b\n1,2\n',
                                     'step,epoch\nx,1\n'])
def test_a_garbage_metrics_csv_is_one_line(tiny_run, tmp_path, content):
  out = _finished_copy(tiny_run[0], tmp_path / 'run')
  (out / 'metrics.csv').write_text(content)
  with pytest.raises(outputs.RunDirError) as info:
    _run('train_vae', TINY, out)
  message = str(info.value)
  assert '\n' not in message
  assert message.startswith(f'train_vae: {out / "metrics.csv"} is not a '
                            'metrics log') or message.startswith(
                                f'train_vae: cannot read {out / "metrics.csv"}')
  assert message.endswith('delete it (its rows are lost; the run resumes '
                          'from its checkpoint) or restore it.')


def test_all_corrupt_checkpoints_are_one_line_on_stderr(tiny_run, tmp_path):
  out = _finished_copy(tiny_run[0], tmp_path / 'run')
  (out / 'results.json').unlink()
  for step in checkpoint.list_steps(str(out / 'checkpoints')):
    folder = checkpoint.step_dir(str(out / 'checkpoints'), step)
    files = [os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs]
    path = max(files, key=os.path.getsize)
    os.truncate(path, os.path.getsize(path) // 2)
  done = subprocess.run(
      [sys.executable, 'launch.py', '--experiment=train_vae', *FLAGS,
       f'--output_dir={out}'], cwd=REPO, capture_output=True,
      text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert done.returncode == 1
  (line,) = done.stderr.splitlines()
  assert line.startswith(f'train_vae: no intact checkpoint in '
                         f'{out / "checkpoints"}: all 3 are corrupt')
  assert checkpoint.list_steps(str(out / 'checkpoints')) == [80, 90, 100]


@pytest.mark.skipif(not os.environ.get(data.ENV_TFDS_DATA_DIR),
                    reason=f'set {data.ENV_TFDS_DATA_DIR} for real data')
def test_real_binarized_mnist_trains(tmp_path):
  config = train_vae.Config(
      data=data.DataConfig(dataset='binarized_mnist', num_train=2000),
      model=image_vae.ModelConfig(hidden_sizes=(100,), latent_dim=10),
      training=train.TrainConfig(epochs=2),
      evaluation=dataclasses.replace(EVAL, pictures=False),
      tensorboard=False)
  (record,) = _run('train_vae', config, tmp_path)
  # 40 steps: from -543 (log 2 per pixel) towards 0.
  assert -250 < record['final_train_bound'] < -150
  assert record['test_elbo'] < -record['test_nll'] < -80
