"""Runs one point: an experiment's `run` with its config, into its folder.

`run_point` is what `launch.py` calls in-process for a single run and what
submitit's executors pickle and call for each point of a sweep.
"""

import importlib
import os
import pkgutil
import time

import experiments
from experiments.common import outputs

DEFAULT = 'gaussian_gradients'


def names() -> list[str]:
  """The experiments: the modules of the `experiments` package."""
  return sorted(m.name for m in pkgutil.iter_modules(experiments.__path__)
                if not m.ispkg and not m.name.startswith('_'))


def load(name: str):
  """The module `experiments.<name>` (must define `Config` and `run`)."""
  if name not in names():
    raise ValueError(f'unknown experiment {name!r}; choose from: '
                     f'{", ".join(names())}.')
  return importlib.import_module(f'experiments.{name}')


def summary(module) -> str:
  """The first line of the experiment's docstring."""
  return (module.__doc__ or '').strip().splitlines()[0]


def run_point(name: str, config, seed: int, directory: str) -> list[dict]:
  """Writes config.json, runs the experiment, writes results.json/.csv.

  Args:
    name: the experiment.
    config: its validated `Config`.
    seed: the seed of everything random.
    directory: the run folder (created if needed).

  Returns:
    The records.
  """
  module = load(name)
  os.makedirs(directory, exist_ok=True)
  outputs.write_config(directory, name, config, seed)
  run = outputs.Run(directory)
  start = time.time()
  records = module.run(config, seed, run)
  outputs.write_results(directory, records)
  run.log(f'{name}: {len(records)} records in {time.time() - start:.1f} s; '
          f'results in {directory}')
  return records
