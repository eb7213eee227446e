"""Runs an experiment, or a sweep of one, from the command line.

`python launch.py` in a checkout, `vae-launch` where the package is
installed (`pip install '.[experiments]'`; the same flags):

  python launch.py                                  # the main job, defaults
  python launch.py --help                           # the experiments
  python launch.py --experiment=NAME --help         # NAME's settings
  python launch.py --experiment=NAME --SETTING=VALUE ...
  python launch.py --experiment=NAME --sweep=SETTING=V1,V2 [--sweep=...] \\
      [--parallel=N [--local_gpus=auto|none|0,1,...] |
       --launcher=slurm --slurm_partition=P --slurm_gpus=1] [--timeout_min=M]

An experiment is `experiments/NAME.py` (docs/architecture.md); each setting
of its `Config` is a flag. A bad experiment, flag, value or run folder is one
line on stderr, exit code 2, before anything runs or is written; so is a
renamed flag (`--slurm_time was renamed --timeout_min`; the launcher's
`RENAMED` and an experiment's own `RENAMED = {old: new}`). A single
run runs in this process into `--output_dir` (default: a fresh
`runs/NAME-<time>`); SIGTERM/SIGINT stop it (training checkpoints; one
line, exit code 130). A sweep runs the cartesian product of its values
(split on ',', or on ';' if there is one; two points with the same settings
or folder name are refused), each point through a submitit executor
(`local`: this machine, `--parallel` at a time, each point with one GPU of
`--local_gpus` (default auto: CUDA_VISIBLE_DEVICES, else `nvidia-smi -L`),
spread over them, or on the CPU with `--local_gpus=none` or no GPU; `slurm`:
a cluster), each stopped after `--timeout_min` minutes, into
`<output_dir>/<setting=value,...>`, gathering sweep_results.json/.csv and
sweep.json (a sweep over seed also writes and prints, per setting, mean,
sd and n over seeds of every numeric result: sweep_results_over_seeds.json
and .csv, experiments/common/seeds.py); a failed point is reported with
its log while the others complete (exit code 1); SIGTERM/SIGINT stop a
sweep and its points (one line, exit code 130). Run folders and their
locks: experiments/common/outputs.py. Long work shows its progress, rate
and ETA on stderr (a bar on a terminal, plain lines in a log:
experiments/common/progress.py).
Exit code 1 also ends a run whose checked rows hold NaN or infinite values
(one line naming them; `vae.stats.NONFINITE`) and a --strict run that
disagrees with exact values.
"""

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

from absl import flags

import experiments
from experiments.common import distributed
from experiments.common import flags as config_flags
from experiments.common import outputs
from experiments.common import progress
from experiments.common import runner
from experiments.common import seeds
from vae import config as cfg


