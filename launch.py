"""Runs the experiments in `experiments/`, alone or as sweeps.

Usage::

  python launch.py                          # the default experiment
  python launch.py --help                   # experiments and their flags
  python launch.py --experiment=NAME [--flag=value ...]
  python launch.py --experiment=NAME --sweep='num_samples=1,10,100' \\
      --sweep='estimator=pathwise,score' [--parallel=2] [--dry_run]
  python launch.py --experiment=NAME --sweep='seed=0,1,2' --launcher=slurm \\
      --slurm_partition=gpu --slurm_gpus=1 --slurm_time=120

Experiment contract
-------------------
An experiment is a module `experiments/NAME.py` that is a standard absl
script:

* The first line of its module docstring is a one-line description (shown
  by `--help`).
* Its flags are module-level `flags.DEFINE_*` calls (`DEFINE_string`,
  `DEFINE_integer`, `DEFINE_float`, `DEFINE_bool`/`DEFINE_boolean`,
  `DEFINE_enum`, `DEFINE_list`, `DEFINE_multi_*`, ...). Write the name,
  default, help and `enum_values` as literals (or module-level constants
  holding literals): `launch.py` reads them from the source with `ast`,
  without importing the module, to document and validate flags. (Flags it
  cannot read statically are looked up by running the module with
  `--helpxml`, which is slower.) Do not name flags like launcher flags
  (`experiment`, `sweep`, `parallel`, `launcher`, `dry_run`, `slurm_*`).
* It calls `cli.define_common_flags()` at module level (`from vae import
  cli`), which defines `--output_dir` (default: a fresh folder
  `./runs/<NAME>-<YYYYmmdd-HHMMSS>[-N]`) and `--seed` (int, default 0).
* It has `main(argv)` and ends with
  `if __name__ == '__main__': app.run(main)`. It does no work at import.
* In `main` it gets its folder with `out = cli.output_dir('NAME')`, writes
  `results.write_config(out, FLAGS, FLAGS.seed)` and finally
  `results.write_results(out, records)` where `records` is a list of flat
  dicts (one per measurement); figures go through
  `results.save_figure(fig, os.path.join(out, 'x.png'))`. `results.json`
  must not contain timestamps (it is byte-identical across identical runs).
  Exit non-zero (raise) on failure.

A minimal experiment::

  \"\"\"Variance of gradient estimators on a Gaussian.\"\"\"
  from absl import app, flags
  from vae import cli, results

  _NUM_SAMPLES = flags.DEFINE_integer('num_samples', 10, 'Samples.')
  _ESTIMATOR = flags.DEFINE_enum('estimator', 'pathwise',
                                 ['pathwise', 'score'], 'Estimator.')
  cli.define_common_flags()
  FLAGS = flags.FLAGS

  def main(argv):
    del argv
    out = cli.output_dir('my_experiment')
    results.write_config(out, FLAGS, FLAGS.seed)
    records = [{'estimator': _ESTIMATOR.value, 'variance': 0.1}]
    print(results.format_table(records))
    results.write_results(out, records)

  if __name__ == '__main__':
    app.run(main)

What launch.py does
-------------------
All arguments are validated before anything runs or is written: an unknown
experiment, unknown flag, ill-typed value (int/float/bool/enum, bounds) or an
empty/malformed sweep prints ONE line on stderr (`launch.py: ...`) naming the
problem and the valid choices, and exits with code 2 without creating any
folder.

* Single run: runs `python -m experiments.NAME --flag=v ...
  --output_dir=<dir>` with its output streamed to the terminal; the exit
  code is the experiment's.
* Sweep (`--sweep=FLAG=V1,V2,...`, repeatable): runs the cartesian product
  of the values (values are split on ',', or on ';' when the list contains
  one, for list-valued flags). Each point runs as a subprocess with
  `--output_dir=<output_dir>/<k=v,k=v>` and its stdout/stderr in
  `<point dir>/log.txt`. At the end `<output_dir>` holds
  `sweep_results.json`/`.csv` (every point's `results.json` records with
  the sweep values prepended as columns) and `sweep.json` (the points, their
  status, command and log path). Failed points are reported with their log;
  the others still run; the exit code is 1 if any point failed.
* `--parallel=N` runs N local points at a time; `--launcher=slurm` submits
  each point as a Slurm job via submitit (`--slurm_cluster=local` runs the
  same path with submitit's local executor).
* `--dry_run` prints the commands without running anything.

The experiments package is `experiments/` next to this file, or the folder
named by the environment variable `VAE_EXPERIMENTS_DIR` (its parent folder
becomes the subprocesses' working directory and is put on PYTHONPATH).
"""

import ast
from collections.abc import Iterator, Sequence
import dataclasses
import datetime
import hashlib
import itertools
import os
import re
import shlex
import subprocess
import sys
import textwrap
from typing import Any
from xml.etree import ElementTree

from vae import cli
from vae import launchers
from vae import results

PROG = 'launch.py'
DEFAULT_EXPERIMENT = 'gaussian_gradients'
REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
EXPERIMENTS_DIR = os.path.join(REPO_ROOT, 'experiments')
EXPERIMENTS_DIR_ENV = 'VAE_EXPERIMENTS_DIR'

SWEEP_JSON = 'sweep.json'
SWEEP_RESULTS_JSON = 'sweep_results.json'
SWEEP_RESULTS_CSV = 'sweep_results.csv'

_HELP_FLAGS = ('help', 'h', '?', 'helpfull', 'helpshort', 'helpxml')
_TRUE = ('true', 't', '1')
_FALSE = ('false', 'f', '0')
_MAX_FOLDER_NAME = 120


class UsageError(Exception):
  """A problem with the command line (reported in one line, exit code 2)."""


def experiments_dir() -> str:
  """The experiments package folder (`VAE_EXPERIMENTS_DIR` or default)."""
  return os.path.abspath(os.environ.get(EXPERIMENTS_DIR_ENV)
                         or EXPERIMENTS_DIR)


