"""Tests for launch.py and the run folder rules, on tests/fake_experiment.py."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from experiments.common import launch
from experiments.common import outputs
from experiments.common import runner
from vae import data

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
  moved = train_vae.Config(data=data.DataConfig(
      dataset='binarized_mnist', paths=data.DataPaths(
          tfds_data_dir='/elsewhere', data_cache_dir='/cache',
          download=True)))
  outputs.check_dir(out, 'train_vae', moved)  # Accepted: the run resumes.
  with pytest.raises(outputs.RunDirError, match='num_train'):
    outputs.check_dir(out, 'train_vae', train_vae.Config(
        data=data.DataConfig(dataset='binarized_mnist', num_train=100)))
  with pytest.raises(outputs.RunDirError, match='dataset'):
    outputs.check_dir(out, 'train_vae', train_vae.Config(
        data=data.DataConfig(dataset='synthetic')))


def test_a_held_lock_is_refused_and_says_how_to_clear_it(tmp_path, capsys):
  out = tmp_path / 'run'
  out.mkdir()
  holder = subprocess.Popen(
      [sys.executable, '-c', 'import sys, time\n'
       'from experiments.common import outputs\n'
       'with outputs.Lock(sys.argv[1]):\n'
       '  print("held", flush=True); time.sleep(60)', str(out)],
      cwd=ROOT, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'held'
    rc, _, err = _cli(capsys, f'--output_dir={out}')
    assert rc == 2 and err.count('\n') == 1, err
    assert f'is in use by process {holder.pid} on ' in err
    assert 'wait for it to finish or stop that process' in err
  finally:
    holder.kill()
    holder.wait()
  rc, _, _ = _cli(capsys, f'--output_dir={out}')  # Killed: the lock is free.
  assert rc == 0 and not (out / outputs.LOCK).exists()


def test_a_stale_lock_naming_a_live_unrelated_pid_is_taken_over(tmp_path,
                                                                 capsys):
  # Issue 22, item 8: a .lock of an earlier version holding a PID that is
  # now another, live process (a reused PID) refused forever.
  out = tmp_path / 'run'
  out.mkdir()
  unrelated = subprocess.Popen([sys.executable, '-c',
                                'import time; time.sleep(60)'])
  try:
    (out / outputs.LOCK).write_text(str(unrelated.pid))
    os.utime(out / outputs.LOCK, (time.time() - 60, time.time() - 60))
    rc, _, err = _cli(capsys, f'--output_dir={out}')
    started = outputs._process_start  # pylint: disable=protected-access
    if started(unrelated.pid) is None:
      pytest.skip('no /proc: process start times unknown')
    assert rc == 0, err  # Started after the lock was written: not its owner.
    assert not (out / outputs.LOCK).exists()
    # The same PID, written after the process started: an old run's lock.
    (out / outputs.LOCK).write_text(str(unrelated.pid))
    rc, _, err = _cli(capsys, f'--output_dir={out}')
    assert rc == 2 and err.count('\n') == 1
    assert f'in use by process {unrelated.pid} (a lock of an earlier ' in err
    assert f'delete {out / outputs.LOCK}' in err
  finally:
    unrelated.kill()
    unrelated.wait()


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
  pids = []
  while len(pids) < 2:
    assert time.time() < deadline and proc.poll() is None
    time.sleep(0.2)
    try:
      pids = [json.loads(lock.read_text())['pid'] for lock in locks]
    except (OSError, ValueError):
      continue
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=30)
  assert proc.returncode == 130  # As documented (launch.py's docstring).
  assert err.strip() == 'launch.py: stopped by SIGTERM/SIGINT'
  deadline = time.time() + 30
  while any(outputs._alive(pid) for pid in pids):  # pylint: disable=protected-access
    assert time.time() < deadline, f'points still running: {pids}'
    time.sleep(0.2)


def _web_app(path):
  """Issue 22, item 1: a folder that is not a run, with a config.json."""
  (path / 'src').mkdir(parents=True)
  (path / 'config.json').write_text('{"name": "my web app"}')
  (path / 'precious_notes.txt').write_text('keep me')
  (path / 'src' / 'main.py').write_text('print("hello")')
  return path


@pytest.mark.parametrize('overwrite', [True, False])
def test_overwrite_never_deletes_a_folder_that_is_not_a_run(tmp_path, capsys,
                                                            overwrite):
  mine = _web_app(tmp_path / 'my_project')
  before = _snapshot(mine)
  rc, _, err = _cli(capsys, f'--output_dir={mine}',
                    *['--overwrite'] * overwrite)
  assert rc == 2 and err.count('\n') == 1, err
  assert ('is not a run folder (no run.json of this project); --overwrite '
          'only replaces run folders' if overwrite else
          'is not empty and holds no run (no run.json') in err
  assert _snapshot(mine) == before
  assert sorted(os.listdir(tmp_path)) == ['my_project']


def test_the_web_app_case_with_gaussian_gradients(tmp_path, capsys):
  mine = _web_app(tmp_path / 'my_project')
  before = _snapshot(mine)
  rc = launch.cli(['launch.py', '--experiment=gaussian_gradients',
                   '--costs=square', '--square_ks=1', '--num_draws=1000',
                   f'--output_dir={mine}', '--overwrite'])
  err = capsys.readouterr().err
  assert rc == 2 and 'is not a run folder' in err and err.count('\n') == 1
  assert _snapshot(mine) == before


def test_overwrite_moves_the_previous_run_aside(tmp_path, capsys):
  out = tmp_path / 'run'
  assert _cli(capsys, f'--output_dir={out}', '--copies=2')[0] == 0
  old = _snapshot(out)
  assert json.loads(old['run.json']) == {
      'project': 'vae', 'kind': 'run', 'experiment': 'tests.fake_experiment',
      'format_version': 1}
  rc, stdout, _ = _cli(capsys, f'--output_dir={out}', '--copies=3',
                       '--overwrite')
  assert rc == 0 and f'moved to {out}.old-1' in stdout
  assert _snapshot(tmp_path / 'run.old-1') == old  # Nothing deleted.
  assert len(json.loads((out / 'results.json').read_text())) == 3


def test_the_seed_is_part_of_a_runs_identity(tmp_path, capsys):
  # Issue 22, item 3: --seed=1 into a finished seed-0 folder replaced it.
  out = tmp_path / 'run'
  assert _cli(capsys, f'--output_dir={out}')[0] == 0
  kept = _snapshot(out)
  rc, _, err = _cli(capsys, f'--output_dir={out}', '--seed=1')
  assert rc == 2 and err.count('\n') == 1
  assert 'other settings (seed=0 now 1); use another --output_dir or ' \
      '--overwrite' in err
  assert _snapshot(out) == kept
  assert _cli(capsys, f'--output_dir={out}', '--seed=0')[0] == 0  # Resumes.


def test_a_run_folder_of_an_earlier_version_resumes(tmp_path, capsys):
  # config.json as this project wrote it before run.json existed.
  out = tmp_path / 'run'
  assert _cli(capsys, f'--output_dir={out}', '--copies=2')[0] == 0
  os.remove(out / 'run.json')
  rc, _, err = _cli(capsys, f'--output_dir={out}', '--copies=3')
  assert rc == 2 and 'other settings (copies=2 now 3)' in err
  assert _cli(capsys, f'--output_dir={out}', '--copies=2')[0] == 0
  assert (out / 'run.json').exists()  # Marked now.
  os.remove(out / 'run.json')
  assert _cli(capsys, f'--output_dir={out}', '--copies=3',
              '--overwrite')[0] == 0
  assert (tmp_path / 'run.old-1' / 'config.json').exists()


BAD_CONFIGS = {'invalid': b'{"experiment": ', 'binary': b'\x00\xff\xfe\x80',
               'empty': b'', 'list': b'["experiment"]'}


@pytest.mark.parametrize('kind', sorted(BAD_CONFIGS))
def test_a_config_json_that_cannot_be_read(tmp_path, capsys, kind):
  # Issue 22, item 6: tracebacks, and --overwrite could not reuse the folder.
  out = tmp_path / 'run'
  out.mkdir()
  (out / 'config.json').write_bytes(BAD_CONFIGS[kind])
  before = _snapshot(out)
  for extra in ([], ['--overwrite']):  # Not ours: refused either way.
    rc, _, err = _cli(capsys, f'--output_dir={out}', *extra)
    assert rc == 2 and err.count('\n') == 1, err
    assert 'config.json' in err and 'Traceback' not in err
    assert _snapshot(out) == before
  outputs.write_marker(str(out), 'tests.fake_experiment')  # Ours: damaged.
  rc, _, err = _cli(capsys, f'--output_dir={out}')
  assert rc == 2 and err.count('\n') == 1, err
  assert 'config.json' in err and 'use --overwrite' in err
  assert _cli(capsys, f'--output_dir={out}', '--overwrite')[0] == 0
  assert (tmp_path / 'run.old-1' / 'config.json').read_bytes() == (
      BAD_CONFIGS[kind])
  assert json.loads((out / 'config.json').read_text())['seed'] == 0


@pytest.mark.parametrize('path, message', [
    ('/proc/vae_run', 'is under /proc'),
    ('long', 'is longer than 255 bytes'),
])
def test_impossible_output_dirs_are_one_line_exit_2(tmp_path, capsys, path,
                                                    message):
  if path == 'long':
    path = str(tmp_path / ('x' * 300))
  rc, _, err = _cli(capsys, f'--output_dir={path}')
  assert rc == 2 and err.count('\n') == 1 and message in err, err


def test_a_run_that_finds_no_input_leaves_no_folder(tmp_path, capsys):
  # Issue 22, item 9: missing data left a folder holding only config.json.
  out = tmp_path / 'run'
  rc = launch.cli(['launch.py', '--experiment=train_vae',
                   '--dataset=binarized_mnist', '--nocompilation_cache',
                   f'--tfds_data_dir={tmp_path / "nothing"}',
                   f'--output_dir={out}'])
  err = capsys.readouterr().err
  assert rc != 0 and 'binarized_mnist not found' in err
  assert err.count('\n') == 1
  assert not out.exists() and os.listdir(tmp_path) == []


@pytest.mark.parametrize('name', [
    'train_vae', 'vae_gradients', 'minibatch_noise', 'equal_compute',
    'discrete_latents', 'posterior_collapse'])
def test_the_default_is_binarized_mnist_and_missing_data_is_one_line(
    tmp_path, capsys, monkeypatch, name):
  """The README lists these under binarized MNIST: their default data."""
  pytest.importorskip('tensorflow_datasets')
  assert runner.load(name).Config().data.dataset == 'binarized_mnist'
  for var in (data.ENV_TFDS_DATA_DIR, data.ENV_CACHE_DIR, data.ENV_MANUAL_DIR):
    monkeypatch.delenv(var, raising=False)
  out = tmp_path / 'run'
  rc = launch.cli(['launch.py', f'--experiment={name}',
                   f'--tfds_data_dir={tmp_path / "empty"}',
                   f'--output_dir={out}'])
  err = capsys.readouterr().err.strip()
  assert rc != 0 and len(err.splitlines()) == 1, err
  assert 'binarized_mnist not found' in err and 'tfds_data_dir=DIR' in err
  assert not out.exists() and not (tmp_path / 'empty').exists()


@pytest.mark.parametrize('sweeps, message', [
    (['--sweep=seed=0,0'], "points {'seed': '0'} and {'seed': '0'} have the "
     'same settings'),
    (['--sweep=value=1,1.0'], "points {'value': '1'} and {'value': '1.0'} "
     'have the same settings'),
    (['--sweep=value=1,2', '--sweep=epochs=1,1'], 'have the same settings'),
])
def test_a_sweep_refuses_duplicate_points_before_starting(tmp_path, capsys,
                                                          sweeps, message):
  out = tmp_path / 'sweep'
  rc, _, err = _cli(capsys, f'--output_dir={out}', *sweeps)
  assert rc == 2 and err.count('\n') == 1 and message in err, err
  assert not out.exists()


def test_a_sweep_refuses_points_sharing_a_folder_name(tmp_path, capsys):
  rc = launch.cli(['launch.py', '--experiment=train_vae',
                   f'--output_dir={tmp_path / "sweep"}',
                   '--sweep=tfds_data_dir=a/b,a_b'])
  err = capsys.readouterr().err
  assert rc == 2 and err.count('\n') == 1, err
  assert "have the same folder name 'tfds_data_dir=a_b'" in err
  assert not (tmp_path / 'sweep').exists()
  label = launch._label  # pylint: disable=protected-access
  long = [label([('tfds_data_dir', 'x' * 200 + v)]) for v in 'ab']
  assert len(long[0]) == 120 and long[0] != long[1]  # Cut, kept apart.


def test_a_sweep_into_a_folder_that_is_not_a_sweep_is_refused(tmp_path,
                                                              capsys):
  mine = _web_app(tmp_path / 'my_project')
  before = _snapshot(mine)
  rc, _, err = _cli(capsys, f'--output_dir={mine}', '--sweep=value=1,2',
                    '--overwrite')
  assert rc == 2 and err.count('\n') == 1 and 'no sweep' in err, err
  assert _snapshot(mine) == before


def test_train_vae_with_another_seed_is_refused_not_resumed(tmp_path,
                                                            capsys):
  # Issue 22, item 3: --seed=7 resumed a seed-0 run and labelled it seed 7.
  from experiments import train_vae  # pylint: disable=import-outside-toplevel
  out = tmp_path / 'run'
  out.mkdir()
  outputs.write_marker(str(out), 'train_vae')
  outputs.write_config(str(out), 'train_vae', train_vae.Config(), 0)
  (out / 'checkpoints').mkdir()
  kept = _snapshot(out)
  rc = launch.cli(['launch.py', '--experiment=train_vae', '--seed=7',
                   f'--output_dir={out}'])
  err = capsys.readouterr().err
  assert rc == 2 and err.count('\n') == 1
  assert 'holds a train_vae run with other settings (seed=0 now 7)' in err
  assert _snapshot(out) == kept
