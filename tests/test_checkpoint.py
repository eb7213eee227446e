"""Checkpoints: exact round trip, checksums, fallback past corrupt ones."""

import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from vae import checkpoint

TESTS = os.path.dirname(os.path.abspath(__file__))

def _tree(scale=1.0):
  params = {'enc': {'w': scale * jnp.arange(600.0).reshape(20, 30),
                    'b': jnp.ones(30)}}
  return {'step': jnp.int32(7), 'params': params,
          'opt_state': optax.adam(1e-3).init(params),
          'baseline': jnp.float32(-3.5)}


def _biggest_file(folder):
  files = [os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs]
  return max(files, key=os.path.getsize)


def test_checksum_sees_every_byte_path_and_dtype():
  flat = checkpoint.flatten(_tree())
  digest = checkpoint.checksum(flat)
  assert digest.dtype == np.uint8 and digest.shape == (32,)
  np.testing.assert_array_equal(checkpoint.checksum(dict(flat)), digest)
  w = flat["['params']['enc']['w']"].copy()
  w.view(np.uint32)[3, 4] ^= 1  # One flipped bit.
  for changed in ({**flat, "['params']['enc']['w']": w},
                  {**flat, "['baseline']": np.float64(-3.5)},
                  {k + ' ': v for k, v in flat.items()}):
    assert not np.array_equal(checkpoint.checksum(changed), digest)


def test_round_trip_keep_and_partial_writes(tmp_path):
  directory = str(tmp_path)
  for step in (1, 2, 3):
    checkpoint.save(directory, step, _tree(step), keep=2)
  (tmp_path / 'step_9.orbax-checkpoint-tmp-123').mkdir()  # A killed write.
  assert checkpoint.list_steps(directory) == [2, 3]
  template = jax.tree.map(jnp.zeros_like, _tree())
  chex.assert_trees_all_equal(checkpoint.restore(directory, 3, template),
                              _tree(3))
  tree, step = checkpoint.restore_latest(directory, template)
  assert step == 3
  chex.assert_trees_all_equal(tree, _tree(3))
  only_params = checkpoint.restore(directory, 2, {'params': _tree()['params']})
  chex.assert_trees_all_equal(only_params, {'params': _tree(2)['params']})
  with pytest.raises(FileNotFoundError):
    checkpoint.restore(directory, 1, template)
  with pytest.raises(ValueError, match='other settings'):
    checkpoint.restore(directory, 3, {'baseline': jnp.zeros(2)})
  checkpoint.save(directory, 4, _tree())
  assert not (tmp_path / 'step_9.orbax-checkpoint-tmp-123').exists()
  assert checkpoint.restore_latest(str(tmp_path / 'none'), template) == (
      None, None)