# ---------------------------------------------------------------------------
# Flag specifications.


@dataclasses.dataclass
class FlagSpec:
  """What launch.py knows about one flag.

  Attributes:
    name: the flag name.
    type: 'string', 'bool', 'int', 'float', 'enum', 'enum_class', 'list',
      'multi_string', 'multi_int', 'multi_float', 'multi_enum',
      'multi_enum_class'.
    default: the default as shown by --help (Python source text).
    help: the help string.
    enum_values: the allowed values of enum flags (None: unknown).
    case_sensitive: whether enum values are matched case-sensitively.
    lower: lower bound of int/float flags (None: none).
    upper: upper bound of int/float flags (None: none).
    required: whether the flag must be given.
    resolved: False when the static reading missed something needed to
      validate values (e.g. enum values that are not literals).
  """
  name: str
  type: str
  default: str = 'None'
  help: str = ''
  enum_values: tuple[str, ...] | None = None
  case_sensitive: bool = True
  lower: float | None = None
  upper: float | None = None
  required: bool = False
  resolved: bool = True

  def describe_type(self) -> str:
    """E.g. 'int', 'enum: a|b', 'int >= 0'."""
    text = self.type
    if self.enum_values is not None:
      text = f'{self.type}: {"|".join(self.enum_values)}'
    if self.lower is not None and self.upper is not None:
      text += f' in [{_num(self.lower)}, {_num(self.upper)}]'
    elif self.lower is not None:
      text += f' >= {_num(self.lower)}'
    elif self.upper is not None:
      text += f' <= {_num(self.upper)}'
    if self.required:
      text += ', required'
    return text


def _num(x: float) -> str:
  return str(int(x)) if float(x).is_integer() else str(x)


# absl DEFINE function -> (flag type, positional parameter names).
_NAME_DEFAULT_HELP = ('name', 'default', 'help')
_DEFINE_SIGNATURES = {
    'DEFINE_string': ('string', _NAME_DEFAULT_HELP),
    'DEFINE_bool': ('bool', _NAME_DEFAULT_HELP),
    'DEFINE_boolean': ('bool', _NAME_DEFAULT_HELP),
    'DEFINE_integer': ('int', _NAME_DEFAULT_HELP),
    'DEFINE_float': ('float', _NAME_DEFAULT_HELP),
    'DEFINE_list': ('list', _NAME_DEFAULT_HELP),
    'DEFINE_spaceseplist': ('list', _NAME_DEFAULT_HELP),
    'DEFINE_multi_string': ('multi_string', _NAME_DEFAULT_HELP),
    'DEFINE_multi_integer': ('multi_int', _NAME_DEFAULT_HELP),
    'DEFINE_multi_float': ('multi_float', _NAME_DEFAULT_HELP),
    'DEFINE_enum': ('enum', ('name', 'default', 'enum_values', 'help')),
    'DEFINE_multi_enum': ('multi_enum',
                          ('name', 'default', 'enum_values', 'help')),
    'DEFINE_enum_class': ('enum_class',
                          ('name', 'default', 'enum_class', 'help')),
    'DEFINE_multi_enum_class': ('multi_enum_class',
                                ('name', 'default', 'enum_class', 'help')),
}

# --helpxml <type> -> our type.
_XML_TYPES = {
    'string': 'string', 'bool': 'bool', 'int': 'int', 'float': 'float',
    'string enum': 'enum', 'enum class': 'enum_class',
    'comma separated list of strings': 'list',
    'whitespace separated list of strings': 'list',
    'multi string': 'multi_string', 'multi int': 'multi_int',
    'multi float': 'multi_float', 'multi string enum': 'multi_enum',
    'multi enum class': 'multi_enum_class',
}

_NOT_RESOLVED = object()


