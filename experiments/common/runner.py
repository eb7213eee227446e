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


class Disagreement(Exception):
  """A --strict run measured values that disagree with exact ones."""


def check_rows(records: list[dict]) -> tuple[str, list[dict]]:
  """The self-check line and the rows that disagree with exact values.

  Experiments mark each record that has an exact answer with a boolean
  'disagrees' (True: beyond sampling error, see `vae.stats`).
  """
  checked = [r for r in records if 'disagrees' in r]
  bad = [r for r in checked if r['disagrees']]
  return (f'{len(bad)} of {len(checked)} rows disagree with exact values',
          bad)


def run_point(name: str, config, seed: int, directory: str,
              strict: bool = False) -> list[dict]:
  """Writes config.json, runs the experiment, writes results.json/.csv.

  Args:
    name: the experiment.
    config: its validated `Config`.
    seed: the seed of everything random.
    directory: the run folder (created if needed).
    strict: raise `Disagreement` when a row disagrees with its exact value.

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
  line, bad = check_rows(records)
  if any('disagrees' in r for r in records):
    if bad:
      run.table(bad[:20])
    run.log(line + ('' if not bad else f' (listed above{", first 20" if len(bad) > 20 else ""})'))
  if strict and bad:
    raise Disagreement(line)
  return records