def _corrupt(folder, how):
  if how == 'flipped_bytes':  # Checksum mismatch or unreadable.
    path = _biggest_file(folder)
    data = bytearray(open(path, 'rb').read())
    for i in range(len(data) // 3, len(data) // 3 + 400):
      data[i % len(data)] ^= 0xFF
    open(path, 'wb').write(bytes(data))
  elif how == 'truncated':
    path = _biggest_file(folder)
    os.truncate(path, os.path.getsize(path) // 2)
  elif how == 'deleted_file':
    os.remove(_biggest_file(folder))
  elif how == 'garbage_manifest':
    for root, _, files in os.walk(folder):
      for f in files:
        if f == 'manifest.ocdbt':
          open(os.path.join(root, f), 'wb').write(b'\x00garbage' * 10)
  elif how == 'garbage_metadata':
    for root, _, files in os.walk(folder):
      for f in files:
        if 'METADATA' in f or f.endswith('.ocdbt'):
          open(os.path.join(root, f), 'wb').write(b'\x00garbage' * 10)
  elif how == 'other_contents':  # Readable, but not what was summed.
    flat = checkpoint.flatten(_tree(5.0))
    flat[checkpoint.CHECKSUM] = checkpoint.checksum(checkpoint.flatten(
        _tree(3.0)))
    with ocp.StandardCheckpointer() as writer:
      writer.save(folder, flat, force=True)


# Orbax's reader of a truncated file may leave an asyncio callback behind
# after its event loop closed (reported by pytest as unraisable, harmless).
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
@pytest.mark.parametrize('how', ['flipped_bytes', 'truncated', 'deleted_file',
                                 'garbage_manifest', 'garbage_metadata',
                                 'other_contents'])
def test_corrupt_latest_falls_back_to_the_intact_one(tmp_path, how):
  directory = str(tmp_path)
  for step in (2, 3):
    checkpoint.save(directory, step, _tree(step))
  _corrupt(checkpoint.step_dir(directory, 3), how)
  template = jax.tree.map(jnp.zeros_like, _tree())
  with pytest.raises(checkpoint.CorruptCheckpoint) as info:
    checkpoint.restore(directory, 3, template)
  assert '\n' not in str(info.value) and 'step_3' in str(info.value)
  lines = []
  tree, step = checkpoint.restore_latest(directory, template, lines.append)
  assert step == 2
  chex.assert_trees_all_equal(tree, _tree(2))
  assert len(lines) == 1 and 'step_3' in lines[0]
  assert checkpoint.list_steps(directory) == [2]
  assert (tmp_path / 'step_3.corrupt').is_dir()


_RECOVER = """
import sys
sys.path.insert(0, {tests!r})
import jax, jax.numpy as jnp
import test_checkpoint as t
from vae import checkpoint
directory, how, steps = {directory!r}, {how!r}, {steps!r}
for step in (1, 2, 3):
  checkpoint.save(directory, step, t._tree(step))
for step in steps:
  t._corrupt(checkpoint.step_dir(directory, step), how)
template = jax.tree.map(jnp.zeros_like, t._tree())
try:
  tree, step = checkpoint.restore_latest(directory, template)
  print('restored', step)
except checkpoint.CheckpointError as e:
  print(e, file=sys.stderr)
"""


@pytest.mark.parametrize('how', ['truncated', 'deleted_file',
                                 'garbage_manifest', 'garbage_metadata'])
def test_recoveries_print_one_line_and_nothing_on_stderr(tmp_path, how):
  # A fresh interpreter: orbax's reader of a damaged file printed asyncio
  # tracebacks from its threads, after the read, on the process's stderr.
  def recover(directory, steps):
    code = _RECOVER.format(tests=TESTS, directory=str(directory), how=how,
                           steps=steps)
    return subprocess.run([sys.executable, '-c', code], capture_output=True,
                          text=True, timeout=120,
                          env=dict(os.environ, JAX_PLATFORMS='cpu'))

  done = recover(tmp_path / 'latest', (3,))
  assert done.returncode == 0 and done.stderr == '', done.stderr[-2000:]
  lines = done.stdout.splitlines()
  assert len(lines) == 2 and 'step_3' in lines[0], lines
  assert lines[1] == 'restored 2'
  done = recover(tmp_path / 'all', (1, 2, 3))
  assert done.returncode == 0 and done.stdout == '', done.stdout
  (line,) = done.stderr.splitlines()
  assert line.startswith(f'no intact checkpoint in {tmp_path / "all"}: '
                         'all 3 are corrupt (newest: checkpoint ')
  assert checkpoint.list_steps(str(tmp_path / 'all')) == [1, 2, 3]


def test_no_intact_checkpoint_is_one_error(tmp_path):
  directory = str(tmp_path)
  checkpoint.save(directory, 1, _tree())
  _corrupt(checkpoint.step_dir(directory, 1), 'truncated')
  with pytest.raises(checkpoint.CheckpointError,
                     match='no intact checkpoint') as info:
    checkpoint.restore_latest(directory, _tree(), lambda _: None,
                              move_aside=False)
  assert '\n' not in str(info.value)
  assert checkpoint.list_steps(directory) == [1]  # Left in place.


def test_a_failed_write_keeps_the_earlier_checkpoints(tmp_path, monkeypatch):
  directory = str(tmp_path)
  checkpoint.save(directory, 1, _tree(), keep=1)

  def disk_full(self, *args, **kwargs):
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(ocp.Checkpointer, 'save', disk_full)
  with pytest.raises(checkpoint.CheckpointError,
                     match='No space left on device') as info:
    checkpoint.save(directory, 2, _tree(2.0), keep=1)
  assert '\n' not in str(info.value) and 'step_2' in str(info.value)
  monkeypatch.undo()
  assert checkpoint.list_steps(directory) == [1]
  chex.assert_trees_all_equal(checkpoint.restore(directory, 1, _tree()),
                              _tree())
