"""Flags shared by every experiment script, and output-directory handling.

Each experiment (`experiments/NAME.py`) calls, at module level::

  from vae import cli
  cli.define_common_flags()

which defines `--output_dir` and `--seed`, and in `main`::

  out = cli.output_dir('NAME')   # resolves (and creates) the output folder

`launch.py` reads `COMMON_FLAGS` to document and validate these flags.
This module does not import JAX.
"""

from collections.abc import Sequence
import dataclasses
import datetime
import os
import sys
from typing import Any

from absl import flags

DEFAULT_RUNS_DIR = 'runs'
_TIMESTAMP_FORMAT = '%Y%m%d-%H%M%S'


@dataclasses.dataclass(frozen=True)
class CommonFlag:
  """Static description of one common flag (used by `launch.py --help`)."""
  name: str
  type: str  # 'string' or 'int'.
  default: Any
  help: str


COMMON_FLAGS: Sequence[CommonFlag] = (
    CommonFlag('output_dir', 'string', None,
               'Directory for results.json, results.csv, config.json and '
               'figures. Default: a fresh folder '
               f'./{DEFAULT_RUNS_DIR}/<experiment>-<YYYYmmdd-HHMMSS>[-N].'),
    CommonFlag('seed', 'int', 0, 'Random seed (an integer).'),
)


def define_common_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines `--output_dir` (string) and `--seed` (int, default 0).

  Call it once at module level in every experiment script. Calling it again
  (or after the flags were defined elsewhere) is a no-op.

  Args:
    flag_values: the `FlagValues` to define them in (default `flags.FLAGS`).
  """
  for spec in COMMON_FLAGS:
    if spec.name in flag_values:
      continue
    if spec.type == 'int':
      flags.DEFINE_integer(spec.name, spec.default, spec.help,
                           flag_values=flag_values)
    else:
      flags.DEFINE_string(spec.name, spec.default, spec.help,
                          flag_values=flag_values)


def fresh_output_dir(name: str, root: str | os.PathLike[str] = DEFAULT_RUNS_DIR,
                     now: datetime.datetime | None = None) -> str:
  """Creates and returns a new folder `<root>/<name>-<YYYYmmdd-HHMMSS>[-N]`.

  The folder is created atomically, so two processes started in the same
  second get different folders (the second gets the `-1` suffix, etc.).

  Args:
    name: the experiment name.
    root: the parent folder (created if needed), default `./runs`.
    now: the timestamp to use (default: the current local time).

  Returns:
    The absolute path of the created folder.
  """
  now = datetime.datetime.now() if now is None else now
  base = os.path.join(os.path.abspath(root),
                      f'{name}-{now.strftime(_TIMESTAMP_FORMAT)}')
  os.makedirs(os.path.dirname(base), exist_ok=True)
  for n in range(10_000):
    path = base if n == 0 else f'{base}-{n}'
    try:
      os.mkdir(path)
    except FileExistsError:
      continue
    return path
  raise RuntimeError(f'could not create a fresh output folder {base}-N')


def experiment_name() -> str:
  """The running script's name (`experiments/NAME.py` -> 'NAME')."""
  main = sys.modules.get('__main__')
  path = getattr(main, '__file__', None) or (sys.argv[0] if sys.argv else '')
  return os.path.splitext(os.path.basename(path))[0] or 'experiment'


def output_dir(name: str | None = None,
               flag_values: flags.FlagValues = flags.FLAGS,
               root: str | os.PathLike[str] = DEFAULT_RUNS_DIR) -> str:
  """Resolves the experiment's output folder, creating it; returns its path.

  Uses `--output_dir` if set; otherwise creates a fresh folder
  `<root>/<name>-<YYYYmmdd-HHMMSS>[-N]` and stores it back into
  `--output_dir`, so later calls (and `config.json`) see the same folder.

  Args:
    name: the experiment name, default the script's file name.
    flag_values: the parsed flags (default `flags.FLAGS`); they must contain
      `output_dir` (see `define_common_flags`).
    root: the parent folder of fresh folders, default `./runs`.

  Returns:
    The absolute path of the (existing) output folder.
  """
  if 'output_dir' not in flag_values:
    raise ValueError('--output_dir is not defined; call '
                     'cli.define_common_flags() at module level.')
  path = flag_values['output_dir'].value
  if path:
    path = os.path.abspath(os.path.expanduser(path))
    os.makedirs(path, exist_ok=True)
  else:
    path = fresh_output_dir(name or experiment_name(), root)
  flag_values['output_dir'].value = path
  return path


def seed(flag_values: flags.FlagValues = flags.FLAGS) -> int:
  """The value of `--seed` (0 when the flag is not defined)."""
  return int(flag_values['seed'].value) if 'seed' in flag_values else 0