class _StaticReader:
  """Reads flag definitions from a module's AST without importing it."""

  def __init__(self, tree: ast.Module):
    self.constants: dict[str, Any] = {}
    self.flags: dict[str, FlagSpec] = {}
    self.problems: list[str] = []
    self.calls_common = False
    self.required: list[str] = []
    self.has_main = False
    for node in tree.body:
      self._statement(node)
    for name in self.required:
      if name in self.flags:
        self.flags[name].required = True

  def _statement(self, node: ast.stmt) -> None:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      self.has_main |= node.name == 'main'
      return
    if isinstance(node, ast.ClassDef):
      return
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
      target = node.targets[0]
      if isinstance(target, ast.Name):
        value = self.evaluate(node.value)
        if value is not _NOT_RESOLVED:
          self.constants[target.id] = value
    elif isinstance(node, ast.AnnAssign) and node.value is not None:
      if isinstance(node.target, ast.Name):
        value = self.evaluate(node.value)
        if value is not _NOT_RESOLVED:
          self.constants[node.target.id] = value
    for child in ast.iter_child_nodes(node):
      if isinstance(child, ast.stmt):
        self._statement(child)
      else:
        for sub in ast.walk(child):
          if isinstance(sub, ast.Call):
            self._call(sub)

  def evaluate(self, node: ast.expr) -> Any:
    """The value of a literal-ish expression, or _NOT_RESOLVED."""
    try:
      return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
      pass
    if isinstance(node, ast.Name) and node.id in self.constants:
      return self.constants[node.id]
    if isinstance(node, ast.Name) and node.id in ('None', 'True', 'False'):
      return {'None': None, 'True': True, 'False': False}[node.id]
    if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add)):
      left, right = self.evaluate(node.left), self.evaluate(node.right)
      if _NOT_RESOLVED not in (left, right):
        try:
          return left + right
        except TypeError:
          return _NOT_RESOLVED
    if isinstance(node, (ast.List, ast.Tuple)):
      items = [self.evaluate(e) for e in node.elts]
      if _NOT_RESOLVED not in items:
        return list(items)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        and node.func.id in ('list', 'tuple', 'sorted') and
        len(node.args) == 1 and not node.keywords):
      inner = self.evaluate(node.args[0])
      if inner is not _NOT_RESOLVED:
        try:
          return {'list': list, 'tuple': tuple, 'sorted': sorted}[
              node.func.id](inner)
        except TypeError:
          return _NOT_RESOLVED
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr in ('keys',) and not node.args):
      inner = self.evaluate(node.func.value)
      if isinstance(inner, dict):
        return list(inner)
    return _NOT_RESOLVED

  def _call(self, call: ast.Call) -> None:
    func = call.func
    fname = (func.attr if isinstance(func, ast.Attribute) else
             func.id if isinstance(func, ast.Name) else None)
    if fname is None:
      return
    if fname == 'define_common_flags':
      self.calls_common = True
      return
    if fname in ('mark_flag_as_required', 'mark_flags_as_required'):
      if call.args:
        value = self.evaluate(call.args[0])
        if isinstance(value, str):
          self.required.append(value)
        elif isinstance(value, (list, tuple)):
          self.required.extend(v for v in value if isinstance(v, str))
      return
    if not fname.startswith('DEFINE'):
      return
    if fname not in _DEFINE_SIGNATURES:
      self.problems.append(f'{fname}(...) at line {call.lineno}')
      return
    ftype, params = _DEFINE_SIGNATURES[fname]
    args: dict[str, ast.expr] = {}
    for param, node in zip(params, call.args):
      args[param] = node
    for kw in call.keywords:
      if kw.arg is not None:
        args[kw.arg] = kw.value
    name = self.evaluate(args['name']) if 'name' in args else _NOT_RESOLVED
    if not isinstance(name, str):
      self.problems.append(f'{fname} with a non-literal name at line '
                           f'{call.lineno}')
      return
    spec = FlagSpec(name=name, type=ftype)
    if 'default' in args:
      spec.default = ast.unparse(args['default'])
    if 'help' in args:
      help_value = self.evaluate(args['help'])
      spec.help = (help_value if isinstance(help_value, str) else
                   ast.unparse(args['help']))
    if ftype in ('enum', 'multi_enum'):
      values = (self.evaluate(args['enum_values']) if 'enum_values' in args
                else _NOT_RESOLVED)
      if isinstance(values, (list, tuple)) and all(
          isinstance(v, str) for v in values):
        spec.enum_values = tuple(values)
      else:
        spec.resolved = False
    elif ftype in ('enum_class', 'multi_enum_class'):
      spec.resolved = False  # The enum class is only known at run time.
    for key, attr in (('lower_bound', 'lower'), ('upper_bound', 'upper')):
      if key in args:
        bound = self.evaluate(args[key])
        if isinstance(bound, (int, float)) and not isinstance(bound, bool):
          setattr(spec, attr, bound)
        elif bound is not None:
          spec.resolved = False
    if 'case_sensitive' in args:
      case = self.evaluate(args['case_sensitive'])
      if isinstance(case, bool):
        spec.case_sensitive = case
      else:
        spec.resolved = False
    if 'required' in args and self.evaluate(args['required']) is True:
      spec.required = True
    self.flags[name] = spec


@dataclasses.dataclass
class Experiment:
  """One experiment module, as read statically from its source.

  Attributes:
    name: NAME of `experiments/NAME.py`.
    path: the module's file.
    package: the package name (the experiments folder's name).
    description: the first line of the module docstring.
    flags: the flags read from the source (plus the common ones when it
      calls `cli.define_common_flags()`), by name.
    problems: flag definitions that could not be read statically.
    error: why the source could not be parsed (None if it could).
    calls_common: whether the module calls `cli.define_common_flags()`.
  """
  name: str
  path: str
  package: str
  description: str = ''
  flags: dict[str, FlagSpec] = dataclasses.field(default_factory=dict)
  problems: list[str] = dataclasses.field(default_factory=list)
  error: str | None = None
  calls_common: bool = False
  _runtime: dict[str, FlagSpec] | None = None
  _runtime_loaded: bool = False

  @property
  def module(self) -> str:
    """The module to run with `python -m`."""
    return f'{self.package}.{self.name}'

  def runtime_flags(self) -> dict[str, FlagSpec] | None:
    """The flags as absl reports them (`--helpxml`); None if that fails."""
    if not self._runtime_loaded:
      self._runtime_loaded = True
      self._runtime = _read_helpxml(self)
    return self._runtime

  def lookup(self, name: str) -> FlagSpec | None:
    """The spec of flag `name` (static, else from the module at run time)."""
    spec = self.flags.get(name)
    if spec is not None and spec.resolved:
      return spec
    runtime = self.runtime_flags()
    if runtime is not None and name in runtime:
      return runtime[name]
    return spec


def _common_specs() -> dict[str, FlagSpec]:
  specs = {}
  for flag in cli.COMMON_FLAGS:
    specs[flag.name] = FlagSpec(name=flag.name, type=flag.type,
                                default=repr(flag.default), help=flag.help)
  return specs


def read_experiment(path: str, package: str) -> Experiment | None:
  """Reads an experiment's description and flags from its source.

  Args:
    path: the `.py` file.
    package: the experiments package name.

  Returns:
    The `Experiment`, or None when the file is a helper module (it parses
    but has no module-level `main`).
  """
  name = os.path.splitext(os.path.basename(path))[0]
  experiment = Experiment(name=name, path=path, package=package)
  try:
    with open(path, encoding='utf-8') as f:
      tree = ast.parse(f.read(), filename=path)
  except (OSError, SyntaxError, ValueError) as e:
    experiment.error = f'{type(e).__name__}: {e}'
    return experiment
  reader = _StaticReader(tree)
  if not reader.has_main:
    return None
  docstring = ast.get_docstring(tree) or ''
  experiment.description = docstring.strip().split('\n', 1)[0].strip()
  experiment.calls_common = reader.calls_common
  if reader.calls_common:
    experiment.flags.update(_common_specs())
  experiment.flags.update(reader.flags)
  experiment.problems = reader.problems
  return experiment


