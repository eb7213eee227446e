"""Checkpoints of array pytrees that prove their contents (orbax).

The checkpoint of `tree` at step s is the folder `<directory>/step_<s>/`,
written by orbax's `StandardCheckpointer` (a temporary folder renamed into
place when complete, so a killed writer leaves no `step_<s>`). Leaves are
stored flat, keyed by their pytree path (`jax.tree_util.keystr`), beside

    CHECKSUM = SHA-256( Σ_leaves path ‖ dtype ‖ shape ‖ bytes )   (path order)

Beside orbax's files, `FILES` (vae_files.json) lists every file of the
folder with its size and SHA-256; `restore` checks them before orbax reads
anything, so a truncated, deleted or garbage file is refused without orbax
(whose reader of a damaged file leaves asyncio and tensorstore tracebacks on
stderr). `restore` then recomputes the checksum and refuses a checkpoint
whose contents differ (flipped bytes) or cannot be read (truncated,
garbage): `CorruptCheckpoint`, one line naming the folder. `restore_latest`
walks back from the newest step to the newest intact one, moving each
corrupt folder aside (`step_<s>.corrupt`) and reporting it in one line; when
none is intact it reports one error and moves nothing.

Writes are synchronous: a write that fails (read-only folder, full disk)
raises `CheckpointError` at once, leaving no orbax thread behind.
"""

import contextlib
import hashlib
import json
import logging as py_logging
import os
import re
import shutil
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

CHECKSUM = '__sha256__'
CORRUPT_SUFFIX = '.corrupt'
FILES = 'vae_files.json'
_STEP_RE = re.compile(r'^step_(\d+)$')


class CheckpointError(Exception):
  """A checkpoint cannot be written or none can be read (one line)."""


class CorruptCheckpoint(CheckpointError):
  """A checkpoint's contents are unreadable or fail their checksum."""


@contextlib.contextmanager
def _quiet_absl():
  """Silences orbax's absl and asyncio logs while it reads or writes.

  Orbax logs every step at INFO and a failed read or write as an ERROR
  traceback; the caller reports the failure in one line instead.
  """
  old = logging.get_verbosity()
  asyncio_logger = py_logging.getLogger('asyncio')
  old_asyncio = asyncio_logger.level
  logging.set_verbosity(logging.FATAL)
  asyncio_logger.setLevel(py_logging.CRITICAL)
  try:
    yield
  finally:
    logging.set_verbosity(old)
    asyncio_logger.setLevel(old_asyncio)


def flatten(tree: Any) -> dict[str, np.ndarray]:
  """{keystr(path): numpy leaf} for every leaf of `tree`."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  flat = {jax.tree_util.keystr(p): np.asarray(leaf) for p, leaf in leaves}
  if len(flat) != len(leaves) or CHECKSUM in flat:
    raise ValueError('two leaves of the tree have the same path string.')
  return flat


def checksum(flat: dict[str, np.ndarray]) -> np.ndarray:
  """SHA-256 of (path, dtype, shape, bytes) of every leaf, uint8 [32]."""
  digest = hashlib.sha256()
  for name in sorted(flat):
    value = np.ascontiguousarray(flat[name])
    digest.update(f'{name}|{value.dtype.str}|{value.shape}|'.encode())
    digest.update(value.tobytes())
  return np.frombuffer(digest.digest(), np.uint8).copy()


def _unflatten(target: Any, flat: dict[str, Any], where: str) -> Any:
  """The leaves of `flat` in the structure of `target` (paths must match)."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(target)
  out = []
  for path, leaf in leaves:
    name = jax.tree_util.keystr(path)
    if name not in flat:
      raise ValueError(f'{where} has no leaf {name}: it was written with '
                       'other settings.')
    value = np.asarray(flat[name])
    if value.shape != np.shape(leaf):
      raise ValueError(f'{where}: leaf {name} has shape {value.shape}, '
                       f'expected {np.shape(leaf)}: it was written with '
                       'other settings.')
    out.append(value.astype(np.asarray(leaf).dtype, copy=False))
  return jax.tree_util.tree_unflatten(treedef, out)


