"""Tests for `vae.launchers` (local and submitit-local launchers)."""

import os
import pathlib
import sys
import time

import pytest

from vae import launchers


def _point(tmp_path: pathlib.Path, name: str, code: str,
           **kwargs) -> launchers.Point:
  return launchers.Point(
      name=name, values={'name': name},
      command=(sys.executable, '-c', code),
      output_dir=str(tmp_path / name), **kwargs)


def test_run_point_ok_and_failed(tmp_path):
  ok = launchers.run_point(_point(
      tmp_path, 'ok', 'import os, sys; print("hello", os.environ["X"], '
      'os.getcwd()); print("err", file=sys.stderr)',
      cwd=str(tmp_path), env={'X': 'from-env'}))
  assert ok.ok and ok.returncode == 0 and ok.error is None
  log = pathlib.Path(ok.log_path).read_text()
  assert ok.log_path == str(tmp_path / 'ok' / 'log.txt')
  assert f'hello from-env {tmp_path}' in log and 'err' in log
  assert log.startswith('# command: ')

  bad = launchers.run_point(_point(
      tmp_path, 'bad', 'import sys; print("some output");'
      'sys.exit("something broke")'))
  assert bad.status == launchers.FAILED and bad.returncode == 1
  assert bad.error == 'exit code 1: something broke'

  missing = launchers.run_point(launchers.Point(
      name='missing', values={}, command=(str(tmp_path / 'no-such-exe'),),
      output_dir=str(tmp_path / 'missing')))
  assert missing.status == launchers.FAILED and missing.returncode is None
  assert 'could not run' in missing.error


def test_local_launcher_sequential_keeps_order_and_continues(tmp_path):
  points = [_point(tmp_path, f'p{i}',
                   'import sys; sys.exit(3)' if i == 1 else 'print(1)')
            for i in range(3)]
  seen = []
  got = launchers.LocalLauncher().launch(
      points, progress=lambda d, t, r: seen.append((d, t, r.point.name)))
  assert [r.point.name for r in got] == ['p0', 'p1', 'p2']
  assert [r.status for r in got] == ['ok', 'failed', 'ok']
  assert got[1].returncode == 3
  assert seen == [(1, 3, 'p0'), (2, 3, 'p1'), (3, 3, 'p2')]


def test_local_launcher_parallel_runs_points_concurrently(tmp_path):
  # Each point announces itself, then waits for the other one: both can only
  # succeed if they run at the same time.
  code = ('import os, sys, time; d = sys.argv[1]; me, other = sys.argv[2:];'
          'open(os.path.join(d, me), "w").close(); t = time.time()\n'
          'while not os.path.exists(os.path.join(d, other)):\n'
          '  time.sleep(0.02)\n'
          '  if time.time() - t > 20: sys.exit("not concurrent")\n')
  markers = tmp_path / 'markers'
  markers.mkdir()
  points = [
      launchers.Point(name=me, values={}, output_dir=str(tmp_path / me),
                      command=(sys.executable, '-c', code, str(markers), me,
                               other))
      for me, other in (('a', 'b'), ('b', 'a'))]
  got = launchers.LocalLauncher(parallel=2).launch(points)
  assert [r.status for r in got] == ['ok', 'ok'], [r.error for r in got]
  assert [r.point.name for r in got] == ['a', 'b']
  with pytest.raises(ValueError):
    launchers.LocalLauncher(parallel=0)


def crash_in_job(point: launchers.Point) -> launchers.PointResult:
  """A job function that dies inside the job (picklable by reference)."""
  if point.name == 'crash':
    raise RuntimeError('the job itself crashed')
  return launchers.run_point(point)


def test_slurm_launcher_with_submitit_local_executor(tmp_path):
  pytest.importorskip('submitit')
  points = [
      _point(tmp_path, 'good', 'print("fine")'),
      _point(tmp_path, 'bad', 'import sys; sys.exit("bad point")'),
      _point(tmp_path, 'crash', 'print("never runs")'),
  ]
  launcher = launchers.SlurmLauncher(
      folder=str(tmp_path / 'submitit'), cluster='local', poll_s=0.1,
      time_min=2, cpus=1, partition='ignored-locally', mem_gb=1,
      run_fn=crash_in_job)
  start = time.monotonic()
  seen = []
  got = launcher.launch(points, progress=lambda d, t, r: seen.append(d))
  assert time.monotonic() - start < 60
  assert seen == [1, 2, 3]
  good, bad, crash = got
  assert [r.point.name for r in got] == ['good', 'bad', 'crash']
  assert good.ok and 'fine' in pathlib.Path(good.log_path).read_text()
  assert bad.status == 'failed' and bad.returncode == 1
  assert bad.error == 'exit code 1: bad point'
  assert crash.status == 'failed' and crash.returncode is None
  assert 'the job itself crashed' in crash.error
  for r in got:
    assert r.job_id and r.job_log.startswith(str(tmp_path / 'submitit'))
    assert os.path.exists(r.job_log)
  assert 'the job itself crashed' in pathlib.Path(crash.job_log).read_text()
  assert launcher.describe()['type'] == 'slurm'


def test_slurm_launcher_without_submitit(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, 'submitit', None)
  with pytest.raises(ImportError, match='pip install submitit'):
    launchers.SlurmLauncher(folder=str(tmp_path))