def discover_experiments(directory: str | None = None) -> dict[str, Experiment]:
  """All experiments of the experiments folder, by name (sorted)."""
  directory = directory or experiments_dir()
  package = os.path.basename(directory)
  found: dict[str, Experiment] = {}
  try:
    names = sorted(os.listdir(directory))
  except OSError:
    return found
  for filename in names:
    stem, ext = os.path.splitext(filename)
    if ext != '.py' or stem.startswith('_') or not stem.isidentifier():
      continue
    experiment = read_experiment(os.path.join(directory, filename), package)
    if experiment is not None:
      found[stem] = experiment
  return found


def _subprocess_env(experiment: Experiment) -> tuple[str, dict[str, str]]:
  """(cwd, extra env) for running `experiment` as a subprocess."""
  root = os.path.dirname(os.path.dirname(experiment.path))
  paths = []
  for p in (root, REPO_ROOT):
    if p not in paths:
      paths.append(p)
  old = os.environ.get('PYTHONPATH')
  if old:
    paths.append(old)
  return root, {'PYTHONPATH': os.pathsep.join(paths)}


def _read_helpxml(experiment: Experiment) -> dict[str, FlagSpec] | None:
  """Flags from `python -m experiments.NAME --helpxml`; None on failure."""
  cwd, extra_env = _subprocess_env(experiment)
  env = dict(os.environ)
  env.update(extra_env)
  try:
    proc = subprocess.run(
        [sys.executable, '-m', experiment.module, '--helpxml'], cwd=cwd,
        env=env, capture_output=True, text=True, timeout=300, check=False,
        stdin=subprocess.DEVNULL)
    start = proc.stdout.find('<?xml')
    if start < 0:
      return None
    root = ElementTree.fromstring(proc.stdout[start:].encode('utf-8'))
  except (OSError, subprocess.SubprocessError, ElementTree.ParseError):
    return None
  specs = {}
  for node in root.iter('flag'):
    name = node.findtext('name')
    if not name or name in _HELP_FLAGS:
      continue
    xml_type = (node.findtext('type') or 'string').strip()
    spec = FlagSpec(name=name, type=_XML_TYPES.get(xml_type, 'string'),
                    default=repr(node.findtext('default') or ''),
                    help=node.findtext('meaning') or '')
    values = [e.text or '' for e in node.findall('enum_value')]
    if spec.type in ('enum', 'multi_enum', 'enum_class', 'multi_enum_class'):
      spec.enum_values = tuple(values)
      spec.case_sensitive = spec.type in ('enum', 'multi_enum')
      static = experiment.flags.get(name)
      if static is not None and spec.type in ('enum', 'multi_enum'):
        spec.case_sensitive = static.case_sensitive
    for tag, attr in (('lower_bound', 'lower'), ('upper_bound', 'upper')):
      text = node.findtext(tag)
      if text:
        try:
          setattr(spec, attr, float(text))
        except ValueError:
          pass
    specs[name] = spec
  return specs


# ---------------------------------------------------------------------------
# Values.


def check_value(spec: FlagSpec, raw: str, where: str) -> Any:
  """Parses `raw` for flag `spec` like absl would; returns the typed value.

  Args:
    spec: the flag.
    raw: the command-line text.
    where: how to name the flag in errors, e.g. '--num_samples'.

  Returns:
    The value (int, float, bool or str).

  Raises:
    UsageError: if the value is not valid for the flag.
  """
  base = spec.type[len('multi_'):] if spec.type.startswith('multi_') else (
      spec.type)
  if base == 'bool':
    if raw.lower() in _TRUE:
      return True
    if raw.lower() in _FALSE:
      return False
    raise UsageError(f'invalid value {raw!r} for {where} (bool); choose '
                     'from: true, false')
  if base in ('int', 'float'):
    try:
      if base == 'int':
        text = raw.strip()
        body = text.lstrip('+-')
        if len(body) > 2 and body[0] == '0' and body[1] in 'xo':
          value = int(text, 16 if body[1] == 'x' else 8)
        else:
          value = int(text, 10)
      else:
        value = float(raw)
    except ValueError:
      raise UsageError(
          f'invalid value {raw!r} for {where}; expected '
          f'{"an integer" if base == "int" else "a float"}') from None
    if spec.lower is not None and value < spec.lower:
      raise UsageError(f'invalid value {raw!r} for {where}; must be >= '
                       f'{_num(spec.lower)}')
    if spec.upper is not None and value > spec.upper:
      raise UsageError(f'invalid value {raw!r} for {where}; must be <= '
                       f'{_num(spec.upper)}')
    return value
  if base in ('enum', 'enum_class') and spec.enum_values is not None:
    if spec.case_sensitive:
      ok = raw in spec.enum_values
    else:
      ok = raw.lower() in {v.lower() for v in spec.enum_values}
    if not ok:
      raise UsageError(f'invalid value {raw!r} for {where}; choose from: '
                       f'{", ".join(spec.enum_values)}')
  return raw


def _flag_choices(experiment: Experiment) -> str:
  names = sorted(experiment.flags)
  return ', '.join(f'--{n}' for n in names) if names else '(none)'


# ---------------------------------------------------------------------------
# Command line.


@dataclasses.dataclass(frozen=True)
class LauncherFlag:
  """A flag of launch.py itself."""
  name: str
  type: str
  default: Any
  help: str
  lower: int | None = None
  enum_values: tuple[str, ...] | None = None


