"""GPUs in local sweeps: each point sees one GPU of --local_gpus, spread
over them (the least busy first), or none with --local_gpus=none; GPUs are
found without JAX (CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`)."""

import json
import os
import subprocess
import sys
import types

import pytest

from experiments.common import launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPU = '--experiment=tests.gpu_experiment'

NVIDIA_SMI = """\
GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0a1b)
GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-2c3d)
  MIG 1g.10gb     Device  0: (UUID: MIG-4e5f)
GPU 2: NVIDIA H100 80GB HBM3 (UUID: GPU-6a7b)
"""


@pytest.mark.parametrize('visible, gpus', [
    ('3,5', [3, 5]), (' 0 , 1 ', [0, 1]), ('', []), ('-1', []),
    ('0', [0])])
def test_cuda_visible_devices_wins(monkeypatch, visible, gpus):
  monkeypatch.setenv('CUDA_VISIBLE_DEVICES', visible)
  monkeypatch.setattr(launch.shutil, 'which', lambda _: pytest.fail(
      'nvidia-smi asked though CUDA_VISIBLE_DEVICES is set'))
  assert launch.detect_gpus() == gpus


def test_a_gpu_named_by_uuid_is_refused_in_one_line(monkeypatch):
  monkeypatch.setenv('CUDA_VISIBLE_DEVICES', 'GPU-0a1b,GPU-2c3d')
  with pytest.raises(launch.UsageError, match='--local_gpus=0,1'):
    launch.detect_gpus()


def test_nvidia_smi_lists_the_gpus(monkeypatch):
  monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
  monkeypatch.setattr(launch.shutil, 'which', lambda name: f'/bin/{name}')
  calls = []

  def run(args, **kwargs):
    calls.append(args)
    return types.SimpleNamespace(stdout=NVIDIA_SMI, returncode=0)
  monkeypatch.setattr(launch.subprocess, 'run', run)
  assert launch.detect_gpus() == [0, 1, 2]  # Not the MIG line.
  assert calls == [['nvidia-smi', '-L']]


def test_no_nvidia_smi_or_a_failing_one_is_no_gpu(monkeypatch):
  monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
  monkeypatch.setattr(launch.shutil, 'which', lambda _: None)
  assert launch.detect_gpus() == []
  monkeypatch.setattr(launch.shutil, 'which', lambda name: f'/bin/{name}')

  def fail(*args, **kwargs):
    raise subprocess.CalledProcessError(9, 'nvidia-smi')
  monkeypatch.setattr(launch.subprocess, 'run', fail)
  assert launch.detect_gpus() == []


def test_local_gpus_values(monkeypatch):
  monkeypatch.setattr(launch, 'detect_gpus', lambda: [0, 1, 2, 3])
  assert launch.local_gpus('auto') == [0, 1, 2, 3]
  assert launch.local_gpus('none') == []
  assert launch.local_gpus('3,1') == [3, 1]
  for bad in ('0,0', 'x', '0,', 'cpu', '-1'):
    with pytest.raises(launch.UsageError, match=f'--local_gpus={bad}: '):
      launch.local_gpus(bad)


def test_a_bad_local_gpus_is_one_line_exit_2(tmp_path, capsys):
  rc = launch.cli(['launch.py', GPU, '--local_gpus=gpu0',
                   f'--output_dir={tmp_path / "s"}', '--sweep=value=1,2'])
  _, err = capsys.readouterr()
  assert rc == 2 and err == ('launch.py: --local_gpus=gpu0: expected auto, '
                             'none or distinct GPU indices such as 0,1,3.\n')
  assert not (tmp_path / 's').exists()


class _Job:
  """A submitit job that is done after `polls` calls of done()."""

  def __init__(self, polls):
    self.polls = polls
    self.paths = types.SimpleNamespace(stderr='log')

  def done(self):
    self.polls -= 1
    return self.polls < 0

  def exception(self):
    return None

  def result(self):
    return []


class _Executor:
  """Records the parameters (and the preallocation setting) of each point."""

  def __init__(self, polls):
    self.polls, self.parameters, self.submitted = list(polls), {}, []

  def update_parameters(self, **kwargs):
    self.parameters.update(kwargs)

  def submit(self, *args):
    self.submitted.append(
        (dict(self.parameters),
         os.environ.get('XLA_PYTHON_CLIENT_PREALLOCATE')))
    return _Job(self.polls.pop(0))


