"""Multi-process runs: `jax.distributed` when Slurm started several tasks.

A Slurm job step (`srun`, or submitit's executor with `tasks_per_node` or
`nodes` > 1) runs the same command in each of its tasks; JAX then needs
`jax.distributed.initialize()` in every task before its first computation,
so that `jax.devices()` lists the devices of all tasks and a `--devices=0`
mesh spans them (`vae.moments.data_mesh`). JAX finds the coordinator, the
number of processes and each process id in Slurm's environment itself.

`wanted(env)` decides, from the environment alone (tested with a faked one):
a Slurm task (SLURM_JOB_ID and SLURM_PROCID set) of a step of more than one
task (SLURM_STEP_NUM_TASKS, else SLURM_NTASKS). A single-task job, a local
run, or VAE_DISTRIBUTED=0 never initializes; VAE_DISTRIBUTED=1 forces it
(e.g. under Open MPI, which JAX also detects). See docs/multihost.md.
"""

import os
from typing import Any, Callable, Mapping

from vae import moments

ENV_SWITCH = 'VAE_DISTRIBUTED'


def num_tasks(env: Mapping[str, str]) -> int:
  """The tasks of this Slurm job step (1 outside Slurm)."""
  for name in ('SLURM_STEP_NUM_TASKS', 'SLURM_NTASKS', 'SLURM_NPROCS'):
    if env.get(name, '').strip().isdigit():
      return int(env[name])
  return 1


def wanted(env: Mapping[str, str]) -> bool:
  """Whether this process should call `jax.distributed.initialize()`.

  Raises:
    ValueError: VAE_DISTRIBUTED is neither 0 nor 1.
  """
  switch = env.get(ENV_SWITCH, '').strip()
  if switch not in ('', '0', '1'):
    raise ValueError(f'{ENV_SWITCH}={switch!r}: use 1 (initialize '
                     'jax.distributed) or 0 (never).')
  if switch:
    return switch == '1'
  in_slurm_task = 'SLURM_JOB_ID' in env and 'SLURM_PROCID' in env
  return in_slurm_task and num_tasks(env) > 1


_done = False


def initialize(env: Mapping[str, str] | None = None,
               init: Callable[[], None] | None = None) -> bool:
  """Calls `jax.distributed.initialize()` once if `wanted`; True if it did
  (now or before). `init` replaces it in tests."""
  global _done
  if _done:
    return True
  if not wanted(os.environ if env is None else env):
    return False
  if init is None:
    import jax  # pylint: disable=g-import-not-at-top
    init = jax.distributed.initialize
  init()
  _done = True
  return True


def data_mesh(experiment: str, devices: int):
  """`vae.moments.data_mesh(devices)`; its refusal (more devices than there
  are) as one line: SystemExit('<experiment>: ...')."""
  try:
    return moments.data_mesh(devices)
  except ValueError as e:
    raise SystemExit(f'{experiment}: {e}') from None


def check_training(experiment: str, config: Any) -> None:
  """`vae.train.check_devices(config)` (a `TrainConfig`) before any work,
  its refusal as one line (SystemExit). (vae.train is imported here: at
  import it starts JAX's backend, which must wait for `initialize`.)"""
  from vae import train  # pylint: disable=g-import-not-at-top
  try:
    train.check_devices(config)
  except ValueError as e:
    raise SystemExit(f'{experiment}: {e}') from None


def process_folder(directory: str, index: int | None = None) -> str:
  """The run folder of this process: `directory` for process 0, else
  `<directory>.process<i>` (every process computes the same replicated
  results and checkpoints; each writes its own folder, so that no two
  processes share a lock or a file)."""
  if index is None:
    import jax  # pylint: disable=g-import-not-at-top
    index = jax.process_index()
  return directory if index == 0 else f'{directory.rstrip(os.sep)}.process{index}'