LAUNCHER_FLAGS = {f.name: f for f in (
    LauncherFlag('experiment', 'string', DEFAULT_EXPERIMENT,
                 'The experiment to run (see the list above).'),
    LauncherFlag('sweep', 'multi_string', None,
                 "A sweep 'FLAG=V1,V2,...' (repeat it for a cartesian "
                 "product; use ';' between values of list-valued flags)."),
    LauncherFlag('parallel', 'int', 1,
                 'Sweep points run at the same time (local launcher); with '
                 '--launcher=slurm, the most jobs running at once.', lower=1),
    LauncherFlag('launcher', 'enum', 'local', 'Where sweep points run.',
                 enum_values=('local', 'slurm')),
    LauncherFlag('dry_run', 'bool', False,
                 'Print the commands without running anything.'),
    LauncherFlag('slurm_partition', 'string', None, 'Slurm partition.'),
    LauncherFlag('slurm_gpus', 'int', 0, 'GPUs per Slurm job.', lower=0),
    LauncherFlag('slurm_time', 'int', 60, 'Time limit per Slurm job, in '
                 'minutes.', lower=1),
    LauncherFlag('slurm_mem', 'int', None, 'Memory per Slurm job, in GB '
                 '(default: the partition default).', lower=1),
    LauncherFlag('slurm_cpus', 'int', 1, 'CPUs per Slurm job.', lower=1),
    LauncherFlag('slurm_cluster', 'enum', 'auto',
                 "submitit cluster: 'auto' (Slurm when available), 'slurm', "
                 "or 'local' (run the jobs locally through submitit, for "
                 "debugging).", enum_values=('auto', 'slurm', 'local')),
)}


@dataclasses.dataclass
class Sweep:
  """One --sweep: a flag and its values (raw text and typed)."""
  name: str
  raw_values: list[str]
  values: list[Any]


@dataclasses.dataclass
class Invocation:
  """The validated command line."""
  experiment: Experiment
  flags: list[tuple[str, str]]  # Experiment flags: (name, raw value).
  sweeps: list[Sweep]
  options: dict[str, Any]  # Launcher flag values.
  explicit: set[str]  # Launcher flags given on the command line.
  output_dir: str | None  # Absolute --output_dir if given.


def _tokens(argv: Sequence[str]) -> Iterator[tuple[int, str, str | None]]:
  """Yields (index, flag name, value or None) for each '-'/'--' argument."""
  for i, token in enumerate(argv):
    if token == '--' or not token.startswith('-') or token == '-':
      yield i, '', token
      continue
    body = token[2:] if token.startswith('--') else token[1:]
    name, eq, value = body.partition('=')
    yield i, name, (value if eq else None)


def _find_experiment(argv: Sequence[str]) -> tuple[str, bool]:
  """First pass: (the --experiment value, whether help was asked for)."""
  name, want_help, skip = DEFAULT_EXPERIMENT, False, -1
  items = list(_tokens(argv))
  for i, flag, value in items:
    if i == skip or not flag:
      continue
    if flag in _HELP_FLAGS:
      want_help = True
    elif flag == 'experiment':
      if value is None:
        if i + 1 >= len(argv):
          raise UsageError('flag --experiment needs a value')
        value, skip = argv[i + 1], i + 1
      name = value
    elif value is None and flag in LAUNCHER_FLAGS and (
        LAUNCHER_FLAGS[flag].type != 'bool'):
      skip = i + 1
    elif (value is None and flag not in LAUNCHER_FLAGS and i + 1 < len(argv)
          and not argv[i + 1].startswith('-')):
      skip = i + 1  # Probably `--flag value`.
  return name, want_help


def _unknown_experiment(name: str, experiments: dict[str, Experiment]) -> str:
  choices = ', '.join(experiments) if experiments else (
      f'(no experiments in {experiments_dir()})')
  return f'unknown experiment {name!r}; choose from: {choices}'


def _parse_launcher_value(flag: LauncherFlag, raw: str) -> Any:
  where = f'--{flag.name}'
  if flag.type == 'bool':
    return check_value(FlagSpec(flag.name, 'bool'), raw, where)
  if flag.type == 'int':
    return check_value(FlagSpec(flag.name, 'int', lower=flag.lower), raw,
                       where)
  if flag.type == 'enum':
    return check_value(FlagSpec(flag.name, 'enum',
                                enum_values=flag.enum_values), raw, where)
  if not raw:
    raise UsageError(f'empty value for {where}')
  return raw


def _split_sweep_values(text: str) -> list[str]:
  return text.split(';') if ';' in text else text.split(',')