def _sweep(monkeypatch, tmp_path, detected, polls, *args):
  """Runs a sweep of len(polls) points through the fake executor; returns
  [(visible_gpus or None, XLA_PYTHON_CLIENT_PREALLOCATE)] per point."""
  executor = _Executor(polls)
  monkeypatch.setattr(launch, 'detect_gpus', lambda: detected)
  monkeypatch.setattr(launch, '_executor', lambda fv, folder: executor)
  monkeypatch.setattr(launch.time, 'sleep', lambda _: None)
  monkeypatch.delenv('XLA_PYTHON_CLIENT_PREALLOCATE', raising=False)
  values = ','.join(str(i) for i in range(len(polls)))
  assert launch.cli(['launch.py', GPU, '--nocompilation_cache',
                     f'--output_dir={tmp_path / "sweep"}',
                     f'--sweep=value={values}', *args]) == 0
  assert 'XLA_PYTHON_CLIENT_PREALLOCATE' not in os.environ  # Undone.
  return [(p.get('visible_gpus') if p.get('gpus_per_node') else None, pre)
          for p, pre in executor.submitted]


def test_points_go_round_the_gpus(monkeypatch, tmp_path, capsys):
  assigned = _sweep(monkeypatch, tmp_path, [4, 6], [0] * 5, '--parallel=2')
  assert assigned == [((4,), None), ((6,), None), ((4,), None),
                      ((6,), None), ((4,), None)]
  out = capsys.readouterr().out
  assert 'sweep: 5 points, 2 at a time, one GPU each of 4,6' in out


def test_a_freed_gpu_is_used_first(monkeypatch, tmp_path):
  # Point 0 (GPU 0) runs long; point 1 (GPU 1) ends at once: points 2 and
  # then 3 take GPU 1, not the busy GPU 0.
  assigned = _sweep(monkeypatch, tmp_path, [0, 1], [50, 0, 0, 0],
                    '--parallel=2')
  assert [a for a, _ in assigned] == [(0,), (1,), (1,), (1,)]


def test_more_points_at_once_than_gpus_share_without_preallocating(
    monkeypatch, tmp_path):
  assigned = _sweep(monkeypatch, tmp_path, [0, 1], [5, 5, 5], '--parallel=3')
  assert assigned == [((0,), 'false'), ((1,), 'false'), ((0,), 'false')]


@pytest.mark.parametrize('args, detected', [
    (['--local_gpus=none'], [0, 1]), ([], [])])
def test_none_or_no_gpu_gives_the_points_no_gpu(monkeypatch, tmp_path, capsys,
                                                args, detected):
  assigned = _sweep(monkeypatch, tmp_path, detected, [0, 0], '--parallel=2',
                    *args)
  assert assigned == [(None, None), (None, None)]
  assert 'on the CPU' in capsys.readouterr().out


def test_explicit_gpus(monkeypatch, tmp_path):
  assigned = _sweep(monkeypatch, tmp_path, [0, 1, 2, 3], [0, 0, 0],
                    '--parallel=3', '--local_gpus=3,1')
  assert [a for a, _ in assigned] == [(3,), (1,), (3,)]


@pytest.mark.parametrize('local_gpus, seen', [
    ('auto', ['5', '7']), ('none', ['', ''])])
def test_a_real_local_sweep_sets_each_points_cuda_visible_devices(
    tmp_path, local_gpus, seen):
  # Subprocesses: submitit's LocalExecutor starts each point's process with
  # CUDA_VISIBLE_DEVICES; here the 'GPUs' 5 and 7 (no real GPU is used).
  out = tmp_path / 'sweep'
  proc = subprocess.run(
      [sys.executable, 'launch.py', GPU, '--nocompilation_cache',
       f'--output_dir={out}', '--parallel=2', '--sweep=value=1,2',
       f'--local_gpus={local_gpus}'],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
      env={**os.environ, 'CUDA_VISIBLE_DEVICES': '5,7'})
  assert proc.returncode == 0, proc.stderr
  with open(out / 'sweep_results.json') as f:
    records = sorted(json.load(f), key=lambda r: r['value'])
  assert [r['cuda_visible_devices'] for r in records] == seen


def test_a_gpu_by_uuid_is_refused_before_a_sweep_writes(tmp_path, capsys,
                                                        monkeypatch):
  monkeypatch.setenv('CUDA_VISIBLE_DEVICES', 'GPU-0a1b')
  rc = launch.cli(['launch.py', GPU, f'--output_dir={tmp_path / "s"}',
                   '--sweep=value=1,2'])
  assert rc == 2 and 'CUDA_VISIBLE_DEVICES=GPU-0a1b' in capsys.readouterr().err
  assert not (tmp_path / 's').exists()
  # A single run does not look for GPUs (it runs in this process).
  assert launch.cli(['launch.py', GPU, '--nocompilation_cache',
                     f'--output_dir={tmp_path / "r"}']) == 0
