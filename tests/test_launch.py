"""Tests for launch.py and the run folder rules, on tests/fake_experiment.py."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import launch
from experiments.common import outputs

FAKE = '--experiment=tests.fake_experiment'
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(capsys, *args):
  rc = launch.cli(['launch.py', FAKE, '--nocompilation_cache', *args])
  out, err = capsys.readouterr()
  return rc, out, err


def _snapshot(path):
  """{relative path: bytes} of every file below `path`."""
  files = {}
  for root, _, names in os.walk(path):
    for name in names:
      full = os.path.join(root, name)
      with open(full, 'rb') as f:
        files[os.path.relpath(full, path)] = f.read()
  return files


def test_single_run_writes_config_and_deterministic_results(tmp_path, capsys):
  out = str(tmp_path / 'run')
  rc, stdout, _ = _cli(capsys, f'--output_dir={out}', '--copies=3',
                       '--value=2', '--seed=7')
  assert rc == 0
  assert '0 of 3 rows disagree with exact values' in stdout
  with open(os.path.join(out, 'results.json')) as f:
    records = json.load(f)
  assert [r['scaled'] for r in records] == [2.0, 4.0, 6.0]
  assert {r['seed'] for r in records} == {7}
  with open(os.path.join(out, 'config.json')) as f:
    config = json.load(f)
  assert config['experiment'] == 'tests.fake_experiment'
  assert config['settings']['copies'] == 3 and config['seed'] == 7
  before = _snapshot(out)['results.json']
  assert _cli(capsys, f'--output_dir={out}', '--copies=3', '--value=2',
              '--seed=7')[0] == 0  # The same run again: accepted.
  assert _snapshot(out)['results.json'] == before
  assert not any('.tmp' in name or name == outputs.LOCK
                 for name in os.listdir(out))


@pytest.mark.parametrize('args, message', [
    (['--copies=0'], 'copies: must be >= 1, got 0.'),
    (['--copies=x'], "flag --copies=x: invalid literal for int() with base "
     "10: 'x'"),
    (['--value=nan'], 'value: nan is not finite.'),
    (['--nope=1'], "Unknown command line flag 'nope'"),
    (['--sweep=copies'], '--sweep=copies: expected SETTING=V1,V2,...'),
    (['--sweep=copies=1,,2'], '--sweep=copies=1,,2: empty value.'),
    (['--sweep=copies=1,0'], "sweep point {'copies': '0'}: copies: must be "
     '>= 1, got 0.'),
    (['--sweep=bogus=1,2'], '--sweep=bogus=1,2: expected SETTING=V1,V2,...'),
    (['--parallel=0'], 'flag --parallel=0: 0 is not a positive integer'),
])
def test_bad_values_are_one_line_exit_2_and_write_nothing(tmp_path, capsys,
                                                          args, message):
  out = tmp_path / 'run'
  rc, _, err = _cli(capsys, f'--output_dir={out}', *args)
  assert rc == 2
  assert err.count('\n') == 1 and err.startswith('launch.py: ')
  assert message in err, err
  assert not out.exists()


def test_unknown_experiment(capsys):
  rc = launch.cli(['launch.py', '--experiment=nope'])
  err = capsys.readouterr().err
  assert rc == 2 and "unknown experiment 'nope'; choose from:" in err
  assert err.count('\n') == 1


def test_run_folder_rules(tmp_path, capsys):
  out = str(tmp_path / 'run')
  assert _cli(capsys, f'--output_dir={out}', '--copies=2')[0] == 0
  kept = _snapshot(out)
  # Other settings: refused, nothing changed.
  rc, _, err = _cli(capsys, f'--output_dir={out}', '--copies=3')
  assert rc == 2 and 'holds a tests.fake_experiment run with other settings '
  assert 'copies=2 now 3' in err and '--overwrite' in err
  assert _snapshot(out) == kept
  # A setting named RESUMABLE may change: the run resumes.
  assert _cli(capsys, f'--output_dir={out}', '--copies=2', '--epochs=5')[0] == 0
  # --overwrite replaces the run.
  assert _cli(capsys, f'--output_dir={out}', '--copies=3', '--overwrite')[0] == 0
  with open(os.path.join(out, 'results.json')) as f:
    assert len(json.load(f)) == 3
  # A folder that is not a run folder is never overwritten.
  other = tmp_path / 'mine'
  other.mkdir()
  (other / 'notes.txt').write_text('keep me')
  rc, _, err = _cli(capsys, f'--output_dir={other}', '--overwrite')
  assert rc == 2 and 'is not a run folder' in err
  assert (other / 'notes.txt').read_text() == 'keep me'


def test_a_data_location_may_change_on_resume_and_other_data_may_not(
    tmp_path):
  from experiments import train_vae  # pylint: disable=import-outside-toplevel
  from vae import data  # pylint: disable=import-outside-toplevel
  out = str(tmp_path)
  outputs.write_config(out, 'train_vae', train_vae.Config(), 0)
  moved = train_vae.Config(data=data.DataConfig(paths=data.DataPaths(
      tfds_data_dir='/elsewhere', data_cache_dir='/cache')))
  outputs.check_dir(out, 'train_vae', moved)  # Accepted: the run resumes.
  with pytest.raises(outputs.RunDirError, match='num_train'):
    outputs.check_dir(out, 'train_vae', train_vae.Config(
        data=data.DataConfig(num_train=100)))


def test_a_locked_folder_is_refused_and_a_stale_lock_taken_over(tmp_path,
                                                                capsys):
  out = tmp_path / 'run'
  out.mkdir()
  sleeper = subprocess.Popen([sys.executable, '-c',
                              'import time; time.sleep(60)'])
  try:
    (out / outputs.LOCK).write_text(str(sleeper.pid))
    rc, _, err = _cli(capsys, f'--output_dir={out}')
    assert rc == 2 and f'in use by process {sleeper.pid}' in err
  finally:
    sleeper.kill()
    sleeper.wait()
  rc, _, _ = _cli(capsys, f'--output_dir={out}')  # Now stale.
  assert rc == 0 and not (out / outputs.LOCK).exists()


def test_strict_fails_on_a_disagreement(tmp_path, capsys):
  rc, stdout, err = _cli(capsys, f'--output_dir={tmp_path / "a"}',
                         '--disagree', '--strict')
  assert rc == 1 and '1 of 2 rows disagree' in stdout + err
  assert _cli(capsys, f'--output_dir={tmp_path / "b"}', '--disagree')[0] == 0


def test_sweep_runs_the_product_and_reports_a_failed_point(tmp_path):
  # In a subprocess: submitit's local executor in the pytest-xdist worker
  # would close the worker's stdio.
  out = str(tmp_path / 'sweep')
  proc = subprocess.run(
      [sys.executable, 'launch.py', FAKE, f'--output_dir={out}',
       '--parallel=2', '--sweep=value=1,2', '--sweep=fail=false,true',
       '--sweep=seed=7'],
      cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  rc, stdout = proc.returncode, proc.stdout
  assert rc == 1
  assert '2 of 4 points ok' in stdout
  with open(os.path.join(out, 'sweep.json')) as f:
    points = {p['point']: p for p in json.load(f)}
  assert {k: p['status'] for k, p in points.items()} == {
      'value=1,fail=false,seed=7': 'ok', 'value=1,fail=true,seed=7': 'failed',
      'value=2,fail=false,seed=7': 'ok', 'value=2,fail=true,seed=7': 'failed'}
  with open(points['value=1,fail=true,seed=7']['log']) as f:
    assert 'fake failure' in f.read()
  with open(os.path.join(out, 'sweep_results.json')) as f:
    records = json.load(f)
  assert sorted((r['value'], r['fail'], r['i']) for r in records) == [
      (1.0, False, 0), (1.0, False, 1), (2.0, False, 0), (2.0, False, 1)]
  assert {r['seed'] for r in records} == {7}  # The point's seed reached run.


def test_sigterm_stops_a_single_run(tmp_path):
  proc = subprocess.Popen(
      [sys.executable, 'launch.py', FAKE, '--sleep=60',
       f'--output_dir={tmp_path / "run"}'], cwd=ROOT,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 30
  while not (tmp_path / 'run' / 'config.json').exists():
    assert time.time() < deadline and proc.poll() is None
    time.sleep(0.1)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=30)
  assert proc.returncode == 130
  assert err.strip() == 'launch.py: stopped by SIGTERM/SIGINT'
  assert not (tmp_path / 'run' / outputs.LOCK).exists()


def test_sigterm_stops_a_sweep_and_its_points(tmp_path):
  out = tmp_path / 'sweep'
  proc = subprocess.Popen(
      [sys.executable, 'launch.py', FAKE, '--sleep=60', '--parallel=2',
       '--sweep=value=1,2', f'--output_dir={out}'], cwd=ROOT,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  locks = [out / f'value={v}' / outputs.LOCK for v in (1, 2)]
  deadline = time.time() + 60
  while not all(lock.exists() and lock.read_text() for lock in locks):
    assert time.time() < deadline and proc.poll() is None
    time.sleep(0.2)
  pids = [int(lock.read_text()) for lock in locks]
  proc.send_signal(signal.SIGTERM)
  proc.communicate(timeout=30)
  assert proc.returncode != 0
  deadline = time.time() + 30
  while any(outputs._alive(pid) for pid in pids):  # pylint: disable=protected-access
    assert time.time() < deadline, f'points still running: {pids}'
    time.sleep(0.2)
