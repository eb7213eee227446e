"""The experiments: one module per experiment (docs/architecture.md).

From a checkout this package is `experiments`. An installed wheel holds it
as `vae_experiments` (no generic top-level `experiments` in site-packages);
importing it under that name registers it as `experiments` in
`sys.modules` too, for this process only, so the experiments' own imports
(`from experiments.common import ...`) resolve to the installed files.
`main` is the `vae-launch` console entry point.
"""

import sys

if __name__ != 'experiments':
  _other = sys.modules.setdefault('experiments', sys.modules[__name__])
  if _other is not sys.modules[__name__]:
    raise ImportError(f'{__name__}: another package named experiments '
                      f'({getattr(_other, "__file__", "?")}) is already '
                      'imported in this process.')


def main() -> int:
  """`vae-launch ...`: the same as `python launch.py ...` in a checkout."""
  from experiments.common import launch  # pylint: disable=g-import-not-at-top
  return launch.cli(sys.argv)


def run_point(name: str, settings: dict, *args, **kwargs) -> list[dict]:
  """`runner.run_point` of a sweep point whose config is given as its
  settings dict (what submitit pickles: plain values and a function of this
  module, importable as `vae_experiments` where the wheel is installed)."""
  from experiments.common import distributed  # pylint: disable=g-import-not-at-top
  from experiments.common import runner  # pylint: disable=g-import-not-at-top
  from vae import config as cfg  # pylint: disable=g-import-not-at-top
  distributed.initialize()  # Before loading the experiment starts JAX.
  config = cfg.from_dict(runner.load(name).Config, settings)
  return runner.run_point(name, config, *args, **kwargs)