def _launcher_flags(fv: flags.FlagValues) -> None:
  d: dict[str, Any] = dict(flag_values=fv, module_name='launch.py')
  flags.DEFINE_string('experiment', runner.DEFAULT, 'The experiment.', **d)
  flags.DEFINE_multi_string('sweep', [], 'SETTING=V1,V2,...: a swept '
                            'setting (repeat for a cartesian product).', **d)
  flags.DEFINE_string('output_dir', None, 'The run folder (a sweep: the '
                      'parent of its points). Default: runs/NAME-<time>.', **d)
  flags.DEFINE_integer('seed', 0, 'The seed of everything random.',
                       lower_bound=0, upper_bound=cfg.INT_MAX, **d)
  flags.DEFINE_enum('launcher', 'local', ['local', 'slurm'], 'Where a '
                    "sweep's points run (submitit executor).", **d)
  flags.DEFINE_integer('parallel', 1, 'Sweep points run at once (local) or '
                       'Slurm array parallelism.', lower_bound=1, **d)
  flags.DEFINE_string('local_gpus', 'auto', "GPUs for a local sweep's points, "
                      'one GPU per point, spread over them (the least busy '
                      'first): auto (those of CUDA_VISIBLE_DEVICES if set, '
                      'else of `nvidia-smi -L`, else none), none (CPU only) '
                      'or a list of GPU indices such as 0,1,3.', **d)
  flags.DEFINE_string('slurm_partition', None, 'Slurm partition.', **d)
  flags.DEFINE_integer('slurm_gpus', 0, 'GPUs per point.', lower_bound=0, **d)
  flags.DEFINE_integer('timeout_min', 60, 'Minutes a sweep point may run '
                       'before it is stopped (local and Slurm).', 1, **d)
  flags.DEFINE_integer('slurm_mem_gb', 16, 'GB of memory per point.', 1, **d)
  flags.DEFINE_bool('dry_run', False, 'Print the points; run nothing.', **d)
  flags.DEFINE_bool('overwrite', False, 'Replace a previous run in '
                    '--output_dir (otherwise only the same run may be there: '
                    'it resumes).', **d)
  flags.DEFINE_bool('compilation_cache', True, "JAX's persistent compilation "
                    'cache (default folder ~/.cache/vae/jax).', **d)
  flags.DEFINE_bool('strict', False, 'Exit 1 when a measured value disagrees '
                    'with its exact value beyond sampling error.', **d)


# A sweep over seeds: per setting, mean, sd and n of each result.
SEEDS_RESULTS = 'sweep_results_over_seeds'

# The launcher's renamed flags, {old name: new name}; an experiment module
# declares its own the same way (`RENAMED = {...}`). An old name on the
# command line is refused, naming the new one (`check_renamed`).
RENAMED = {'slurm_time': 'timeout_min'}


class UsageError(Exception):
  """A bad command line: one line on stderr, exit code 2."""


def renamed(module=None) -> dict[str, str]:
  """{old flag name: new flag name}: the launcher's and `module`'s."""
  return {**RENAMED, **(getattr(module, 'RENAMED', None) or {})}


def check_renamed(argv, module=None) -> None:
  """Refuses a renamed flag before absl parses it: `--OLD`, `--OLD=V`,
  `--noOLD` (or with one dash) and `--sweep=OLD=...`, for the launcher's
  renames and those of `module` (its `RENAMED`).

  Raises:
    UsageError: one line naming the new flag.
  """
  names = renamed(module)
  fv = flags.FlagValues()
  _launcher_flags(fv)
  current = set(fv) | set(
      config_flags.flag_paths(module.Config) if module else ())
  for arg in argv[1:]:
    if arg == '--':
      break
    if not arg.startswith('-'):
      continue
    name, sep, value = arg.lstrip('-').partition('=')
    if name == 'sweep' and sep:
      old = value.partition('=')[0].strip()
      if old in names:
        raise UsageError(f'{arg}: --{old} was renamed --{names[old]}; give '
                         f'--sweep={names[old]}=...')
    elif name in names:
      raise UsageError(f'--{name} was renamed --{names[name]}.')
    elif (name not in current and name.startswith('no') and
          name[2:] in names):
      raise UsageError(f'--{name} was renamed --no{names[name[2:]]}.')


def _flag_values(module, argv):
  """Launcher and experiment flags, parsed from argv (absl checks the types).

  Raises:
    UsageError: a bad flag or value, or a positional argument (absl would
      ignore it: `--strict false` leaves 'false' behind, and everything
      after `--` is positional).
  """
  fv = flags.FlagValues()
  _launcher_flags(fv)
  config_flags.define_flags(module.Config, fv, module.__name__)
  try:
    rest = fv(argv)
  except flags.Error as e:
    raise UsageError(str(e).splitlines()[0]) from None
  if len(rest) > 1:
    raise UsageError(f'unexpected argument{"s" * (len(rest) > 2)} '
                     f'{" ".join(map(repr, rest[1:]))}: give every setting '
                     'as --NAME=VALUE (no "--" separator, no value after a '
                     'space for true/false flags).')
  return fv