def list_steps(directory: str) -> list[int]:
  """The steps of the complete checkpoints in `directory`, sorted."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(m.group(1)) for m in map(_STEP_RE.match,
                                             os.listdir(directory)) if m)


def latest_step(directory: str) -> int | None:
  """The largest step with a complete checkpoint in `directory`, or None."""
  steps = list_steps(directory)
  return steps[-1] if steps else None


def step_dir(directory: str, step: int) -> str:
  """The folder of the checkpoint of `step`."""
  return os.path.join(os.path.abspath(directory), f'step_{int(step)}')


def _checkpointer() -> ocp.Checkpointer:
  """A synchronous orbax checkpointer of StandardCheckpointer's format.

  Synchronous: the temporary folder is created before any writer thread
  starts, so a folder that cannot be written fails at once, with no
  background thread left waiting for it (the asynchronous
  StandardCheckpointer's writers then wait out orbax's barrier timeout
  and keep the interpreter from exiting). In a multi-process job
  (`jax.distributed`) only process 0 reads and writes checkpoints (the
  state is replicated; `vae.train` broadcasts what it restored), so
  orbax's barriers involve process 0 alone.
  """
  if jax.process_count() == 1:
    return ocp.Checkpointer(ocp.StandardCheckpointHandler())
  alone = ocp.options.MultiprocessingOptions(primary_host=0,
                                             active_processes={0})
  return ocp.Checkpointer(ocp.StandardCheckpointHandler(
      multiprocessing_options=alone), multiprocessing_options=alone)


def save(directory: str, step: int, tree: Any, keep: int | None = 3) -> str:
  """Writes `tree` and its checksum as the checkpoint of `step`.

  Args:
    directory: the checkpoint folder (created if needed).
    step: the step number (an int >= 0).
    tree: a pytree of arrays.
    keep: how many checkpoints to keep (older ones are deleted after the
      new one is complete); None: all.

  Returns:
    The folder written.

  Raises:
    CheckpointError: it could not be written (e.g. the disk is full); the
      earlier checkpoints are untouched.
  """
  flat = flatten(tree)
  flat[CHECKSUM] = checksum(flat)
  folder = step_dir(directory, step)
  try:
    os.makedirs(directory, exist_ok=True)
    _remove_partial_writes(directory)
    with _quiet_absl(), contextlib.closing(_checkpointer()) as checkpointer:
      checkpointer.save(folder, flat, force=True)
    _write_files(folder)
  except Exception as e:  # pylint: disable=broad-except
    if os.path.isdir(directory):
      _remove_partial_writes(directory)
      if os.path.isdir(folder) and not os.path.exists(
          os.path.join(folder, FILES)):
        shutil.rmtree(folder, ignore_errors=True)
    raise CheckpointError(f'cannot write checkpoint {folder}: '
                          f'{_first_line(e)}; the earlier checkpoints are '
                          'kept.') from None
  if keep is not None:
    for old in list_steps(directory)[:-keep]:
      shutil.rmtree(step_dir(directory, old), ignore_errors=True)
  return folder


def _first_line(e: Exception) -> str:
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__


def _file_digests(folder: str) -> dict[str, list[Any]]:
  """{path relative to `folder`: [size, SHA-256 hex]} of its files."""
  files = {}
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      rel = os.path.relpath(path, folder)
      if rel.startswith(FILES):  # The list itself (or its temporary file).
        continue
      digest = hashlib.sha256()
      with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
          digest.update(block)
      files[rel] = [os.path.getsize(path), digest.hexdigest()]
  return files


def _write_files(folder: str) -> None:
  """Writes `FILES` (atomically: a temporary file, then a rename)."""
  path, files = os.path.join(folder, FILES), _file_digests(folder)
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump(files, f, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(path + '.tmp', path)


def _check_files(folder: str) -> None:
  """Refuses (CorruptCheckpoint) a folder whose files differ from `FILES`.

  A folder without `FILES` (written before it existed, or killed between
  orbax's rename and its write) is left to orbax and the checksum.
  """
  path = os.path.join(folder, FILES)
  if not os.path.exists(path):
    return
  try:
    with open(path, encoding='utf-8') as f:
      listed = json.load(f)
    if not isinstance(listed, dict):
      raise ValueError('not a JSON object')
  except (OSError, ValueError) as e:
    raise CorruptCheckpoint(f'checkpoint {folder} cannot be read ({FILES}: '
                            f'{_first_line(e)[:200]}).') from None
  try:
    found = _file_digests(folder)
  except OSError as e:
    raise CorruptCheckpoint(f'checkpoint {folder} cannot be read '
                            f'({_first_line(e)[:200]}).') from None
  for rel, expected in sorted(listed.items()):
    if rel not in found:
      raise CorruptCheckpoint(f'checkpoint {folder} cannot be read ({rel} '
                              'is missing).')
    if list(found[rel]) != list(expected):
      raise CorruptCheckpoint(f'checkpoint {folder} cannot be read ({rel} '
                              f'has {found[rel][0]} bytes, not the '
                              f'{expected[0]} written, or other contents).')


def _remove_partial_writes(directory: str) -> None:
  """Deletes the temporary folders a killed orbax writer left."""
  for name in os.listdir(directory):
    if name.startswith('step_') and '.orbax-checkpoint-tmp' in name:
      shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


def restore(directory: str, step: int, target: Any) -> Any:
  """The checkpoint of `step`, verified, in the structure of `target`.

  Args:
    directory: the checkpoint folder.
    step: which checkpoint.
    target: a pytree with the structure, shapes and dtypes to restore (its
      values are not used). It may be a sub-tree of what was saved: for a
      saved {'params': p, ...}, target {'params': p0} restores the params.

  Returns:
    A pytree like `target` holding the saved numpy arrays.

  Raises:
    FileNotFoundError: there is no such checkpoint.
    CorruptCheckpoint: its contents cannot be read or fail the checksum.
    ValueError: it holds other leaves or shapes (written with other
      settings).
  """
  folder = step_dir(directory, step)
  if not os.path.isdir(folder):
    raise FileNotFoundError(f'no checkpoint of step {step} in {directory}.')
  _check_files(folder)
  try:
    with _quiet_absl(), contextlib.closing(_checkpointer()) as checkpointer:
      flat = checkpointer.restore(folder)
    flat = {k: np.asarray(v) for k, v in dict(flat).items()}
  except Exception as e:  # pylint: disable=broad-except
    raise CorruptCheckpoint(f'checkpoint {folder} cannot be read '
                            f'({_first_line(e)[:200]}).') from None
  stored = flat.pop(CHECKSUM, None)
  if stored is None:
    raise CorruptCheckpoint(f'checkpoint {folder} has no checksum.')
  if not np.array_equal(stored, checksum(flat)):
    raise CorruptCheckpoint(f'checkpoint {folder} fails its checksum.')
  return _unflatten(target, flat, f'checkpoint {folder}')


def restore_latest(directory: str, target: Any,
                   log: Callable[[str], None] = print,
                   move_aside: bool = True) -> tuple[Any, int | None]:
  """(tree, step) of the newest intact checkpoint; (None, None) if none.

  A corrupt newer checkpoint is reported in one line through `log` and,
  with `move_aside`, renamed `step_<s>.corrupt` (so training continues from
  the intact one and writes step s again). When none is intact, nothing is
  logged or moved: the error is the one line.

  Raises:
    CheckpointError: there are checkpoints, but none is intact.
  """
  steps = list_steps(directory)
  corrupt: list[tuple[int, CorruptCheckpoint]] = []
  for step in reversed(steps):
    try:
      tree = restore(directory, step, target)
    except CorruptCheckpoint as e:
      corrupt.append((step, e))
      continue
    for bad, error in corrupt:
      folder, moved = step_dir(directory, bad), ''
      if move_aside:
        shutil.rmtree(folder + CORRUPT_SUFFIX, ignore_errors=True)
        os.replace(folder, folder + CORRUPT_SUFFIX)
        moved = f' Moved to step_{bad}{CORRUPT_SUFFIX};'
      log(f'{error}{moved} using the previous checkpoint.')
    return tree, step
  if steps:
    newest = str(corrupt[0][1]).rstrip('.')
    raise CheckpointError(f'no intact checkpoint in {directory}: all '
                          f'{len(steps)} are corrupt (newest: {newest}); '
                          'delete them to start over or use another '
                          'folder.')
  return None, None
