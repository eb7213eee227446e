"""Tests for experiments/common/outputs.py: what a run folder is, locks."""

import dataclasses
import json
import os
import subprocess
import sys
import time

import pytest

from experiments.common import outputs
from tests import fake_experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_run_folder_is_recognised_by_its_marker(tmp_path):
  outputs.write_marker(str(tmp_path), 'x')
  with open(tmp_path / outputs.RUN_JSON) as f:
    assert json.load(f) == {'project': 'vae', 'kind': 'run',
                            'experiment': 'x', 'format_version': 1}
  folder = outputs.inspect(str(tmp_path))
  assert (folder.kind, folder.experiment, folder.legacy) == ('run', 'x', False)
  # Another program's run.json is not the marker.
  (tmp_path / outputs.RUN_JSON).write_text('{"experiment": "x"}')
  assert outputs.inspect(str(tmp_path)).kind is None


def test_an_old_run_folder_without_marker_is_recognised(tmp_path):
  # Folders written before run.json: config.json with this project's keys.
  outputs.write_config(str(tmp_path), 'tests.fake_experiment',
                       fake_experiment.Config(), 3)
  folder = outputs.inspect(str(tmp_path))
  assert (folder.kind, folder.experiment, folder.legacy) == (
      'run', 'tests.fake_experiment', True)
  outputs.check_dir(str(tmp_path), 'tests.fake_experiment',
                    fake_experiment.Config(), 3)  # Resumes.
  with pytest.raises(outputs.RunDirError, match=r'seed=3 now 4'):
    outputs.check_dir(str(tmp_path), 'tests.fake_experiment',
                      fake_experiment.Config(), 4)
  # A config.json that is not ours: not a run folder.
  for text in ('{"name": "my web app"}',
               '{"experiment": "x", "settings": {}}'):
    (tmp_path / 'config.json').write_text(text)
    assert outputs.inspect(str(tmp_path)).kind is None


@pytest.mark.parametrize('content, problem', [
    (b'{not json', 'is not valid JSON (Expecting property name'),
    (b'\x7fELF\x02\x01\x01\x00\xff\xfe', 'is not text (binary data)'),
    (b'', 'is empty'),
    (b'[1, 2]', 'holds a list, not a JSON object'),
])
def test_a_config_json_that_cannot_be_read_is_one_line(tmp_path, content,
                                                       problem):
  (tmp_path / 'config.json').write_bytes(content)
  with pytest.raises(outputs.RunDirError, match='config.json') as e:
    outputs.read_config(str(tmp_path))
  assert problem in str(e.value) and '\n' not in str(e.value)
  assert problem in outputs.inspect(str(tmp_path)).problem


def test_move_aside_keeps_the_old_run(tmp_path):
  run = tmp_path / 'run'
  (run / 'checkpoints').mkdir(parents=True)
  (run / 'results.json').write_text('[1]')
  (run / 'checkpoints' / 'a').write_text('a')
  with outputs.Lock(str(run)):
    assert outputs.move_aside(str(run)) == str(tmp_path / 'run.old-1')
    assert os.listdir(run) == [outputs.LOCK]
  assert (tmp_path / 'run.old-1' / 'results.json').read_text() == '[1]'
  assert (tmp_path / 'run.old-1' / 'checkpoints' / 'a').read_text() == 'a'
  (run / 'x').write_text('x')
  assert outputs.move_aside(str(run)) == str(tmp_path / 'run.old-2')
  assert outputs.move_aside(str(run)) is None


@pytest.mark.parametrize('path, message', [
    ('/proc/vae_run', 'is under /proc, where no run can be written'),
    ('/sys/vae_run', 'is under /sys'),
    ('x' * 300, 'is longer than 255 bytes'),
    ('/'.join(['y' * 200] * 25), 'the folder path is too long'),
])
def test_impossible_paths_are_refused(tmp_path, path, message):
  if not path.startswith('/'):
    path = str(tmp_path / path)
  with pytest.raises(outputs.RunDirError, match=message):
    outputs.check_path(path)


_CONTENDER = '''
import os, sys, time
from experiments.common import outputs
folder, inside, until = sys.argv[1], sys.argv[2], float(sys.argv[3])
held = overlaps = 0
while time.time() < until:
  lock = outputs.Lock(folder)
  try:
    lock.__enter__()
  except outputs.RunDirError:
    time.sleep(0.001)
    continue
  held += 1
  try:  # Exclusive: no one else may be inside now.
    os.close(os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
  except FileExistsError:
    overlaps += 1
  else:
    time.sleep(0.002)
    os.remove(inside)
  if held % 2:
    lock.__exit__(None, None, None)
  else:  # As if killed: the file stays behind, stale.
    os.close(lock._fd)
print(held, overlaps)
'''