def _config(module, fv):
  try:
    config = config_flags.config_from_flags(module.Config, fv)
  except ValueError as e:
    raise UsageError(str(e)) from None
  if missing := cfg.missing(config):
    raise UsageError(f'--{missing[0]} is required.')
  return config


def _label(combo) -> str:
  """The folder name of a sweep point: 'setting=value,...' ('/' as '_');
  past 120 characters, cut and ended by a hash of the whole."""
  label = ','.join(f'{n}={v}' for n, v in combo).replace('/', '_')
  if len(label) <= 120:
    return label
  import hashlib  # pylint: disable=g-import-not-at-top
  return f'{label[:111]}~{hashlib.sha1(label.encode()).hexdigest()[:8]}'


def _sweep_points(module, argv, sweeps):
  """[(label, {setting: value}, config)] for the cartesian product.

  Raises:
    UsageError: a bad --sweep, a bad point, two points with the same
      settings (e.g. --sweep=seed=0,0) or with the same folder name; before
      anything runs.
  """
  names = {'seed': 'seed', **config_flags.flag_paths(module.Config)}
  axes = []
  for sweep in sweeps:
    name, sep, values = sweep.partition('=')
    if not sep or name not in names:
      raise UsageError(f'--sweep={sweep}: expected SETTING=V1,V2,... with '
                       f'SETTING one of: {", ".join(names)}.')
    split = [v.strip() for v in values.split(';' if ';' in values else ',')]
    if not all(split):
      raise UsageError(f'--sweep={sweep}: empty value.')
    axes.append([(name, v) for v in split])
  points, seen = [], {}
  for combo in itertools.product(*axes):
    fv = _flag_values(module, argv + [f'--{n}={v}' for n, v in combo])
    try:
      config = _config(module, fv)
    except UsageError as e:
      raise UsageError(f'sweep point {dict(combo)}: {e}') from None
    label = _label(combo)
    settings = {**cfg.to_dict(config), 'seed': fv.seed}
    same = json.dumps(outputs.to_jsonable(settings), sort_keys=True)
    if same in seen or label in seen:
      other = seen.get(same) or seen[label]
      what = ('the same settings' if same in seen else
              f'the same folder name {label!r}')
      raise UsageError(f'--sweep: points {other} and {dict(combo)} have '
                       f'{what}; give each value once.')
    seen.update({same: dict(combo), label: dict(combo)})
    points.append((label, {n: settings[names[n]] for n, _ in combo}, config))
  return points


def _experiment(name: str):
  """The experiment module of --experiment (`runner.load`).

  Raises:
    UsageError: `name` is not a module name or dotted path of names (e.g.
      '..', '.foo'), or names no experiment.
  """
  if not all(part.isidentifier() for part in name.split('.')):
    raise UsageError(f'--experiment={name}: not an experiment name; choose '
                     f'from: {", ".join(runner.names())} (or a dotted module '
                     'path such as mypackage.my_experiment).')
  try:
    return runner.load(name)
  except ValueError as e:
    raise UsageError(str(e).splitlines()[0]) from None


def _check_launcher(fv) -> None:
  """Refuses --launcher=slurm where this machine has no Slurm (sbatch), and
  a --local_gpus that is not auto, none or a list of GPU indices."""
  if fv.launcher == 'slurm' and shutil.which('sbatch') is None:
    raise UsageError('--launcher=slurm: no Slurm here (sbatch is not on '
                     'PATH); run on a Slurm login node or use '
                     '--launcher=local.')
  if fv.local_gpus != 'auto' or (fv.sweep and fv.launcher == 'local'):
    local_gpus(fv.local_gpus)  # Refused now, before anything is written.


