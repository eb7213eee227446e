"""A fake experiment for the launcher's tests: no JAX, instant.

Run with `launch.py --experiment=tests.fake_experiment`.
"""

import time

from vae import config as cfg


@cfg.settings
class Config:
  value: float = cfg.setting(1.0, 'A value.', min=-10.0, max=10.0)
  copies: int = cfg.setting(2, 'Records to write.', min=1, max=100)
  epochs: int = cfg.setting(1, 'May change on resume.', min=1, max=100)
  fail: bool = cfg.setting(False, 'Raise inside run().')
  disagree: bool = cfg.setting(False, 'Mark a row as disagreeing.')
  sleep: float = cfg.setting(0.0, 'Seconds to sleep in run().', min=0.0,
                             max=600.0)


RESUMABLE = ('epochs',)


def run(config, seed, out):
  out.log(f'fake: value {config.value}')
  if config.sleep:
    time.sleep(config.sleep)
  if config.fail:
    raise RuntimeError('fake failure')
  return [{'i': i, 'scaled': config.value * (i + 1), 'seed': seed,
           'disagrees': config.disagree and i == 0}
          for i in range(config.copies)]
