"""jax.distributed: when it is initialized (faked Slurm environments), and a
real 2-process training run with a checkpoint and a resume on CPU (2
simulated devices each, Gloo collectives)."""

import json
import os
import re
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from experiments.common import distributed
from tests import test_devices
from vae import data
from vae import optim
from vae import train
from vae.models import image_vae

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLURM = {'SLURM_JOB_ID': '7', 'SLURM_PROCID': '0'}


@pytest.mark.parametrize('env,expected', [
    ({}, False),                                           # Not Slurm.
    ({**SLURM, 'SLURM_NTASKS': '1'}, False),               # One task.
    ({**SLURM, 'SLURM_NTASKS': '8'}, True),                # srun -n 8.
    ({**SLURM, 'SLURM_NTASKS': '8', 'SLURM_STEP_NUM_TASKS': '1'}, False),
    ({**SLURM, 'SLURM_STEP_NUM_TASKS': '2'}, True),        # submitit, 2 tasks.
    ({'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '8'}, False),   # The batch script.
    ({**SLURM, 'SLURM_NTASKS': '8', 'VAE_DISTRIBUTED': '0'}, False),
    ({'VAE_DISTRIBUTED': '1'}, True),                      # E.g. Open MPI.
])
def test_initialize_only_for_several_tasks(env, expected):
  assert distributed.wanted(env) is expected
  calls = []
  distributed._done = False  # pylint: disable=protected-access
  try:
    assert distributed.initialize(env, lambda: calls.append(1)) is expected
    assert distributed.initialize(env, lambda: calls.append(1)) is expected
  finally:
    distributed._done = False  # pylint: disable=protected-access
  assert calls == [1] * expected  # Once at most.


def test_a_bad_switch_is_one_line():
  with pytest.raises(ValueError, match=r"VAE_DISTRIBUTED='yes': use 1"):
    distributed.wanted({'VAE_DISTRIBUTED': 'yes'})


def test_process_folders():
  assert distributed.process_folder('runs/a', 0) == 'runs/a'
  assert distributed.process_folder('runs/a/', 3) == 'runs/a.process3'


_PROCESS_SCRIPT = '''
    import json, os
    import jax
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(f'localhost:{PORT}', num_processes=2,
                               process_id=PID)
    import numpy as np
    from tests import test_distributed as t
    from vae import data, optim, train
    assert jax.device_count() == 4 and jax.local_device_count() == 2
    dataset = data.Dataset('mnist', t.IMAGES, t.IMAGES[:20], t.IMAGES[:20],
                           'fixed')
    config = train.TrainConfig(batch_size=20, epochs=2, devices=0)
    folder = os.path.join(FOLDER, f'process{PID}')
    quiet = lambda _: None
    first = train.train(t.MODEL, dataset, optim.OptimizerConfig(), config,
                        0, folder, log=quiet, stop_after_epochs=1)
    result = train.train(t.MODEL, dataset, optim.OptimizerConfig(), config,
                         0, folder, log=quiet)  # Resumes at epoch 1.
    np.savez(OUT, *[np.asarray(p) for p in jax.tree.leaves(
        result.state.params)])
    print('RESULT ' + json.dumps({
        'resumed_from': result.resumed_from,
        'bounds': [r['train_bound'] for r in first.history + result.history],
        'checkpoints': sorted(os.listdir(folder)) if os.path.isdir(folder)
                       else []}))
'''
MODEL = image_vae.make(image_vae.ModelConfig(hidden_sizes=(16,),
                                             latent_dim=3))
IMAGES = (np.random.default_rng(0).uniform(0, 1, (200, 784)) > 0.7).astype(
    np.float32)
def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_train_as_one_device(tmp_path):
  """2 processes x 2 devices (one jax.distributed job; devices=0: a mesh of
  all 4): `vae.train.train` for 1 epoch, a checkpoint (process 0 writes it),
  a second call that resumes (process 0 reads it and broadcasts it), epoch
  2: the bounds and parameters of one device in this process (tolerances
  of tests/test_devices.py)."""
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                      ' --xla_force_host_platform_device_count=2').strip()
  procs = [subprocess.Popen(
      [sys.executable, '-c', textwrap.dedent(_PROCESS_SCRIPT).replace(
          'PORT', str(port)).replace('PID', str(i)).replace(
              'OUT', repr(str(tmp_path / f'params{i}.npz'))).replace(
                  'FOLDER', repr(str(tmp_path)))],
      env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  outs = []
  try:
    for p in procs:
      stdout, stderr = p.communicate(timeout=600)
      assert p.returncode == 0, stderr[-3000:]
      line = [ln for ln in stdout.splitlines() if ln.startswith('RESULT ')]
      outs.append(json.loads(line[-1][len('RESULT '):]))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  dataset = data.Dataset('mnist', IMAGES, IMAGES[:20], IMAGES[:20], 'fixed')
  one = train.train(MODEL, dataset, optim.OptimizerConfig(),
                    train.TrainConfig(batch_size=20, epochs=2), 0,
                    str(tmp_path / 'one'), log=lambda _: None)
  bounds = [r['train_bound'] for r in one.history]
  params = [np.asarray(p) for p in jax.tree.leaves(one.state.params)]
  for i, out in enumerate(outs):
    assert out['resumed_from'] == 10
    np.testing.assert_allclose(out['bounds'], bounds,
                               rtol=test_devices.BOUND_RTOL)
    with np.load(tmp_path / f'params{i}.npz') as saved:
      theirs = [saved[f'arr_{j}'] for j in range(len(params))]
    assert max(float(np.max(np.abs(u - v)))
               for u, v in zip(theirs, params)) < test_devices.PARAM_ATOL
  assert outs[0]['checkpoints'] == ['step_10', 'step_20']
  assert outs[1]['checkpoints'] == []  # Process 1 writes none.


def test_experiments_refuse_devices_in_one_line():
  """More devices than there are: SystemExit with one line, naming the
  experiment (train_vae through `check_training`, the variance experiments
  through `data_mesh`)."""
  n = jax.device_count()
  line = re.escape(f'devices={n + 1}: only {n} {jax.devices()[0].platform} '
                   'device(s) are available.')
  with pytest.raises(SystemExit, match=f'^vae_gradients: {line}'):
    distributed.data_mesh('vae_gradients', n + 1)
  with pytest.raises(SystemExit, match=f'^train_vae: {line}'):
    distributed.check_training('train_vae', train.TrainConfig(
        batch_size=(n + 1) * 4, devices=n + 1))
  assert distributed.data_mesh('x', 1) is None


def test_the_runner_imports_without_starting_jax():
  """run_point calls jax.distributed.initialize() first, which must come
  before JAX's backend starts: importing the runner must not start it."""
  proc = subprocess.run([sys.executable, '-c', textwrap.dedent('''
      from experiments.common import runner
      from jax._src import xla_bridge
      print('STARTED', bool(xla_bridge._backends))
  ''')], env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'STARTED False' in proc.stdout


def test_the_launcher_initializes_first(monkeypatch, capsys):
  """launch.py (a task of `srun python launch.py ...`) calls
  jax.distributed.initialize() when wanted, before loading an experiment
  (a sweep point's `experiments.run_point` does the same)."""
  from experiments.common import launch  # pylint: disable=g-import-not-at-top
  calls = []
  monkeypatch.setattr(jax.distributed, 'initialize',
                      lambda: calls.append('init'))
  monkeypatch.setattr(distributed, '_done', False)
  monkeypatch.setenv('VAE_DISTRIBUTED', '1')
  assert launch.cli(['launch.py', '--experiment=gaussian_gradients',
                     '--dry_run']) == 0
  assert calls == ['init']
  monkeypatch.setenv('VAE_DISTRIBUTED', '0')
  monkeypatch.setattr(distributed, '_done', False)
  assert launch.cli(['launch.py', '--experiment=gaussian_gradients',
                     '--dry_run']) == 0
  assert calls == ['init']  # Not wanted: not called.
  capsys.readouterr()