def detect_gpus() -> list[int]:
  """This machine's GPU indices, without importing JAX: those of
  CUDA_VISIBLE_DEVICES when it is set ('' or -1: none), else those that
  `nvidia-smi -L` lists, else none.

  Raises:
    UsageError: CUDA_VISIBLE_DEVICES names a GPU by UUID (or otherwise not
      by index): submitit passes a point its GPU by index.
  """
  visible = os.environ.get('CUDA_VISIBLE_DEVICES')
  if visible is not None:
    ids = [v.strip() for v in visible.split(',') if v.strip()]
    if not ids or ids[0].startswith('-'):  # CUDA: -1 or '' hides all.
      return []
    if not all(v.isdigit() for v in ids):
      raise UsageError(f'CUDA_VISIBLE_DEVICES={visible}: a local sweep gives '
                       'each point one GPU by index; give --local_gpus=0,1,'
                       '... (indices) or --local_gpus=none.')
    return [int(v) for v in ids]
  if shutil.which('nvidia-smi') is None:
    return []
  try:
    listing = subprocess.run(['nvidia-smi', '-L'], capture_output=True,
                             text=True, timeout=30, check=True).stdout
  except (OSError, subprocess.SubprocessError):
    return []
  # 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-...)'; MIG lines are indented.
  return [int(m) for m in re.findall(r'^GPU (\d+):', listing, re.M)]


def local_gpus(value: str) -> list[int]:
  """The GPUs of --local_gpus (auto: `detect_gpus`; none: []).

  Raises:
    UsageError: not auto, none or a list of distinct indices.
  """
  if value == 'auto':
    return detect_gpus()
  if value == 'none':
    return []
  ids = [v.strip() for v in value.split(',')]
  if not all(v.isdigit() for v in ids) or len(set(ids)) < len(ids):
    raise UsageError(f'--local_gpus={value}: expected auto, none or distinct '
                     'GPU indices such as 0,1,3.')
  return [int(v) for v in ids]


def pick_gpu(gpus: list[int], busy: list[int]) -> int:
  """The GPU for the next point: of `gpus`, the one fewest running points
  use (`busy`: their GPUs), the first such in the list; so points go round
  the GPUs, and one that has finished frees its GPU first."""
  return min(gpus, key=lambda g: (busy.count(g), gpus.index(g)))


def _executor(fv, folder):
  """The submitit executor of --launcher. Its points import this package
  by the name it has here: a checkout's folder goes on their PYTHONPATH."""
  import submitit  # pylint: disable=g-import-not-at-top
  if experiments.__name__ == 'experiments':
    root = os.path.dirname(os.path.abspath(experiments.__path__[0]))
    path = os.environ.get('PYTHONPATH', '')
    if root not in path.split(os.pathsep):
      os.environ['PYTHONPATH'] = os.pathsep.join(p for p in (root, path) if p)
  if fv.launcher == 'local':
    executor = submitit.LocalExecutor(folder=folder)
    executor.update_parameters(timeout_min=fv.timeout_min)  # GPUs: _run_sweep.
    return executor
  executor = submitit.AutoExecutor(folder=folder, cluster='slurm')
  executor.update_parameters(
      slurm_partition=fv.slurm_partition, gpus_per_node=fv.slurm_gpus,
      timeout_min=fv.timeout_min, mem_gb=fv.slurm_mem_gb,
      slurm_array_parallelism=fv.parallel, name=fv.experiment)
  return executor


def _submit(executor, root, *args):
  """executor.submit(*args) with stderr (fd 2) sent to
  <root>/submitit/controllers.log meanwhile: a local point's controller
  process inherits it, and prints a KeyboardInterrupt traceback when a
  stopped sweep cancels it."""
  sys.stderr.flush()
  saved = os.dup(2)
  try:
    with open(os.path.join(root, 'submitit', 'controllers.log'), 'a') as log:
      os.dup2(log.fileno(), 2)
      return executor.submit(*args)
  finally:
    os.dup2(saved, 2)
    os.close(saved)


