"""Bad inputs to every experiment are refused in one line, before any work.

Issue 13's list of inputs that were accepted and wrong, or that crashed,
hung or printed usage: each must exit with code 2 and one line on stderr
naming the setting, print no traceback, create no run folder and leave an
earlier run untouched.
"""

import importlib
import os

import pytest

from experiments.common import launch
from experiments.common import outputs
from experiments.common import runner
from vae import config as cfg

BIG = str(10**12)
CASES = [
    ('gaussian_gradients', ['--mus=nan'], 'mus'),
    ('gaussian_gradients', [f'--num_draws={BIG}'], 'num_draws'),
    ('gaussian_gradients', ['--sample_counts=0'], 'sample_counts'),
    ('discrete_latents', ['--batch_size=0'], 'batch_size'),
    ('discrete_latents', ['--latent_dim=-3'], 'latent_dim'),
    ('discrete_latents', ['--learning_rate=-1'], 'learning_rate'),
    ('discrete_latents', ['--temperature=0'], 'temperature'),
    ('linear_gaussian', ['--iwae_ks=0,1'], 'iwae_ks'),
    ('linear_gaussian', ['--noise_scale=0'], 'noise_scale'),
    ('linear_gaussian', ['--train_size=0'], 'train_size'),
    ('mixture_of_gaussians', ['--train_points=1'], 'train_points'),
    ('mixture_of_gaussians', ['--em_components=0'], 'em_components'),
    ('intractability', ['--latent_dims=20', '--observed_dim=16'],
     'latent_dims'),
    ('intractability', ['--max_log2_k=60'], 'max_log2_k'),
    ('amortization_gap', ['--encoder_steps=-5'], 'encoder_steps'),
    ('train_vae', ['--batch_size=100000'], 'batch_size'),
    ('train_vae', [f'--eval_k={BIG}'], 'eval_k'),
    ('train_vae', [f'--num_train={10**8}'], 'num_train'),
    ('train_vae', [f'--latent_dim={10**8}'], 'latent_dim'),
    ('train_vae', ['--objective=elbo', '--estimator=dreg'], 'dreg'),
    ('evaluate_vae', [], 'checkpoint_dir'),
    ('vae_gradients', ['--elbo_estimators=score_rloo', '--sample_counts=1'],
     'score_rloo'),
    ('vae_gradients', ['--num_draws=1'], 'num_draws'),
    ('minibatch_noise', ['--num_draws=1'], 'num_draws'),
]


def _files(path):
  out = {}
  for root, _, names in os.walk(path):
    for name in names:
      with open(os.path.join(root, name), 'rb') as f:
        out[os.path.relpath(os.path.join(root, name), path)] = f.read()
  return out


@pytest.fixture(name='earlier')
def _earlier(tmp_path):
  """An earlier run's folder, which no refused command may touch."""
  earlier = tmp_path / 'earlier'
  earlier.mkdir()
  outputs.write_marker(str(earlier), 'x')
  (earlier / 'config.json').write_text('{"experiment": "x", "settings": {}}')
  (earlier / 'results.json').write_text('[]')
  return earlier


@pytest.mark.parametrize('experiment, args, setting', CASES)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, earlier, experiment,
                                      args, setting):
  before = _files(tmp_path)
  out = tmp_path / 'run'
  rc = launch.cli(['launch.py', f'--experiment={experiment}',
                   f'--output_dir={out}', *args])
  err = capsys.readouterr().err
  assert rc == 2, err
  assert err.count('\n') == 1 and err.startswith('launch.py: '), err
  assert setting in err and 'Traceback' not in err, err
  assert not out.exists()
  assert _files(tmp_path) == before
  del earlier


def test_an_earlier_run_is_not_overwritten(capsys, earlier):
  before = _files(earlier)
  rc = launch.cli(['launch.py', '--experiment=gaussian_gradients',
                   f'--output_dir={earlier}'])
  err = capsys.readouterr().err
  assert rc == 2 and 'holds a run of x' in err and err.count('\n') == 1
  assert _files(earlier) == before


def test_a_read_only_output_dir_is_refused(tmp_path, capsys, monkeypatch):
  parent = tmp_path / 'ro'
  parent.mkdir()
  parent.chmod(0o500)
  if os.access(parent, os.W_OK):  # Root writes anywhere: simulate it.
    access = os.access
    monkeypatch.setattr(os, 'access', lambda p, mode: False if str(p) == str(
        parent) else access(p, mode))
  try:
    rc = launch.cli(['launch.py', f'--output_dir={parent / "run"}'])
    err = capsys.readouterr().err
    assert rc == 2 and 'not writable' in err and err.count('\n') == 1
    assert not (parent / 'run').exists()
  finally:
    parent.chmod(0o700)


@pytest.mark.parametrize('experiment', runner.names())
def test_every_setting_declares_a_constraint(experiment):
  module = importlib.import_module(f'experiments.{experiment}')
  for path, owner, field in cfg.leaves(module.Config):
    spec = cfg.spec(field)
    elem, _, _ = cfg.value_type(owner, field)
    assert elem is bool or spec.describe() != 'any', path
    assert spec.help, path


CHECKPOINT_READERS = ('evaluate_vae', 'mnist_gaps', 'mnist_intractability')
BAD_CONFIGS = {'invalid': b'{"experiment": "train_vae", ',
               'binary': b'\x89PNG\r\n\x1a\n\x00\xff',
               'empty': b'', 'list': b'["train_vae"]'}


@pytest.mark.parametrize('experiment', CHECKPOINT_READERS)
@pytest.mark.parametrize('kind', sorted(BAD_CONFIGS))
@pytest.mark.parametrize('marked', [False, True])
def test_a_checkpoint_dir_whose_config_json_cannot_be_read(
    tmp_path, capsys, experiment, kind, marked):
  # Issue 22, item 6: evaluate_vae on such a folder was a traceback.
  trained = tmp_path / 'trained'
  trained.mkdir()
  if marked:
    outputs.write_marker(str(trained), 'train_vae')
  (trained / 'config.json').write_bytes(BAD_CONFIGS[kind])
  out = tmp_path / 'run'
  rc = launch.cli(['launch.py', f'--experiment={experiment}',
                   f'--checkpoint_dir={trained}', f'--output_dir={out}'])
  err = capsys.readouterr().err
  assert rc == 2 and err.count('\n') == 1, err
  assert 'checkpoint_dir' in err and 'config.json' in err, err
  assert not out.exists()


@pytest.mark.parametrize('experiment', CHECKPOINT_READERS)
def test_a_checkpoint_dir_without_checkpoints_leaves_no_folder(
    tmp_path, capsys, experiment):
  # Issue 22, item 9: a missing checkpoint left a folder with config.json.
  from experiments import train_vae  # pylint: disable=import-outside-toplevel
  trained = tmp_path / 'trained'
  trained.mkdir()
  outputs.write_marker(str(trained), 'train_vae')
  outputs.write_config(str(trained), 'train_vae', train_vae.Config(), 0)
  out = tmp_path / 'run'
  rc = launch.cli(['launch.py', f'--experiment={experiment}',
                   f'--checkpoint_dir={trained}', f'--output_dir={out}'])
  err = capsys.readouterr().err
  assert rc == 2 and err.count('\n') == 1, err
  assert 'holds no checkpoint (no checkpoints/step_N)' in err
  assert not out.exists()
