"""Runs one point: an experiment's `run` with its config, into its folder.

`run_point` is what `launch.py` calls in-process for a single run and what
submitit's executors pickle and call for each point of a sweep.
"""

import importlib
import os
import pkgutil
import time

import experiments
from experiments.common import distributed
from experiments.common import outputs
from vae import stats

DEFAULT = 'gaussian_gradients'


def names() -> list[str]:
  """The experiments: the modules of the `experiments` package."""
  return sorted(m.name for m in pkgutil.iter_modules(experiments.__path__)
                if not m.ispkg and not m.name.startswith('_'))


def load(name: str):
  """The module `experiments.<name>`, or a dotted module path (e.g. one of
  your own experiments outside this repository); it defines `Config` and
  `run`."""
  if '.' in name:
    try:
      module = importlib.import_module(name)
    except ImportError as e:
      raise ValueError(f'cannot import experiment {name!r}: {e}') from None
    if not hasattr(module, 'Config') or not hasattr(module, 'run'):
      raise ValueError(f'{name} defines no Config and run().')
    return module
  if name not in names():
    raise ValueError(f'unknown experiment {name!r}; choose from: '
                     f'{", ".join(names())}.')
  return importlib.import_module(f'experiments.{name}')


def summary(module) -> str:
  """The first line of the experiment's docstring."""
  return (module.__doc__ or '').strip().splitlines()[0]


class Disagreement(Exception):
  """A --strict run measured values that disagree with exact ones."""


class NonFinite(Exception):
  """A run's checked rows hold NaN or infinite values (`stats.NONFINITE`)."""


def check_rows(records: list[dict]) -> tuple[str, list[dict]]:
  """The self-check line and the rows that disagree with exact values.

  Each record that has an exact answer holds a boolean 'disagrees' (True:
  beyond sampling error), set by `vae.stats.mark_disagreements` from the
  z-scores of all the run's checks.
  """
  checked = [r for r in records if 'disagrees' in r]
  bad = [r for r in checked if r['disagrees']]
  return (f'{len(bad)} of {len(checked)} rows disagree with exact values',
          bad)


def cache_compilations(directory: str | None = None) -> str | None:
  """Turns on JAX's persistent compilation cache; returns its folder.

  The folder is $JAX_COMPILATION_CACHE_DIR when set, else `directory`, else
  $XDG_CACHE_HOME/vae/jax (default ~/.cache/vae/jax). Programs that compiled
  in a previous run load from it instead of compiling again.
  """
  import jax  # pylint: disable=g-import-not-at-top
  directory = (os.environ.get('JAX_COMPILATION_CACHE_DIR') or directory or
               os.path.join(os.environ.get('XDG_CACHE_HOME') or
                            os.path.expanduser('~/.cache'), 'vae', 'jax'))
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return directory


def run_point(name: str, config, seed: int, directory: str,
              strict: bool = False, overwrite: bool = False,
              compilation_cache: bool = True) -> list[dict]:
  """Writes config.json, runs the experiment, writes results.json/.csv.

  The folder is checked (`outputs.check_dir`), created and locked; run.json
  (the marker) and config.json are written first. A run that fails before it
  writes anything else (e.g. its data or checkpoint is missing) leaves no
  folder behind: its run.json and config.json are removed, and the folder
  too when this call created it.

  Args:
    name: the experiment.
    config: its validated `Config`.
    seed: the seed of everything random.
    directory: the run folder (created if needed).
    strict: raise `Disagreement` when a row disagrees with its exact value.
      A checked row holding a NaN or infinite number raises `NonFinite`
      (after results.json is written) whether or not `strict` is set.
    overwrite: replace a previous run of this project in `directory` (it is
      moved aside to `<directory>.old-N`, see `outputs.move_aside`);
      otherwise only the same run (experiment, seed, settings) may be there
      (it resumes).
    compilation_cache: use JAX's persistent compilation cache.

  Returns:
    The records.

  Raises:
    outputs.RunDirError: the folder holds something else or is locked.
    NonFinite: some checked row holds a NaN or infinite number.
    Disagreement: `strict` and some row disagrees with its exact value.
  """
  # A Slurm step of several tasks is one jax.distributed job; process i > 0
  # writes its own copy of the run into <directory>.process<i>.
  if distributed.initialize():
    directory = distributed.process_folder(directory)
  module = load(name)
  if compilation_cache:
    cache_compilations()
  resumable = getattr(module, 'RESUMABLE', ())
  outputs.check_dir(directory, name, config, seed, resumable, overwrite)
  # The experiment's own refusals of a folder it would resume (e.g. a
  # checkpoint holding more epochs than asked), before config.json changes.
  if not overwrite and os.path.isdir(directory) and hasattr(
      module, 'check_resume'):
    module.check_resume(config, directory)
  created = not os.path.isdir(directory)
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as e:
    raise outputs.RunDirError(f'cannot create {directory} ({e.strerror}); '
                              'choose another --output_dir.') from None
  run = outputs.Run(directory)
  emptied = False
  try:
    with outputs.Lock(directory):
      # Again under the lock: another process may have written meanwhile.
      outputs.check_dir(directory, name, config, seed, resumable, overwrite)
      if overwrite and (aside := outputs.move_aside(directory)):
        run.log(f'{name}: the previous run in {directory} moved to {aside}')
      fresh = not outputs.inspect(directory).entries
      outputs.write_marker(directory, name)
      outputs.write_config(directory, name, config, seed)
      start = time.time()
      try:
        # Rows still carrying checks are marked here (all of them at once).
        records = stats.mark_disagreements(module.run(config, seed, run))
      except (Exception, SystemExit):
        emptied = fresh and outputs.discard_unused(directory)
        raise
      outputs.write_results(directory, records)
  finally:
    if emptied and created:
      try:
        os.rmdir(directory)
      except OSError:
        pass
  run.log(f'{name}: {len(records)} records in {time.time() - start:.1f} s; '
          f'results in {directory}')
  line, bad = check_rows(records)
  if any('disagrees' in r for r in records):
    if bad:
      run.table(bad[:20])
    run.log(line + (f' (listed above{", first 20" * (len(bad) > 20)})'
                    if bad else ''))
  # Non-finite numbers in checked rows (marked by stats.mark_disagreements):
  # the run failed whatever --strict says; one line names rows and fields.
  nonfinite = [f'row {i} ({r[stats.NONFINITE]})'
               for i, r in enumerate(records) if stats.NONFINITE in r]
  if nonfinite:
    raise NonFinite(
        f'{name}: {len(nonfinite)} of {len(records)} rows hold NaN or '
        f'infinite values where finite ones are expected: '
        f'{"; ".join(nonfinite[:5])}{"; ..." * (len(nonfinite) > 5)} '
        '(results.json has them as null)')
  if strict and bad:
    raise Disagreement(line)
  return records