def parse_args(argv: Sequence[str],
               experiments: dict[str, Experiment]) -> Invocation:
  """Validates the command line (without program name) fully.

  Args:
    argv: the arguments after `launch.py`.
    experiments: the available experiments.

  Returns:
    The validated `Invocation`.

  Raises:
    UsageError: for any problem, with a one-line message.
  """
  name, _ = _find_experiment(argv)
  if name not in experiments:
    raise UsageError(_unknown_experiment(name, experiments))
  experiment = experiments[name]
  package_dir = os.path.dirname(experiment.path)
  if not os.path.exists(os.path.join(package_dir, '__init__.py')):
    raise UsageError(f'{package_dir} is not a Python package (add an empty '
                     '__init__.py); experiments run as `python -m '
                     f'{experiment.module}`')
  if experiment.error is not None:
    raise UsageError(f'cannot read experiment {name!r} ({experiment.path}): '
                     f'{experiment.error}')
  options = {f.name: f.default for f in LAUNCHER_FLAGS.values()}
  options['sweep'] = []
  explicit: set[str] = set()
  fixed: dict[str, list[str]] = {}
  order: list[str] = []
  i = 0
  while i < len(argv):
    token = argv[i]
    _, flag, value = next(_tokens([token]))
    i += 1
    if not flag:
      raise UsageError(f'unexpected argument {token!r}; flags are written '
                       '--name=value (see --help)')
    if flag in LAUNCHER_FLAGS or (
        flag.startswith('no') and value is None and
        LAUNCHER_FLAGS.get(flag[2:], LAUNCHER_FLAGS['experiment']).type
        == 'bool'):
      negated = flag not in LAUNCHER_FLAGS
      spec = LAUNCHER_FLAGS[flag[2:] if negated else flag]
      if spec.type == 'bool':
        raw = 'false' if negated else ('true' if value is None else value)
      else:
        if value is None:
          if i >= len(argv):
            raise UsageError(f'flag --{flag} needs a value')
          value, i = argv[i], i + 1
        raw = value
      parsed = _parse_launcher_value(spec, raw)
      explicit.add(spec.name)
      if spec.name == 'sweep':
        options['sweep'].append(parsed)
      else:
        options[spec.name] = parsed
      continue
    if flag in _HELP_FLAGS:
      continue
    spec = experiment.lookup(flag)
    negated = False
    if spec is None and flag.startswith('no') and value is None:
      candidate = experiment.lookup(flag[2:])
      if candidate is not None and candidate.type == 'bool':
        spec, negated = candidate, True
    if spec is None:
      raise UsageError(f'unknown flag --{flag} for experiment {name!r}; '
                       f'choose from: {_flag_choices(experiment)} (or the '
                       'launcher flags, see --help)')
    if spec.type == 'bool':
      raw = 'false' if negated else ('true' if value is None else value)
    else:
      if value is None:
        if i >= len(argv):
          raise UsageError(f'flag --{flag} needs a value')
        value, i = argv[i], i + 1
      raw = value
    typed = check_value(spec, raw, f'--{spec.name}')
    if spec.type == 'bool':
      raw = 'true' if typed else 'false'
    if spec.name not in fixed:
      order.append(spec.name)
      fixed[spec.name] = []
    if spec.type.startswith('multi_'):
      fixed[spec.name].append(raw)
    else:
      fixed[spec.name] = [raw]

  # Sweeps.
  sweeps: list[Sweep] = []
  for text in options['sweep']:
    key, eq, values_text = text.partition('=')
    if not eq or not key:
      raise UsageError(f'malformed --sweep {text!r}; expected '
                       '--sweep=FLAG=V1,V2,...')
    if not values_text:
      raise UsageError(f'empty sweep for --{key} in --sweep {text!r}; '
                       'expected --sweep=FLAG=V1,V2,...')
    spec = experiment.lookup(key)
    if spec is None:
      raise UsageError(f'unknown flag --{key} in --sweep {text!r} for '
                       f'experiment {name!r}; choose from: '
                       f'{_flag_choices(experiment)}')
    if key == 'output_dir':
      raise UsageError('--output_dir cannot be swept (each point gets '
                       '<output_dir>/<k=v,...>)')
    if any(s.name == key for s in sweeps):
      raise UsageError(f'--{key} is swept twice; give all its values in one '
                       '--sweep')
    if key in fixed:
      raise UsageError(f'--{key} is both set and swept; remove one')
    raw_values = _split_sweep_values(values_text)
    if any(not v for v in raw_values):
      raise UsageError(f'empty value in --sweep {text!r}')
    if len(set(raw_values)) != len(raw_values):
      raise UsageError(f'repeated value in --sweep {text!r}')
    typed_values = [check_value(spec, v, f'--{key} in --sweep {text!r}')
                    for v in raw_values]
    if spec.type == 'bool':
      raw_values = ['true' if v else 'false' for v in typed_values]
      if len(set(raw_values)) != len(raw_values):
        raise UsageError(f'repeated value in --sweep {text!r}')
    sweeps.append(Sweep(key, raw_values, typed_values))

  # Required flags and the output folder.
  for spec in experiment.flags.values():
    if spec.required and spec.name not in fixed and not any(
        s.name == spec.name for s in sweeps):
      raise UsageError(f'missing required flag --{spec.name} for experiment '
                       f'{name!r}')
  if experiment.lookup('output_dir') is None:
    raise UsageError(f'experiment {name!r} has no --output_dir flag; it must '
                     'call cli.define_common_flags() at module level')
  output_dir = None
  if 'output_dir' in fixed:
    output_dir = fixed.pop('output_dir')[-1]
    order.remove('output_dir')
    if not output_dir:
      raise UsageError('empty value for --output_dir')
    output_dir = os.path.abspath(os.path.expanduser(output_dir))
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
      raise UsageError(f'--output_dir {output_dir} exists and is not a '
                       'folder')

  # Launcher options.
  slurm_flags = sorted(f for f in explicit if f.startswith('slurm_'))
  if options['launcher'] != 'slurm' and slurm_flags:
    raise UsageError(f'--{slurm_flags[0]} needs --launcher=slurm')
  if options['launcher'] == 'slurm' and not options['dry_run']:
    try:
      launchers.import_submitit()
    except ImportError as e:
      raise UsageError(str(e)) from None
  flag_list = [(n, v) for n in order for v in fixed[n]]
  return Invocation(experiment=experiment, flags=flag_list, sweeps=sweeps,
                    options=options, explicit=explicit, output_dir=output_dir)


# ---------------------------------------------------------------------------
# Help.


def _wrap(text: str, indent: int) -> str:
  text = ' '.join(text.split())
  return textwrap.fill(text, width=79, initial_indent=' ' * indent,
                       subsequent_indent=' ' * indent) if text else ''


def _describe_flag(spec: FlagSpec) -> list[str]:
  lines = [textwrap.fill(
      f'--{spec.name}  ({spec.describe_type()}; default: {spec.default})',
      width=79, initial_indent='  ', subsequent_indent=' ' * 6,
      break_on_hyphens=False)]
  if spec.help:
    lines.append(_wrap(spec.help, 6))
  return lines


