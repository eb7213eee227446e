"""A fake experiment with renamed settings, for the launcher's tests.

Run with `launch.py --experiment=tests.renamed_experiment`.
"""

from vae import config as cfg


@cfg.settings
class Config:
  batch_size: int = cfg.setting(2, 'Examples per step.', min=1, max=100)
  verbose: bool = cfg.setting(False, 'A boolean setting.')
  noise: float = cfg.setting(0.0, 'Its name starts with "no".', min=0.0,
                             max=1.0)


# Old names: `--batch` is now `--batch_size`, `--chatty` is `--verbose`, and
# `--ise` (whose negation `--noise` is a current flag) is `--batch_size`.
RENAMED = {'batch': 'batch_size', 'chatty': 'verbose', 'ise': 'batch_size'}


def run(config, seed, out):
  del out
  return [{'batch_size': config.batch_size, 'seed': seed}]
