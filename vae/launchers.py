"""Launchers: run sweep points (one subprocess each) locally or on Slurm.

A `Point` is one run of an experiment: a command line (normally
`python -m experiments.NAME --flag=v ... --output_dir=<point dir>`), its
output folder and its sweep values. A `Launcher` runs a list of points and
returns one `PointResult` per point, in the same order:

  results = LocalLauncher(parallel=2).launch(points)

* `LocalLauncher(parallel=N)` runs the points on this machine, one after the
  other or N at a time.
* `SlurmLauncher(folder, ...)` submits each point as a Slurm job with
  `submitit` (an optional dependency, imported lazily), waits for them and
  gathers the results. `cluster='local'` runs the same code path with
  submitit's local executor (for tests and for debugging).

Each point's stdout and stderr go to `<point.output_dir>/log.txt`. A point
that fails (non-zero exit, crash, or a Slurm job that dies) gives a
`PointResult` with `status='failed'`; the other points still run.
"""

import abc
from collections.abc import Callable, Mapping, Sequence
import concurrent.futures
import dataclasses
import os
import shlex
import subprocess
import sys
import threading
import time
from typing import Any

LOG_NAME = 'log.txt'
OK = 'ok'
FAILED = 'failed'

# Called after each point finishes: progress(num_done, num_total, result).
ProgressFn = Callable[[int, int, 'PointResult'], None]


@dataclasses.dataclass(frozen=True)
class Point:
  """One run of an experiment.

  Attributes:
    name: a short, folder-safe name, e.g. 'num_samples=10,estimator=score'.
    values: the sweep values of this point, {flag name: typed value}.
    command: the command line to run.
    output_dir: the run's output folder (created before the command runs);
      the log goes to `<output_dir>/log.txt`.
    cwd: the working directory of the command (default: inherited).
    env: environment variables to set for the command (added to the
      inherited environment).
  """
  name: str
  values: Mapping[str, Any]
  command: tuple[str, ...]
  output_dir: str
  cwd: str | None = None
  env: Mapping[str, str] | None = None

  @property
  def log_path(self) -> str:
    """Where the command's stdout and stderr go."""
    return os.path.join(self.output_dir, LOG_NAME)


@dataclasses.dataclass(frozen=True)
class PointResult:
  """The outcome of one `Point`.

  Attributes:
    point: the point.
    status: 'ok' (exit code 0) or 'failed'.
    returncode: the command's exit code (None if it never ran or finished).
    log_path: the point's log file.
    duration_s: wall-clock seconds the command ran (None if unknown).
    error: a short description of the failure (None if ok).
    job_id: the Slurm/submitit job id (SlurmLauncher only).
    job_log: the submitit job's stderr log (SlurmLauncher only).
  """
  point: Point
  status: str
  returncode: int | None
  log_path: str
  duration_s: float | None = None
  error: str | None = None
  job_id: str | None = None
  job_log: str | None = None

  @property
  def ok(self) -> bool:
    """Whether the point succeeded."""
    return self.status == OK


def _last_line(path: str) -> str | None:
  """The last non-empty line of a text file (None if unreadable/empty)."""
  try:
    with open(path, 'rb') as f:
      f.seek(0, os.SEEK_END)
      f.seek(max(0, f.tell() - 4096))
      tail = f.read().decode('utf-8', errors='replace')
  except OSError:
    return None
  lines = [line.strip() for line in tail.splitlines() if line.strip()]
  return lines[-1] if lines else None