def _run_sweep(fv, points, root):
  """Runs the points through submitit; returns [(label, values, job)].

  Locally, each point sees one GPU of --local_gpus (submitit sets its
  CUDA_VISIBLE_DEVICES; `pick_gpu`), or none (CPU only) where there are
  none; where more points than GPUs run at once, they share GPUs and JAX
  does not preallocate GPU memory (XLA_PYTHON_CLIENT_PREALLOCATE=false
  unless set).
  """
  executor = _executor(fv, os.path.join(root, 'submitit'))
  os.makedirs(os.path.join(root, 'submitit'), exist_ok=True)
  local = fv.launcher == 'local'
  limit = fv.parallel if local else len(points)
  gpus = local_gpus(fv.local_gpus) if local else []
  at_once = min(limit, len(points))
  if local:
    print(f'sweep: {len(points)} points, {at_once} at a time, ' + (
        f'one GPU each of {",".join(map(str, gpus))}' if gpus else
        'on the CPU (--local_gpus=none)' if fv.local_gpus == 'none' else
        'on the CPU (no GPU found)'))
  # Points copy this environment when they start (submitit); undone below.
  preallocate = 'XLA_PYTHON_CLIENT_PREALLOCATE'
  shared = bool(gpus) and at_once > len(gpus) and preallocate not in os.environ
  pending, running, done = list(points), [], []
  gpu_of = {}  # label: its GPU.

  def stop(signum, frame):  # Stop the points too, not just this process.
    del signum, frame
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # Once is enough.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for *_, job in running:
      job.cancel(check=False)
    raise KeyboardInterrupt  # cli(): one line, exit code 130.

  handlers = [signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)]
  # A bar on a terminal; without one, the line per finished point.
  bar = progress.Progress(len(points), 'sweep', 'points', plain=False)
  if shared:
    os.environ[preallocate] = 'false'
  try:
    while pending or running:
      while pending and len(running) < limit:
        label, values, config = pending.pop(0)
        if gpus:
          gpu_of[label] = pick_gpu(gpus, [gpu_of[r[0]] for r in running])
          executor.update_parameters(gpus_per_node=1,
                                     visible_gpus=(gpu_of[label],))
        job = _submit(executor, root, experiments.run_point, fv.experiment,
                      cfg.to_dict(config), values.get('seed', fv.seed),
                      os.path.join(root, label), fv.strict, fv.overwrite,
                      fv.compilation_cache)
        running.append((label, values, job))
      time.sleep(0.2)
      for item in [r for r in running if r[2].done()]:
        running.remove(item)
        done.append(item)
        failed = item[2].exception() is not None
        status = f'FAILED, log {item[2].paths.stderr}' if failed else 'ok'
        if item[0] in gpu_of:
          status += f' (GPU {gpu_of[item[0]]})'
        bar.update()
        eta = bar.eta()
        left = f', ETA {progress.clock(eta)}' if eta else ''
        progress.write(
            f'[{len(done)}/{len(points)}] {item[0]}: {status} '
            f'({progress.clock(time.time() - bar.start)} elapsed{left})')
  finally:
    bar.close()
    if shared:
      del os.environ[preallocate]
    signal.signal(signal.SIGTERM, handlers[0])
    signal.signal(signal.SIGINT, handlers[1])
  return done


def _gather(done, root):
  rows, records, numbered, failed = [], [], [], 0
  for label, values, job in sorted(done, key=lambda d: d[0]):
    error = job.exception()
    failed += error is not None
    rows.append({'point': label, 'status': 'failed' if error else 'ok',
                 'folder': os.path.join(root, label),
                 'log': str(job.paths.stderr)})
    if error is None:
      records += [{**values, **r} for r in job.result()]
      numbered += [{**values, **r, 'row': i}
                   for i, r in enumerate(job.result())]
  outputs.write_json(os.path.join(root, outputs.SWEEP_JSON), rows)
  if records:
    outputs.write_results(root, records, 'sweep_results')
  print(outputs.format_table(rows, ('point', 'status', 'log')))
  swept = list(dict.fromkeys(n for _, values, _ in done for n in values))
  if records and seeds.SEED in swept:
    summary = seeds.over_seeds(numbered, swept)
    outputs.write_results(root, summary, SEEDS_RESULTS)
    print(f'over seeds (mean ± sd, n; all fields in {SEEDS_RESULTS}.csv):')
    print(seeds.table(summary, swept))
  print(f'{len(done) - failed} of {len(done)} points ok; results in {root}')
  return 1 if failed else 0


