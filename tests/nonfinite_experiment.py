"""A fake experiment whose rows may hold NaN: no JAX, instant.

Run with `launch.py --experiment=tests.nonfinite_experiment`.
"""

from vae import config as cfg
from vae import stats


@cfg.settings
class Config:
  nan_checked: int = cfg.setting(0, 'Checked rows holding a NaN.', min=0,
                                 max=10)
  inf_z: bool = cfg.setting(False, 'A z-checked row with a finite z and an '
                            'infinite value.')
  nan_unchecked: bool = cfg.setting(False, 'A row without checks holding '
                                    'NaN (allowed).')


def run(config, seed, out):
  del seed, out
  rows = [{'i': i, 'measured': float('nan') if i < config.nan_checked else
           1.0, 'exact': 1.0, 'disagrees': False} for i in range(10)]
  if config.inf_z:
    rows.append({'i': 10, 'measured': float('inf'), 'exact': 1.0,
                 stats.CHECKS: [(0.5, 'two-sided')]})
  if config.nan_unchecked:
    rows.append({'i': 11, 'length_scale': float('nan')})
  return rows
