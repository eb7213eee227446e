"""A fake experiment whose results depend on the seed: no JAX, instant.

Run with `launch.py --experiment=tests.seeded_experiment`.
"""

from vae import config as cfg


@cfg.settings
class Config:
  scale: float = cfg.setting(1.0, 'A scale.', min=0.0, max=10.0)


def run(config, seed, out):
  del out
  return [{'name': name, 'k': 5, 'value': config.scale * (seed + i),
           'exact': 2.0 * i}
          for i, name in enumerate(('a', 'b'))]