def run_point(point: Point) -> PointResult:
  """Runs one point's command, logging to `point.log_path`; never raises.

  This is a plain module-level function so that it can be pickled and run in
  a Slurm job.

  Args:
    point: the point to run.

  Returns:
    Its `PointResult`; `status` is 'failed' when the command exits non-zero
    or cannot be started, with `error` = the exit code and the log's last
    line.
  """
  start = time.monotonic()
  try:
    os.makedirs(point.output_dir, exist_ok=True)
    env = dict(os.environ)
    env.update(point.env or {})
    with open(point.log_path, 'w', encoding='utf-8') as log:
      log.write(f'# command: {subprocess.list2cmdline(point.command)}\n')
      log.write(f'# cwd: {point.cwd or os.getcwd()}\n')
      log.flush()
      completed = subprocess.run(point.command, stdout=log,
                                 stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, cwd=point.cwd,
                                 env=env, check=False)
  except OSError as e:
    return PointResult(point=point, status=FAILED, returncode=None,
                       log_path=point.log_path,
                       duration_s=time.monotonic() - start,
                       error=f'could not run the command: {e}')
  duration = time.monotonic() - start
  if completed.returncode == 0:
    return PointResult(point=point, status=OK, returncode=0,
                       log_path=point.log_path, duration_s=duration)
  last = _last_line(point.log_path)
  error = f'exit code {completed.returncode}'
  if last:
    error += f': {last}'
  return PointResult(point=point, status=FAILED,
                     returncode=completed.returncode, log_path=point.log_path,
                     duration_s=duration, error=error)


class Launcher(abc.ABC):
  """Runs a list of points; see the module docstring."""

  @abc.abstractmethod
  def launch(self, points: Sequence[Point],
             progress: ProgressFn | None = None) -> list[PointResult]:
    """Runs `points`; returns their results in the same order.

    Args:
      points: the points to run.
      progress: called as `progress(num_done, num_total, result)` each time
        a point finishes (possibly from another thread, never concurrently).

    Returns:
      One `PointResult` per point, in the order of `points`. A failing point
      does not stop the others.
    """

  def describe(self) -> dict[str, Any]:
    """A JSON-able description of this launcher (for sweep.json)."""
    return {'type': type(self).__name__}


@dataclasses.dataclass
class LocalLauncher(Launcher):
  """Runs points on this machine, `parallel` at a time.

  Each point is its own subprocess; with `parallel > 1` a pool of `parallel`
  worker threads keeps that many subprocesses running.
  """
  parallel: int = 1

  def __post_init__(self):
    if self.parallel < 1:
      raise ValueError(f'parallel must be >= 1, got {self.parallel}')

  def launch(self, points: Sequence[Point],
             progress: ProgressFn | None = None) -> list[PointResult]:
    """Runs `points` locally; see `Launcher.launch`."""
    points = list(points)
    total = len(points)
    results: list[PointResult | None] = [None] * total
    lock = threading.Lock()
    done = 0

    def finish(index: int, result: PointResult) -> None:
      nonlocal done
      with lock:
        results[index] = result
        done += 1
        if progress is not None:
          progress(done, total, result)

    if self.parallel == 1 or total <= 1:
      for i, point in enumerate(points):
        finish(i, run_point(point))
    else:
      with concurrent.futures.ThreadPoolExecutor(
          max_workers=min(self.parallel, total)) as pool:
        futures = {pool.submit(run_point, p): i for i, p in enumerate(points)}
        for future in concurrent.futures.as_completed(futures):
          finish(futures[future], future.result())
    return [r for r in results if r is not None]

  def describe(self) -> dict[str, Any]:
    """See `Launcher.describe`."""
    return {'type': 'local', 'parallel': self.parallel}


def import_submitit() -> Any:
  """Imports `submitit`, with a clear error if it is not installed."""
  try:
    import submitit  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        'the Slurm launcher needs the optional dependency submitit; install '
        "it with `pip install submitit` (or `pip install -e '.[cluster]'`)"
    ) from e
  return submitit


