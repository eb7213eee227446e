"""What a run writes: its folder, config.json, results, tables, figures.

A run folder holds `run.json` (the marker: this project's name, the kind of
folder, the experiment and the format version; written first), `config.json`
(experiment, seed, settings, versions, git commit, JAX backend),
`results.json` (a list of flat records; byte-identical for the same seed:
no timestamps), `results.csv` (the same records) and the experiment's
figures and extra files. Every file is written to a temporary name and
renamed into place, so a killed run never leaves a half-written file.

A folder is a run folder only when its `run.json` says so (or, for folders
written before the marker existed, when its `config.json` holds this
project's keys: experiment, seed, settings, versions); `--overwrite` replaces
nothing else, and it moves the previous run aside instead of deleting it.
"""

import csv
import dataclasses
import datetime
import importlib.metadata
import io
import json
import math
import os
import sys
from typing import Any, Mapping, Sequence

import numpy as np

from vae import config as cfg

CONFIG_JSON = 'config.json'
RUNS_DIR = 'runs'
_VERSIONED = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy')


def to_jsonable(value: Any) -> Any:
  """Plain JSON values: arrays/scalars to lists/numbers, NaN/inf to None."""
  if isinstance(value, Mapping):
    return {str(k): to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if hasattr(value, '__array__') or isinstance(value, np.generic):
    return to_jsonable(np.asarray(value).tolist())
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if value is None or isinstance(value, (bool, int, str)):
    return value
  return str(value)


def write_text(path: str, text: str | bytes) -> str:
  """Writes `text` (or bytes) to `path` through a temporary file and an
  atomic rename."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}'
  try:
    if isinstance(text, bytes):
      with open(tmp, 'wb') as f:
        f.write(text)
    else:
      with open(tmp, 'w', encoding='utf-8', newline='') as f:
        f.write(text)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def write_json(path: str, obj: Any) -> str:
  """Deterministic, indented JSON (NaN written as null)."""
  return write_text(path, json.dumps(to_jsonable(obj), indent=2,
                                     ensure_ascii=False) + '\n')


def columns_of(records: Sequence[Mapping[str, Any]]) -> list[str]:
  """The union of the records' keys in order of first appearance."""
  return list(dict.fromkeys(k for r in records for k in r))


def write_results(directory: str, records: Sequence[Mapping[str, Any]],
                  name: str = 'results') -> None:
  """<name>.json and <name>.csv (one column per key) in `directory`."""
  records = to_jsonable(list(records))
  write_json(os.path.join(directory, f'{name}.json'), records)
  text = io.StringIO()
  writer = csv.DictWriter(text, columns_of(records), lineterminator='\n')
  writer.writeheader()
  writer.writerows({k: '' if v is None else v for k, v in r.items()}
                   for r in records)
  write_text(os.path.join(directory, f'{name}.csv'), text.getvalue())


def write_config(directory: str, experiment: str, config: Any,
                 seed: int) -> None:
  """config.json: experiment, seed, settings, command line, versions, the
  git commit of this code (`git_commit`), JAX's backend."""
  versions: dict[str, str | None] = {'python': sys.version.split()[0]}
  for name in _VERSIONED:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  jax = sys.modules.get('jax')
  commit, dirty = git_commit()
  write_json(os.path.join(directory, CONFIG_JSON), {
      'experiment': experiment, 'seed': seed,
      'settings': cfg.to_dict(config), 'argv': sys.argv,
      'versions': versions, 'git_commit': commit, 'git_dirty': dirty,
      'jax_backend': jax.default_backend() if jax else None})


def git_commit(directory: str | None = None) -> tuple[str, bool | None]:
  """(commit, has uncommitted changes) of the checkout holding this code
  (or `directory`): ('unknown', None) outside a git checkout or without
  git (an installed package)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  where = directory or os.path.dirname(os.path.abspath(__file__))
  git = lambda *a: subprocess.run(['git', '-C', where, *a], text=True,
                                  capture_output=True, timeout=10)
  try:
    head = git('rev-parse', 'HEAD')
    if head.returncode != 0:
      return 'unknown', None
    status = git('status', '--porcelain', '--untracked-files=no')
  except (OSError, subprocess.SubprocessError):
    return 'unknown', None
  dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
  return head.stdout.strip(), dirty


PROJECT = 'vae'
FORMAT_VERSION = 1
RUN_JSON = 'run.json'
LOCK = '.lock'
SWEEP_JSON = 'sweep.json'
# The keys of the config.json this project wrote before run.json existed.
_CONFIG_KEYS = {'experiment': str, 'seed': int, 'settings': dict,
                'versions': dict}
# Where no run can be written, whatever the permissions say.
_SYSTEM_DIRS = ('/proc', '/sys', '/dev')
_PATH_MAX = 4096


class RunDirError(Exception):
  """The run folder cannot be used (one line, naming the folder and the fix)."""


def _kind_of(value: Any) -> str:
  return {dict: 'an object', list: 'a list', str: 'a string',
          bool: 'a boolean', type(None): 'null'}.get(type(value), 'a number')


def read_json(path: str) -> Any:
  """The JSON value in the file `path`.

  Raises:
    RunDirError: the file cannot be read, is empty, is not UTF-8 text or is
      not JSON (one line naming the file).
  """
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise RunDirError(f'{path} cannot be read ({e.strerror})') from None
  if not data.strip():
    raise RunDirError(f'{path} is empty')
  try:
    return json.loads(data.decode('utf-8'))
  except UnicodeDecodeError:
    raise RunDirError(f'{path} is not text (binary data)') from None
  except json.JSONDecodeError as e:
    raise RunDirError(f'{path} is not valid JSON ({e.msg} at line '
                      f'{e.lineno} column {e.colno})') from None
  except RecursionError:
    raise RunDirError(f'{path} is nested too deeply to read') from None


def read_config(directory: str) -> dict[str, Any] | None:
  """The config.json of a folder as a dict, or None when it has none.

  Raises:
    RunDirError: config.json exists but is not a JSON object (one line).
  """
  path = os.path.join(directory, CONFIG_JSON)
  if not os.path.lexists(path):
    return None
  value = read_json(path)
  if not isinstance(value, dict):
    raise RunDirError(f'{path} holds {_kind_of(value)}, not a JSON object')
  return value


def write_marker(directory: str, experiment: str, kind: str = 'run') -> None:
  """run.json: what makes `directory` a run (or sweep) folder of this project.

  Written (atomically) before anything else of the run.
  """
  write_json(os.path.join(directory, RUN_JSON), {
      'project': PROJECT, 'kind': kind, 'experiment': experiment,
      'format_version': FORMAT_VERSION})


def _marker(directory: str) -> dict[str, Any] | None:
  """The run.json of `directory` when this project wrote it, else None."""
  path = os.path.join(directory, RUN_JSON)
  if not os.path.isfile(path):
    return None
  try:
    value = read_json(path)
  except RunDirError:
    return None
  if (isinstance(value, dict) and value.get('project') == PROJECT and
      value.get('kind') in ('run', 'sweep') and
      isinstance(value.get('experiment'), str) and
      isinstance(value.get('format_version'), int)):
    return value
  return None


def _legacy_sweep(directory: str) -> bool:
  """Whether sweep.json is one launch.py wrote (before run.json existed)."""
  path = os.path.join(directory, SWEEP_JSON)
  try:
    rows = read_json(path) if os.path.isfile(path) else None
  except RunDirError:
    return False
  return (isinstance(rows, list) and bool(rows) and
          all(isinstance(r, dict) and {'point', 'status'} <= set(r)
              for r in rows))


@dataclasses.dataclass(frozen=True)
class Folder:
  """What a folder holds, as far as runs go (`inspect`).

  Attributes:
    path: the folder.
    entries: its entries, the lock left out.
    kind: 'run' or 'sweep' when it is a folder of this project, else None.
    experiment: the experiment of that run or sweep (None: an old sweep).
    config: its config.json, when it is a JSON object.
    problem: why config.json cannot be read (one line), else None.
    legacy: recognised without run.json, from this project's config.json
      keys (experiment, seed, settings, versions) or sweep.json.
  """
  path: str
  entries: tuple[str, ...]
  kind: str | None = None
  experiment: str | None = None
  config: dict[str, Any] | None = None
  problem: str | None = None
  legacy: bool = False


def inspect(directory: str) -> Folder:
  """What `directory` holds: a run or sweep of this project, or something
  else (never an error: a config.json that cannot be read is `problem`)."""
  entries = tuple(sorted(e for e in (os.listdir(directory) if
                                     os.path.isdir(directory) else [])
                         if e != LOCK))
  if not entries:
    return Folder(directory, entries)
  config, problem = None, None
  try:
    config = read_config(directory)
  except RunDirError as e:
    problem = str(e)
  marker = _marker(directory)
  if marker is not None:
    return Folder(directory, entries, marker['kind'], marker['experiment'],
                  config, problem)
  if config is not None and all(isinstance(config.get(k), t)
                                for k, t in _CONFIG_KEYS.items()):
    return Folder(directory, entries, 'run', config['experiment'], config,
                  legacy=True)
  if config is None and problem is None and _legacy_sweep(directory):
    return Folder(directory, entries, 'sweep', legacy=True)
  return Folder(directory, entries, config=config, problem=problem)


def check_path(directory: str) -> None:
  """Refuses a folder path where no run can be written.

  Raises:
    RunDirError: one line: the path is too long or has too long a name, is
      under /proc, /sys or /dev, is (below) a file, or its nearest existing
      parent is not writable.
  """
  path = os.path.abspath(directory)
  if len(os.fsencode(path)) >= _PATH_MAX:
    raise RunDirError(f'the folder path is too long ({len(os.fsencode(path))}'
                      f' bytes; at most {_PATH_MAX - 1}); choose a shorter '
                      '--output_dir.')
  real = os.path.realpath(path)
  for system in _SYSTEM_DIRS:
    if real == system or real.startswith(system + os.sep):
      raise RunDirError(f'{directory} is under {system}, where no run can be '
                        'written; choose another --output_dir.')
  if os.path.lexists(path) and not os.path.isdir(path):
    raise RunDirError(f'{directory} is a file, not a folder.')
  parent = path
  while not os.path.lexists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise RunDirError(f'{parent} is a file, not a folder; choose another '
                      '--output_dir.')
  try:
    name_max = os.pathconf(parent, 'PC_NAME_MAX')
  except (OSError, ValueError):
    name_max = 255
  for name in os.path.relpath(path, parent).split(os.sep):
    if len(os.fsencode(name)) > name_max:
      raise RunDirError(f'the folder name {name[:24]}... is longer than '
                        f'{name_max} bytes; choose a shorter --output_dir.')
  if not os.access(parent, os.W_OK):
    raise RunDirError(f'{parent} is not writable; choose another '
                      '--output_dir.')
  if path != parent:  # Can a folder be made there? (Root passes os.access.)
    import tempfile  # pylint: disable=g-import-not-at-top
    try:
      os.rmdir(tempfile.mkdtemp(prefix='.vae-probe-', dir=parent))
    except OSError as e:
      raise RunDirError(f'{parent} is not writable ({e.strerror}); choose '
                        'another --output_dir.') from None


_NO_DEFAULT = object()


def _default(cls: type, path: str) -> Any:
  """The value of setting `path` ('a.b.c') in a default `cls()`: the field's
  default, through the defaults of the nested configs that hold it."""
  value: Any = None
  for i, part in enumerate(path.split('.')):
    if i:
      value = getattr(value, part, _NO_DEFAULT)
    else:
      fields = {f.name: f for f in dataclasses.fields(cls)}
      if part not in fields:
        return _NO_DEFAULT
      value = fields[part].default
    if value is dataclasses.MISSING or value is _NO_DEFAULT:
      return _NO_DEFAULT
  return list(value) if isinstance(value, tuple) else value


def _under_new_names(old: Mapping[str, Any], cls: type) -> dict[str, Any]:
  """A run's stored settings with renamed ones under their new names.

  The experiment module of `cls` lists its renamed flags as `RENAMED =
  {old name: new name}`; a run made before a rename stored the old name.
  """
  renamed = getattr(sys.modules.get(cls.__module__), 'RENAMED', None) or {}
  leaves = {path.split('.')[-1]: (path, owner, field)
            for path, owner, field in cfg.leaves(cls)}
  out = dict(old)
  for key in old:
    leaf = leaves.get(renamed.get(key.split('.')[-1], ''))
    if leaf is not None and leaf[0] not in old:
      value = out.pop(key)
      if cfg.value_type(leaf[1], leaf[2])[1] and not isinstance(value, list):
        value = [value]  # One width became a list of widths.
      out[leaf[0]] = value
  return out


def _differences(old: Mapping[str, Any], new: Mapping[str, Any],
                 resumable: Sequence[str], cls: type | None = None
                 ) -> list[str]:
  # Where the data is read from, not what is computed, may change on resume.
  # (Imported here: vae.data imports jax, which launch.py loads late.)
  from vae import data as data_lib  # pylint: disable=g-import-not-at-top
  locations = [f.name for f in dataclasses.fields(data_lib.DataPaths)]
  keys = sorted(set(old) | set(new))
  # A setting added after the run was made, at its default, is what that
  # run did (the code then had no other behaviour): not a difference.
  added = {k for k in keys if k not in old and cls is not None and
           new.get(k) == _default(cls, k)}
  return [f'{k}={old.get(k)!r} now {new.get(k)!r}' for k in keys
          if k.split('.')[-1] not in (*resumable, *locations)
          and k not in added and old.get(k) != new.get(k)]


def check_dir(directory: str, experiment: str, config: Any,
              seed: int | None = None, resumable: Sequence[str] = (),
              overwrite: bool = False) -> None:
  """Refuses a folder that holds something other than this run.

  A missing or empty folder is accepted. A non-empty one only when it is a
  run folder of this project (`inspect`: run.json, or an old config.json)
  holding a run of the same experiment with the same seed and settings
  (those named in `resumable` and the data locations may differ: the run
  resumes), or, with `overwrite`, any run folder of this project (its run
  is moved aside, `move_aside`).

  Raises:
    RunDirError: one line naming the folder, what differs and the fix.
  """
  check_path(directory)
  folder = inspect(directory)
  if not folder.entries:
    return
  if folder.kind is None:
    why = f'; {folder.problem}' if folder.problem else ''
    if overwrite:
      raise RunDirError(f'{directory} is not a run folder (no {RUN_JSON} of '
                        f'this project{why}); --overwrite only replaces run '
                        'folders: choose another --output_dir.')
    raise RunDirError(f'{directory} is not empty and holds no run (no '
                      f'{RUN_JSON} of this project{why}); choose another '
                      '--output_dir.')
  if overwrite:
    return
  if folder.kind == 'sweep':
    of = f' of {folder.experiment}' if folder.experiment else ''
    raise RunDirError(f'{directory} holds a sweep{of}; use another '
                      '--output_dir or --overwrite.')
  if folder.experiment != experiment:
    raise RunDirError(f'{directory} holds a run of {folder.experiment}; use '
                      'another --output_dir or --overwrite.')
  if folder.problem:
    raise RunDirError(f'{folder.problem}, so this {experiment} run cannot '
                      'resume; use --overwrite (the old run is moved aside) '
                      'or another --output_dir.')
  if folder.config is None:
    if set(folder.entries) <= {RUN_JSON}:
      return  # Stopped before its config.json: nothing was computed.
    raise RunDirError(f'{directory} holds a {experiment} run without '
                      f'{CONFIG_JSON}; use --overwrite (the old run is moved '
                      'aside) or another --output_dir.')
  settings = folder.config.get('settings')
  differ = _differences(_under_new_names(
      settings if isinstance(settings, dict) else {}, type(config)),
                        cfg.to_dict(config), resumable, type(config))
  if seed is not None and folder.config.get('seed') != seed:
    differ.insert(0, f'seed={folder.config.get("seed")!r} now {seed!r}')
  if differ:
    raise RunDirError(f'{directory} holds a {experiment} run with other '
                      f'settings ({"; ".join(differ[:4])}); use another '
                      '--output_dir or --overwrite.')


def check_sweep_dir(directory: str, experiment: str,
                    overwrite: bool = False) -> None:
  """Refuses a sweep folder that holds anything but sweeps of this project.

  Raises:
    RunDirError: one line naming the folder and the fix.
  """
  check_path(directory)
  folder = inspect(directory)
  if not folder.entries:
    return
  if folder.kind != 'sweep':
    what = (f'a run of {folder.experiment}' if folder.kind else
            f'{len(folder.entries)} entries and no sweep (no {RUN_JSON} of '
            'this project)')
    raise RunDirError(f'{directory} holds {what}; a sweep needs an empty '
                      'folder or one of its earlier sweeps: choose another '
                      '--output_dir.')
  if folder.experiment not in (None, experiment) and not overwrite:
    raise RunDirError(f'{directory} holds a sweep of {folder.experiment}; use '
                      'another --output_dir or --overwrite.')


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _process_start(pid: int) -> float | None:
  """When process `pid` started (seconds since the epoch; Linux /proc), or
  None when unknown."""
  try:
    with open(f'/proc/{pid}/stat', 'rb') as f:
      ticks = int(f.read().rsplit(b')', 1)[1].split()[19])
    with open('/proc/stat', 'rb') as f:
      boot = next(int(line.split()[1]) for line in f
                  if line.startswith(b'btime'))
    return boot + ticks / os.sysconf('SC_CLK_TCK')
  except (OSError, ValueError, IndexError, StopIteration):
    return None


class Lock:
  """An exclusive lock on a folder: <folder>/.lock, held with `fcntl.flock`.

  The kernel ends an flock when its process ends, however it ends, so a
  lock file left by a killed run is free: the one process whose flock
  succeeds takes it over (and checks that the file is still the one at the
  path, not one its last holder just removed). No PID is trusted, so a
  reused PID cannot hold a folder. The file records the holder's PID, host
  and start time for the refusal. A `.lock` of an earlier version (a bare
  PID, no flock) counts as held only while that PID is a process that
  started before the file was written.
  """

  def __init__(self, directory: str):
    self.path = os.path.join(directory, LOCK)
    self._fd: int | None = None

  def _busy(self, fd: int) -> RunDirError:
    try:
      holder = json.loads(os.pread(fd, 4096, 0).decode('utf-8'))
      who = (f"process {int(holder['pid'])} on {holder['host']} since "
             f"{holder['started']}")
    except (OSError, ValueError, TypeError, KeyError):
      who = 'another process'
    return RunDirError(f'{os.path.dirname(self.path)} is in use by {who}; '
                       'wait for it to finish or stop that process (the lock '
                       'ends with it), or use another --output_dir.')

  def _legacy_holder(self, fd: int) -> int | None:
    """The live PID of an earlier version's lock file, else None."""
    try:
      text = os.pread(fd, 64, 0).decode('ascii').strip()
      written = os.fstat(fd).st_mtime
    except (OSError, UnicodeDecodeError):
      return None
    if not text.isdigit() or int(text) == os.getpid() or not _alive(
        int(text)):
      return None
    started = _process_start(int(text))
    return int(text) if started is None or started <= written + 1 else None

  def __enter__(self):
    import fcntl  # pylint: disable=g-import-not-at-top
    import socket  # pylint: disable=g-import-not-at-top
    for _ in range(100):
      try:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      except OSError as e:
        raise RunDirError(f'cannot lock {self.path} ({e.strerror}).') from None
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        error = self._busy(fd)
        os.close(fd)
        raise error from None
      except OSError as e:
        os.close(fd)
        raise RunDirError(f'cannot lock {self.path} ({e.strerror}); use a '
                          'folder on a file system with locks.') from None
      try:
        current = os.path.samestat(os.fstat(fd), os.stat(self.path))
      except FileNotFoundError:
        current = False
      if not current:  # Its holder removed it as we locked it: again.
        os.close(fd)
        continue
      if (pid := self._legacy_holder(fd)) is not None:
        os.close(fd)
        raise RunDirError(f'{os.path.dirname(self.path)} is in use by process '
                          f'{pid} (a lock of an earlier version); wait for it '
                          f'to finish, or if it is no run, delete {self.path}.')
      record = {'pid': os.getpid(), 'host': socket.gethostname(),
                'started': datetime.datetime.now().astimezone().isoformat(
                    timespec='seconds'),
                'process_started': _process_start(os.getpid())}
      os.ftruncate(fd, 0)
      os.pwrite(fd, json.dumps(record).encode('utf-8'), 0)
      self._fd = fd
      return self
    raise RunDirError(f'could not lock {self.path}; try again.')

  def __exit__(self, *exc):
    if self._fd is not None:
      try:  # Removed while still held: no one locks a file on its way out.
        os.remove(self.path)
      except FileNotFoundError:
        pass
      os.close(self._fd)
      self._fd = None


def move_aside(directory: str) -> str | None:
  """Moves a run folder's entries (not its lock) into a new sibling folder
  `<folder>.old-N` (for --overwrite: the old run is kept, never deleted);
  returns that folder, or None when there was nothing to move.

  Raises:
    RunDirError: the entries cannot be moved (one line).
  """
  entries = [e for e in os.listdir(directory) if e != LOCK]
  if not entries:
    return None
  base = os.path.abspath(directory).rstrip(os.sep)
  try:
    for n in range(1, 10000):
      aside = f'{base}.old-{n}'
      try:
        os.mkdir(aside)
        break
      except FileExistsError:
        continue
    else:
      raise RunDirError(f'no free name {base}.old-N for the previous run.')
    for entry in entries:
      os.rename(os.path.join(directory, entry), os.path.join(aside, entry))
  except OSError as e:
    raise RunDirError(f'cannot move the previous run in {directory} aside '
                      f'({e.strerror}); move it yourself.') from None
  return aside


def discard_unused(directory: str) -> bool:
  """After a run that failed before it wrote anything: removes the files
  the runner wrote (run.json, config.json); True when the folder is then
  empty (but for its lock)."""
  entries = set(os.listdir(directory)) - {LOCK}
  if not entries <= {RUN_JSON, CONFIG_JSON}:
    return False
  for entry in entries:
    os.remove(os.path.join(directory, entry))
  return True


def fresh_dir(experiment: str, root: str = RUNS_DIR) -> str:
  """Creates `<root>/<experiment>-<YYYYmmdd-HHMMSS>[-N]` atomically."""
  base = os.path.join(os.path.abspath(root), f'{experiment}-'
                      f'{datetime.datetime.now():%Y%m%d-%H%M%S}')
  os.makedirs(os.path.dirname(base), exist_ok=True)
  for n in range(1000):
    path = base if n == 0 else f'{base}-{n}'
    try:
      os.mkdir(path)
      return path
    except FileExistsError:
      continue
  raise RuntimeError(f'no fresh folder {base}-N')


def _cell(value: Any, float_fmt: str) -> str:
  if value is None:
    return '-'
  if isinstance(value, float):
    return format(value, float_fmt)
  return str(value)


def format_table(records: Sequence[Mapping[str, Any]],
                 columns: Sequence[str] | None = None,
                 float_fmt: str = '.4g') -> str:
  """A fixed-width text table: numbers right-aligned, missing values '-'."""
  records = to_jsonable(list(records))
  columns = list(columns or columns_of(records))
  cells = [[_cell(r.get(c), float_fmt) for c in columns] for r in records]
  numeric = [all(isinstance(r.get(c), (int, float, type(None))) and
                 not isinstance(r.get(c), bool) for r in records)
             for c in columns]
  widths = [max([len(c)] + [len(row[i]) for row in cells])
            for i, c in enumerate(columns)]
  fmt = lambda row, head=False: '  '.join(
      x.rjust(w) if num and not head else x.ljust(w)
      for x, w, num in zip(row, widths, numeric)).rstrip()
  return '\n'.join([fmt(columns, True), '  '.join('-' * w for w in widths)] +
                   [fmt(row) for row in cells])


@dataclasses.dataclass
class Run:
  """The folder of one run, handed to an experiment's `run`.

  Attributes:
    dir: the folder (exists).
  """
  dir: str

  def path(self, name: str) -> str:
    """The path of a file in the run folder."""
    return os.path.join(self.dir, name)

  def log(self, message: str) -> None:
    """A progress line on stdout (flushed; above any progress bar)."""
    from experiments.common import progress  # (imports tqdm)
    progress.write(message)

  def table(self, records: Sequence[Mapping[str, Any]],
            columns: Sequence[str] | None = None,
            float_fmt: str = '.4g') -> None:
    """Prints `format_table(records)`."""
    self.log(format_table(records, columns, float_fmt))

  def write_json(self, name: str, obj: Any) -> str:
    return write_json(self.path(name), obj)

  def save_figure(self, fig: Any, name: str, dpi: int = 150) -> str:
    """Saves a matplotlib figure as PNG (Agg, no display) and closes it."""
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    path = self.path(name if name.endswith('.png') else name + '.png')
    png = io.BytesIO()
    fig.savefig(png, format='png', dpi=dpi, bbox_inches='tight',
                metadata={'Software': None})
    plt.close(fig)
    return write_text(path, png.getvalue())


def pyplot():
  """matplotlib.pyplot on the Agg backend (headless)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt
