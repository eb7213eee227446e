"""A fake experiment that reports the GPUs its process sees, for the
launcher's tests of local sweeps (`--local_gpus`)."""

import os

from vae import config as cfg


@cfg.settings
class Config:
  value: int = cfg.setting(0, 'A swept value.', min=0, max=100)


def run(config, seed, out):
  del out
  return [{'value': config.value, 'seed': seed,
           'cuda_visible_devices': os.environ.get('CUDA_VISIBLE_DEVICES'),
           'preallocate': os.environ.get('XLA_PYTHON_CLIENT_PREALLOCATE')}]