def _help(argv) -> str:
  fv = flags.FlagValues()
  _launcher_flags(fv)
  fv(argv[:1] + [a for a in argv[1:] if a.startswith('--experiment')],
     known_only=True)
  lines = [__doc__, 'Experiments:']
  lines += [f'  {n:22s} {runner.summary(runner.load(n))}'
            for n in runner.names()]
  module = _experiment(fv.experiment)
  config_flags.define_flags(module.Config, fv, module.__name__)
  lines += ['', fv.module_help('launch.py'), '',
            fv.module_help(module.__name__)]
  return '\n'.join(lines)


def main(argv) -> int:
  if any(a in ('-h', '--help', '-help', '--helpfull') for a in argv[1:]):
    print(_help(argv))
    return 0
  # A task of a multi-task Slurm step: jax.distributed before anything
  # (loading an experiment) starts JAX's backend.
  distributed.initialize()
  pre = flags.FlagValues()
  _launcher_flags(pre)
  try:
    pre(argv, known_only=True)
  except flags.Error as e:
    raise UsageError(str(e).splitlines()[0]) from None
  module = _experiment(pre.experiment)
  check_renamed(argv, module)  # Before absl reads an old name.
  fv = _flag_values(module, argv)
  _check_launcher(fv)
  config = _config(module, fv)
  points = _sweep_points(module, argv, fv.sweep) if fv.sweep else None
  if fv.dry_run:
    for label, _, c in points or [('', {}, config)]:
      print(label or fv.experiment, c)
    return 0
  if fv.output_dir is not None:
    outputs.check_path(fv.output_dir)
  root = fv.output_dir or outputs.fresh_dir(fv.experiment)
  resumable = getattr(module, 'RESUMABLE', ())
  if points is not None:
    outputs.check_sweep_dir(root, fv.experiment, fv.overwrite)
  for label, values, c in points or [('', {}, config)]:
    outputs.check_dir(os.path.join(root, label) if label else root,
                      fv.experiment, c, values.get('seed', fv.seed),
                      resumable, fv.overwrite)
  if points is None:
    handler = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
      runner.run_point(fv.experiment, config, fv.seed, root, fv.strict,
                       fv.overwrite, fv.compilation_cache)
    except runner.Disagreement as e:
      print(f'launch.py: --strict: {e}', file=sys.stderr)
      return 1
    except runner.NonFinite as e:  # A failed run, --strict or not.
      print(f'launch.py: {e}', file=sys.stderr)
      return 1
    except BaseException:
      if fv.output_dir is None:  # The fresh runs/NAME-<time>, if unused.
        try:
          os.rmdir(root)
        except OSError:
          pass
      raise
    finally:
      signal.signal(signal.SIGTERM, handler)
    return 0
  os.makedirs(root, exist_ok=True)
  outputs.write_marker(root, fv.experiment, 'sweep')
  return _gather(_run_sweep(fv, points, root), root)


def cli(argv) -> int:
  """main() with every refusal as one line on stderr and an exit code."""
  try:
    return main(argv)
  except (UsageError, outputs.RunDirError) as e:
    print(f'launch.py: {e}', file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print('launch.py: stopped by SIGTERM/SIGINT', file=sys.stderr)
    return 130
  except OSError as e:
    print(f'launch.py: {e}', file=sys.stderr)
    return 1


if __name__ == '__main__':
  sys.exit(cli(sys.argv))
