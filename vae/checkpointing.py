"""Atomic checkpoints of array pytrees, with orbax or a numpy fallback.

A checkpoint of `tree` at step `s` in `directory` is

* `directory/step_<s>/` written by orbax (`StandardCheckpointer`), when
  `orbax.checkpoint` can be imported (it is imported lazily); orbax writes a
  temporary folder and renames it when complete;
* otherwise `directory/step_<s>.npz`, written to a temporary file and
  renamed (`os.replace`), so a killed process never leaves a partial one.

Leaves are stored flat, keyed by their pytree path (`jax.tree_util.keystr`),
so any pytree (dicts, named tuples, optax states) round-trips exactly into
the structure of a `target` tree. `latest_step` ignores unfinished writes.
Both formats are readable whichever is installed for writing, except that
reading `step_<s>/` needs orbax.
"""

import contextlib
import os
import re
import shutil
from typing import Any

import jax
import numpy as np

from vae import types

Params = types.Params

_STEP_RE = re.compile(r'^step_(\d+)(\.npz)?$')


def _orbax():
  """The orbax.checkpoint module, or None when it cannot be imported."""
  try:
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  except Exception:  # pylint: disable=broad-except
    return None
  return ocp


@contextlib.contextmanager
def _quiet_absl():
  """Raises absl's verbosity to WARNING (orbax logs every step at INFO)."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  old = logging.get_verbosity()
  logging.set_verbosity(min(old, logging.WARNING))  # absl: WARNING = -1.
  try:
    yield
  finally:
    logging.set_verbosity(old)


def _flatten(tree: Any) -> dict[str, np.ndarray]:
  """{keystr(path): numpy leaf} for every leaf of `tree`."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  flat = {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}
  if len(flat) != len(leaves):
    raise ValueError('two leaves of the tree have the same path string.')
  return flat


def _unflatten(target: Any, flat: dict[str, Any]) -> Any:
  """The leaves of `flat` in the structure of `target` (paths must match)."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(target)
  out = []
  for path, leaf in leaves:
    name = jax.tree_util.keystr(path)
    if name not in flat:
      raise KeyError(f'checkpoint has no leaf {name}.')
    value = np.asarray(flat[name])
    if value.shape != np.shape(leaf):
      raise ValueError(f'checkpoint leaf {name} has shape {value.shape}, '
                       f'expected {np.shape(leaf)}.')
    out.append(value.astype(np.asarray(leaf).dtype, copy=False))
  return jax.tree_util.tree_unflatten(treedef, out)


def list_steps(directory: str) -> list[int]:
  """The steps of the complete checkpoints in `directory`, sorted."""
  if not os.path.isdir(directory):
    return []
  steps = set()
  for name in os.listdir(directory):
    match = _STEP_RE.match(name)
    if match:
      steps.add(int(match.group(1)))
  return sorted(steps)


def latest_step(directory: str) -> int | None:
  """The largest step with a complete checkpoint in `directory`, or None."""
  steps = list_steps(directory)
  return steps[-1] if steps else None


def _paths(directory: str, step: int) -> tuple[str, str]:
  base = os.path.join(directory, f'step_{step}')
  return base, base + '.npz'


def save(directory: str, step: int, tree: Any, keep: int | None = 3,
         use_orbax: bool | None = None) -> str:
  """Writes `tree` as the checkpoint of `step`; keeps the newest `keep`.

  Args:
    directory: the checkpoint folder (created if needed).
    step: the step number (an int >= 0).
    tree: a pytree of arrays.
    keep: how many checkpoints to keep (older ones are deleted); None: all.
    use_orbax: True: orbax (error if missing); False: .npz; None: orbax if it
      can be imported, else .npz.

  Returns:
    The path written.
  """
  os.makedirs(directory, exist_ok=True)
  _remove_partial_writes(directory)
  flat = _flatten(tree)
  folder, npz = _paths(directory, int(step))
  ocp = _orbax() if use_orbax in (None, True) else None
  if use_orbax and ocp is None:
    raise ImportError('orbax.checkpoint cannot be imported.')
  if ocp is not None:
    with _quiet_absl():
      checkpointer = ocp.StandardCheckpointer()
      try:
        checkpointer.save(os.path.abspath(folder), flat, force=True)
        checkpointer.wait_until_finished()
      finally:
        checkpointer.close()
    path = folder
  else:
    tmp = f'{npz}.tmp{os.getpid()}'
    with open(tmp, 'wb') as f:
      np.savez(f, **{f'leaf{i}': v for i, v in enumerate(flat.values())},
               __names__=np.array(list(flat)))
    os.replace(tmp, npz)
    path = npz
  if keep is not None:
    for old in list_steps(directory)[:-keep]:
      _delete(directory, old)
  return path


def _remove_partial_writes(directory: str) -> None:
  """Deletes what a killed writer left: orbax temporary folders, .npz.tmp."""
  for name in os.listdir(directory):
    if name.startswith('step_') and not _STEP_RE.match(name) and (
        '.orbax-checkpoint-tmp' in name or '.npz.tmp' in name):
      path = os.path.join(directory, name)
      if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
      else:
        os.remove(path)


def _delete(directory: str, step: int) -> None:
  folder, npz = _paths(directory, step)
  if os.path.isdir(folder):
    shutil.rmtree(folder, ignore_errors=True)
  if os.path.exists(npz):
    os.remove(npz)


def restore(directory: str, target: Any, step: int | None = None) -> Any:
  """Reads the checkpoint of `step` (default: the latest) into `target`'s shape.

  Args:
    directory: the checkpoint folder.
    target: a pytree with the structure, shapes and dtypes to restore (e.g.
      the freshly initialised state; its values are not used). It may be a
      sub-tree of what was saved: for a saved dict {'params': p, ...},
      target {'params': p0} restores only the params.
    step: which checkpoint; None: the latest.

  Returns:
    A pytree like `target` holding the saved numpy arrays.

  Raises:
    FileNotFoundError: there is no (such) checkpoint.
  """
  if step is None:
    step = latest_step(directory)
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {directory}.')
  folder, npz = _paths(directory, int(step))
  if os.path.exists(npz):
    with np.load(npz, allow_pickle=False) as f:
      names = [str(n) for n in f['__names__']]
      flat = {n: f[f'leaf{i}'] for i, n in enumerate(names)}
  elif os.path.isdir(folder):
    ocp = _orbax()
    if ocp is None:
      raise ImportError(f'{folder} is an orbax checkpoint, but '
                        'orbax.checkpoint cannot be imported.')
    with _quiet_absl():
      checkpointer = ocp.StandardCheckpointer()
      try:
        # Everything saved (the target may ask for a subset, e.g. the params).
        flat = checkpointer.restore(os.path.abspath(folder))
      finally:
        checkpointer.close()
  else:
    raise FileNotFoundError(f'no checkpoint of step {step} in {directory}.')
  return _unflatten(target, flat)