def format_help(experiments: dict[str, Experiment],
                only: str | None = None) -> str:
  """The --help text: usage, experiments, and every experiment's flags."""
  out = [
      'usage: python launch.py [--experiment=NAME] [EXPERIMENT FLAGS]',
      '           [--sweep=FLAG=V1,V2,...]... [--parallel=N]',
      '           [--launcher=local|slurm] [--dry_run]',
      '',
      _wrap('Runs one experiment of experiments/ (default: '
            f'{DEFAULT_EXPERIMENT}), or a sweep over flag values. Flags are '
            'validated before anything runs; see the module docstring of '
            'launch.py for how to write an experiment.', 0),
      '',
      f'Experiments (in {experiments_dir()}):',
  ]
  if not experiments:
    out.append('  (none found)')
  width = max([len(n) for n in experiments] + [0])
  for name, experiment in experiments.items():
    description = experiment.description or '(no description)'
    if experiment.error:
      description = f'(cannot be read: {experiment.error})'
    marker = '  [default]' if name == DEFAULT_EXPERIMENT else ''
    out.append(textwrap.fill(
        f'{name.ljust(width)}  {description}{marker}', width=79,
        initial_indent='  ', subsequent_indent=' ' * (width + 4)))
  if experiments and DEFAULT_EXPERIMENT not in experiments:
    out.append(f'  (the default experiment, {DEFAULT_EXPERIMENT}, is missing)')
  out += ['', 'Launcher flags:']
  for flag in LAUNCHER_FLAGS.values():
    kind = flag.type
    if flag.enum_values:
      kind = f'enum: {"|".join(flag.enum_values)}'
    out.append(f'  --{flag.name}  ({kind}; default: {flag.default!r})')
    out.append(_wrap(flag.help, 6))
  out += ['', 'Common experiment flags (vae/cli.py, every experiment):']
  for spec in _common_specs().values():
    out.extend(_describe_flag(spec))
  common = set(_common_specs())
  for name, experiment in experiments.items():
    if only is not None and name != only:
      continue
    out += ['', f'Flags of {name} ({experiment.module}):']
    own = [s for n, s in experiment.flags.items() if n not in common]
    if experiment.error:
      out.append(f'  (cannot be read: {experiment.error})')
    elif not own:
      out.append('  (no flags besides the common ones)')
    for spec in own:
      out.extend(_describe_flag(spec))
    if not experiment.calls_common and not experiment.error:
      out.append('  (warning: does not call cli.define_common_flags())')
    for problem in experiment.problems:
      out.append(f'  (not read statically: {problem}; checked at run time)')
  return '\n'.join(out) + '\n'


# ---------------------------------------------------------------------------
# Running.


def sanitize(name: str) -> str:
  """A folder-safe version of a point name like 'lr=0.1,opt=adam'."""
  safe = re.sub(r'[^A-Za-z0-9._=,+-]', '_', name)
  if safe.startswith(('.', '-')) or not safe:
    safe = '_' + safe
  if len(safe) > _MAX_FOLDER_NAME:
    digest = hashlib.sha1(name.encode('utf-8')).hexdigest()[:10]
    safe = f'{safe[:_MAX_FOLDER_NAME - 11]}-{digest}'
  return safe


def _flag_args(flags: Sequence[tuple[str, str]]) -> list[str]:
  return [f'--{n}={v}' for n, v in flags]


def make_points(invocation: Invocation, root: str) -> list[launchers.Point]:
  """The sweep's points (cartesian product, first sweep slowest)."""
  experiment = invocation.experiment
  cwd, env = _subprocess_env(experiment)
  points = []
  used: set[str] = set()
  base_args = _flag_args(invocation.flags)
  for combo in itertools.product(*[
      list(zip(s.raw_values, s.values)) for s in invocation.sweeps]):
    pairs = [(s.name, raw) for s, (raw, _) in zip(invocation.sweeps, combo)]
    name = ','.join(f'{k}={v}' for k, v in pairs)
    folder = sanitize(name)
    n = 1
    while folder.lower() in used:
      n += 1
      folder = f'{sanitize(name)}-{n}'
    used.add(folder.lower())
    output_dir = os.path.join(root, folder)
    values = {s.name: typed for s, (_, typed) in zip(invocation.sweeps, combo)}
    command = launchers.python_command(
        experiment.module,
        base_args + _flag_args(pairs) + [f'--output_dir={output_dir}'])
    points.append(launchers.Point(name=name, values=values, command=command,
                                  output_dir=output_dir, cwd=cwd, env=env))
  return points


def _default_root(name: str) -> str:
  stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
  return os.path.abspath(os.path.join(cli.DEFAULT_RUNS_DIR,
                                      f'{name}-{stamp}'))


def _make_launcher(invocation: Invocation, root: str) -> launchers.Launcher:
  options = invocation.options
  if options['launcher'] == 'slurm':
    cluster = None if options['slurm_cluster'] == 'auto' else (
        options['slurm_cluster'])
    return launchers.SlurmLauncher(
        folder=os.path.join(root, 'submitit'),
        partition=options['slurm_partition'], gpus=options['slurm_gpus'],
        time_min=options['slurm_time'], mem_gb=options['slurm_mem'],
        cpus=options['slurm_cpus'],
        max_parallel=(options['parallel'] if 'parallel' in invocation.explicit
                      else None),
        cluster=cluster, poll_s=0.2 if cluster == 'local' else 10.0,
        job_name=invocation.experiment.name)
  return launchers.LocalLauncher(parallel=options['parallel'])


def _point_entry(result: launchers.PointResult,
                 num_records: int | None) -> dict[str, Any]:
  point = result.point
  return {
      'name': point.name,
      'output_dir': point.output_dir,
      'values': dict(point.values),
      'status': result.status,
      'returncode': result.returncode,
      'duration_s': (round(result.duration_s, 3)
                     if result.duration_s is not None else None),
      'log_path': result.log_path,
      'error': result.error,
      'job_id': result.job_id,
      'job_log': result.job_log,
      'num_records': num_records,
      'command': list(point.command),
  }


def _sweep_header(invocation: Invocation, root: str,
                  launcher: launchers.Launcher) -> dict[str, Any]:
  return {
      'experiment': invocation.experiment.name,
      'module': invocation.experiment.module,
      'output_dir': root,
      'sweep': {s.name: s.values for s in invocation.sweeps},
      'flags': _flag_args(invocation.flags),
      'launcher': launcher.describe(),
  }