def test_six_processes_never_hold_one_lock_at_once(tmp_path):
  # Issue 22, item 8: stale-lock takeover raced (2-3 holders at once).
  folder = tmp_path / 'run'
  folder.mkdir()
  (folder / outputs.LOCK).write_text('999999999')  # A stale old-style lock.
  until = time.time() + 8  # After the imports, a few seconds of contention.
  procs = [subprocess.Popen(
      [sys.executable, '-c', _CONTENDER, str(folder), str(tmp_path / 'inside'),
       str(until)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
           for _ in range(6)]
  counts = [tuple(map(int, p.communicate(timeout=60)[0].split()))
            for p in procs]
  assert all(p.returncode == 0 for p in procs)
  assert sum(overlaps for _, overlaps in counts) == 0, counts
  assert sum(held for held, _ in counts) >= 20, counts  # Real contention.
  assert sum(held > 0 for held, _ in counts) >= 2, counts


def _old_run(tmp_path, experiment: str, settings: dict):
  """A run folder whose config.json holds `settings` as an older version
  of the code wrote them (seed 0)."""
  run = tmp_path / 'old_run'
  run.mkdir()
  (run / 'config.json').write_text(json.dumps(
      {'experiment': experiment, 'seed': 0, 'settings': settings,
       'versions': {}}))
  return run


def test_a_setting_added_later_at_its_default_is_not_a_difference(tmp_path):
  """A run made before a setting existed resumes when the setting is at its
  default (what that run did); a non-default value is a difference."""
  from experiments import train_vae  # pylint: disable=g-import-not-at-top
  from vae import config as cfg  # pylint: disable=g-import-not-at-top
  from vae import evaluate  # pylint: disable=g-import-not-at-top
  settings = cfg.to_dict(train_vae.Config())
  old = {k: v for k, v in settings.items() if not k.startswith(
      'evaluation.ais.')}
  assert len(old) < len(settings)
  run = _old_run(tmp_path, 'train_vae', old)
  outputs.check_dir(str(run), 'train_vae', train_vae.Config(), seed=0)
  ais = evaluate.EvalConfig(ais=dataclasses.replace(
      evaluate.EvalConfig().ais, ais_images=5))
  with pytest.raises(outputs.RunDirError, match='ais_images=None now 5'):
    outputs.check_dir(str(run), 'train_vae',
                      train_vae.Config(evaluation=ais), seed=0)


def test_a_run_made_before_a_rename_is_the_same_run(tmp_path):
  """A setting stored under its old name (the experiment's RENAMED) is
  compared under the new one: equal values resume, others are refused."""
  from experiments import discrete_latents  # pylint: disable=g-import-not-at-top
  from vae import config as cfg  # pylint: disable=g-import-not-at-top
  settings = cfg.to_dict(discrete_latents.Config())
  new_to_old = {v: k for k, v in discrete_latents.RENAMED.items()}
  old = {new_to_old.get(k, k): v for k, v in settings.items()}
  assert 'batch' in old and 'batch_size' not in old
  run = _old_run(tmp_path, 'discrete_latents', old)
  outputs.check_dir(str(run), 'discrete_latents', discrete_latents.Config(),
                    seed=0)
  with pytest.raises(outputs.RunDirError, match='batch_size=50 now 20'):
    outputs.check_dir(str(run), 'discrete_latents',
                      discrete_latents.Config(batch_size=20), seed=0)


def test_a_scalar_renamed_into_a_list_setting_is_the_same_run(tmp_path):
  """mixture_of_gaussians' --vae_hidden=64 became --hidden_sizes=64."""
  from experiments import mixture_of_gaussians as mog  # pylint: disable=g-import-not-at-top
  from vae import config as cfg  # pylint: disable=g-import-not-at-top
  old = cfg.to_dict(mog.Config())
  old['vae_hidden'] = old.pop('hidden_sizes')[0]
  old['iwae_samples'] = old.pop('eval_k')
  run = _old_run(tmp_path, 'mixture_of_gaussians', old)
  outputs.check_dir(str(run), 'mixture_of_gaussians', mog.Config(), seed=0)
  with pytest.raises(outputs.RunDirError, match=r'hidden_sizes=\[64\] now '):
    outputs.check_dir(str(run), 'mixture_of_gaussians',
                      mog.Config(hidden_sizes=(32,)), seed=0)