@dataclasses.dataclass
class SlurmLauncher(Launcher):
  """Submits each point as a Slurm job with submitit and waits for them.

  Attributes:
    folder: where submitit keeps its job files and logs
      (`<folder>/<job id>_0_log.err`, ...).
    partition: the Slurm partition (None: the cluster's default).
    gpus: GPUs per job.
    time_min: time limit per job, in minutes.
    mem_gb: memory per job in GB (None: the cluster's default).
    cpus: CPUs per job.
    max_parallel: at most this many jobs run at once (None: no limit).
    cluster: passed to `submitit.AutoExecutor`: None picks Slurm when
      available, 'slurm' forces it, 'local' runs the jobs as local processes
      (same pickling, job folders and gathering; used by the tests).
    poll_s: how often to check for finished jobs, in seconds.
    job_name: the Slurm job name.
    setup: extra shell lines run in each job before Python starts (e.g.
      `module load cuda`). The folder holding the `vae` package is always
      put on the job's PYTHONPATH so the pickled job can import it.
    run_fn: what each job runs, `run_fn(point) -> PointResult`; must be
      picklable (a module-level function). Default `run_point`.
  """
  folder: str
  partition: str | None = None
  gpus: int = 0
  time_min: int = 60
  mem_gb: int | None = None
  cpus: int = 1
  max_parallel: int | None = None
  cluster: str | None = None
  poll_s: float = 10.0
  job_name: str = 'vae'
  setup: Sequence[str] = ()
  run_fn: Callable[[Point], PointResult] = run_point

  def __post_init__(self):
    self._submitit = import_submitit()

  def _executor(self) -> Any:
    executor = self._submitit.AutoExecutor(folder=self.folder,
                                           cluster=self.cluster)
    params: dict[str, Any] = {
        'name': self.job_name,
        'timeout_min': int(self.time_min),
        'cpus_per_task': int(self.cpus),
        'gpus_per_node': int(self.gpus),
        'tasks_per_node': 1,
        'nodes': 1,
    }
    if self.mem_gb is not None:
      params['mem_gb'] = self.mem_gb
    if self.partition:
      params['slurm_partition'] = self.partition
    if self.max_parallel:
      params['slurm_array_parallelism'] = int(self.max_parallel)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    setup = [f'export PYTHONPATH={shlex.quote(root)}'
             '${PYTHONPATH:+:$PYTHONPATH}', *self.setup]
    params['slurm_setup'] = list(setup)
    params['local_setup'] = list(setup)
    executor.update_parameters(**params)
    return executor

  def launch(self, points: Sequence[Point],
             progress: ProgressFn | None = None) -> list[PointResult]:
    """Submits `points` as jobs; see `Launcher.launch`."""
    points = list(points)
    if not points:
      return []
    os.makedirs(self.folder, exist_ok=True)
    executor = self._executor()
    jobs = executor.map_array(self.run_fn, points)
    index = {id(job): i for i, job in enumerate(jobs)}
    results: list[PointResult | None] = [None] * len(points)
    done = 0
    try:
      for job in self._submitit.helpers.as_completed(
          jobs, poll_frequency=self.poll_s):
        i = index[id(job)]
        results[i] = self._gather(points[i], job)
        done += 1
        if progress is not None:
          progress(done, len(points), results[i])
    except BaseException:
      for job in jobs:
        if not job.done():
          job.cancel(check=False)
      raise
    return [r for r in results if r is not None]

  def _gather(self, point: Point, job: Any) -> PointResult:
    """The PointResult of a finished job (failed if the job itself failed)."""
    job_log = str(job.paths.stderr)
    try:
      result = job.result()
    except Exception as e:  # pylint: disable=broad-except
      lines = [l.strip() for l in str(e).splitlines() if l.strip()]
      reason = next((l for l in reversed(lines) if not l.startswith(
          ('-', 'You can check', str(self.folder)))), type(e).__name__)
      return PointResult(point=point, status=FAILED, returncode=None,
                         log_path=point.log_path,
                         error=f'job {job.job_id} failed '
                         f'(state {job.state}): {reason}',
                         job_id=str(job.job_id), job_log=job_log)
    if not isinstance(result, PointResult):
      return PointResult(point=point, status=FAILED, returncode=None,
                         log_path=point.log_path,
                         error=f'job {job.job_id} returned {result!r}',
                         job_id=str(job.job_id), job_log=job_log)
    return dataclasses.replace(result, job_id=str(job.job_id),
                               job_log=job_log)

  def describe(self) -> dict[str, Any]:
    """See `Launcher.describe`."""
    return {'type': 'slurm', 'cluster': self.cluster, 'folder': self.folder,
            'partition': self.partition, 'gpus': self.gpus,
            'time_min': self.time_min, 'mem_gb': self.mem_gb,
            'cpus': self.cpus, 'max_parallel': self.max_parallel}


def python_command(module: str, args: Sequence[str]) -> tuple[str, ...]:
  """`(sys.executable, '-m', module, *args)`."""
  return (sys.executable, '-m', module, *args)