def run_sweep(invocation: Invocation) -> int:
  """Runs a validated sweep; returns the exit code (0: all points ok)."""
  name = invocation.experiment.name
  if invocation.output_dir:
    root = invocation.output_dir
    os.makedirs(root, exist_ok=True)
  else:
    root = cli.fresh_output_dir(name)
  points = make_points(invocation, root)
  launcher = _make_launcher(invocation, root)
  header = _sweep_header(invocation, root, launcher)
  results.write_json(os.path.join(root, SWEEP_JSON), {
      **header, 'status': 'running', 'num_points': len(points),
      'points': [{'name': p.name, 'output_dir': p.output_dir,
                  'values': dict(p.values), 'status': 'pending',
                  'log_path': p.log_path, 'command': list(p.command)}
                 for p in points]})
  print(f'{PROG}: sweeping {name} over {len(points)} points '
        f'({launcher.describe()["type"]} launcher) into {root}', flush=True)

  def progress(done: int, total: int, result: launchers.PointResult) -> None:
    seconds = (f' ({result.duration_s:.1f}s)'
               if result.duration_s is not None else '')
    line = f'[{done}/{total}] {result.status:6s} {result.point.name}{seconds}'
    if not result.ok:
      line += f': {result.error}; log: {result.log_path}'
    print(line, flush=True)

  point_results = launcher.launch(points, progress=progress)

  combined: list[dict[str, Any]] = []
  entries = []
  for result in point_results:
    num_records = None
    if result.ok:
      try:
        records = results.read_results(result.point.output_dir)
      except (OSError, ValueError) as e:
        reason = ('it wrote no results.json' if isinstance(
            e, FileNotFoundError) else f'unreadable results.json: {e}')
        result = dataclasses.replace(
            result, status=launchers.FAILED,
            error=f'exit code 0 but {reason}')
      else:
        num_records = len(records)
        for record in records:
          combined.append({**result.point.values, **record})
    entries.append(_point_entry(result, num_records))
  failed = [e for e in entries if e['status'] != launchers.OK]
  results.write_json(os.path.join(root, SWEEP_RESULTS_JSON), combined)
  results.write_csv(os.path.join(root, SWEEP_RESULTS_CSV), combined)
  results.write_json(os.path.join(root, SWEEP_JSON), {
      **header, 'status': 'failed' if failed else 'ok',
      'num_points': len(entries), 'num_failed': len(failed),
      'points': entries})

  table = [{'point': e['name'], 'status': e['status'],
            'seconds': e['duration_s'], 'records': e['num_records']}
           for e in entries]
  print(results.format_table(table, float_fmt='.1f'))
  print(f'{PROG}: {len(entries) - len(failed)}/{len(entries)} points ok; '
        f'combined results in {os.path.join(root, SWEEP_RESULTS_CSV)}',
        flush=True)
  for e in failed:
    message = (f'{PROG}: point {e["name"]!r} failed ({e["error"]}); log: '
               f'{e["log_path"]}')
    if e['job_log']:
      message += f'; submitit log: {e["job_log"]}'
    print(message, file=sys.stderr, flush=True)
  return 1 if failed else 0


def run_single(invocation: Invocation) -> int:
  """Runs one validated experiment; returns its exit code."""
  experiment = invocation.experiment
  output_dir = invocation.output_dir
  if output_dir:
    os.makedirs(output_dir, exist_ok=True)
  else:
    output_dir = cli.fresh_output_dir(experiment.name)
  cwd, env = _subprocess_env(experiment)
  command = launchers.python_command(
      experiment.module,
      _flag_args(invocation.flags) + [f'--output_dir={output_dir}'])
  if invocation.options['launcher'] == 'slurm':
    point = launchers.Point(name=experiment.name, values={}, command=command,
                            output_dir=output_dir, cwd=cwd, env=env)
    launcher = _make_launcher(invocation, output_dir)
    print(f'{PROG}: submitting {shlex.join(command)}', flush=True)
    (result,) = launcher.launch([point])
    if result.ok:
      print(f'{PROG}: done; outputs in {output_dir}; log: {result.log_path}')
      return 0
    message = f'{PROG}: {experiment.name} failed ({result.error}); log: ' + (
        result.log_path)
    if result.job_log:
      message += f'; submitit log: {result.job_log}'
    print(message, file=sys.stderr)
    return 1
  print(f'{PROG}: running {shlex.join(command)}', file=sys.stderr,
        flush=True)
  full_env = dict(os.environ)
  full_env.update(env)
  try:
    returncode = subprocess.call(command, cwd=cwd, env=full_env)
  except KeyboardInterrupt:
    return 130
  if returncode < 0:
    returncode = 128 - returncode
  status = 'done' if returncode == 0 else f'failed (exit code {returncode})'
  print(f'{PROG}: {experiment.name} {status}; outputs in {output_dir}',
        file=sys.stderr)
  return returncode


def dry_run(invocation: Invocation) -> int:
  """Prints the commands a run would execute; creates nothing."""
  name = invocation.experiment.name
  root = invocation.output_dir or _default_root(name)
  cwd, _ = _subprocess_env(invocation.experiment)
  print(f'# cwd: {cwd}')
  if invocation.sweeps:
    for point in make_points(invocation, root):
      print(shlex.join(point.command))
  else:
    print(shlex.join(launchers.python_command(
        invocation.experiment.module,
        _flag_args(invocation.flags) + [f'--output_dir={root}'])))
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point; `argv` excludes the program name. Returns the exit code."""
  argv = list(sys.argv[1:] if argv is None else argv)
  experiments = discover_experiments()
  try:
    name, want_help = _find_experiment(argv)
    if want_help:
      if name != DEFAULT_EXPERIMENT or any(
          a.startswith(('--experiment', '-experiment')) for a in argv):
        if name not in experiments:
          raise UsageError(_unknown_experiment(name, experiments))
        sys.stdout.write(format_help(experiments, only=name))
      else:
        sys.stdout.write(format_help(experiments))
      return 0
    invocation = parse_args(argv, experiments)
  except UsageError as e:
    print(f'{PROG}: {e}', file=sys.stderr)
    return 2
  if invocation.options['dry_run']:
    return dry_run(invocation)
  if invocation.sweeps:
    return run_sweep(invocation)
  return run_single(invocation)


if __name__ == '__main__':
  sys.exit(main())
