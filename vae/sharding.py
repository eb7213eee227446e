"""Data-parallel VAE training steps and gradient draws over a device mesh.

One 1-D `Mesh` with axis 'data' spans all devices (all local devices on one
host; all devices of all processes after `maybe_initialize_distributed()`).
Batches are placed with `PartitionSpec('data')` on their example axis,
parameters and optimizer state are replicated, and the step functions are
jitted with those `in_shardings` / `out_shardings`: XLA's SPMD partitioner
splits the per-example work and inserts the all-reduce of the gradients. The
program is the same as the single-device one (JAX's random bits do not depend
on the sharding), so results agree with `mesh=None` up to the order of float
reductions.

    mesh = sharding.make_mesh()
    step_fn = sharding.train_step_fn(model, optax.adam(1e-3))
    step = sharding.jit_train_step(step_fn, mesh)
    params, opt_state = sharding.replicate((params, opt_state), mesh)
    params, opt_state, loss = step(params, opt_state,
                                   sharding.shard_batch(batch, mesh), key)

`gradient_moments_fn` draws D independent gradient estimates at one
minibatch (vmapped over chunks of draw keys inside one `lax.scan`) and
returns their per-coordinate mean and variance; `jit_gradient_moments` shards
the draw axis over the mesh.

Multi-host: call `maybe_initialize_distributed()` first thing in the program
(before any other JAX call); see docs/multihost.md.
"""

import functools
import os
from typing import Any, Callable, Mapping

import jax
from jax import flatten_util
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from vae import types
from vae.models import image_vae

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey

DATA_AXIS = 'data'
GROUPS = ('encoder', 'decoder')

# Environment variables that mark a multi-process launch that
# `jax.distributed.initialize()` can configure itself from.
_COORDINATOR_VARS = ('JAX_COORDINATOR_ADDRESS', 'COORDINATOR_ADDRESS')

# step(params, opt_state, batch, key) -> (params, opt_state, loss).
TrainStep = Callable[[Params, Any, Array, PRNGKey], tuple[Params, Any, Array]]


# ----------------------------------------------------------------------------
# Multi-host start-up.


def cluster_env_detected(environ: Mapping[str, str] | None = None) -> bool:
  """Whether the environment describes a multi-process JAX job.

  True if a coordinator address is set (`JAX_COORDINATOR_ADDRESS`), or under
  Slurm with more than one task (`SLURM_JOB_ID` and `SLURM_NTASKS` > 1, as
  `srun` sets them), or under Open MPI with more than one rank.

  Args:
    environ: the environment (default `os.environ`).

  Returns:
    True if `jax.distributed.initialize()` should be called.
  """
  env = os.environ if environ is None else environ
  if any(env.get(v) for v in _COORDINATOR_VARS):
    return True
  if env.get('SLURM_JOB_ID') and _int(env.get('SLURM_NTASKS')) > 1:
    return True
  return _int(env.get('OMPI_COMM_WORLD_SIZE')) > 1


def maybe_initialize_distributed(environ: Mapping[str, str] | None = None,
                                 **kwargs: Any) -> bool:
  """Calls `jax.distributed.initialize(**kwargs)` in a multi-process job.

  Must run before any other JAX call. Under Slurm (`srun`, one task per host
  or per GPU) and Open MPI, JAX finds the coordinator, process count and
  process id by itself; otherwise set `JAX_COORDINATOR_ADDRESS=host:port`,
  `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID` (read here and passed on) or pass
  them as kwargs. A single-process run (no such variables) is left alone.

  Args:
    environ: the environment (default `os.environ`).
    **kwargs: passed to `jax.distributed.initialize` (they take precedence).

  Returns:
    True if it initialized the distributed runtime.
  """
  env = os.environ if environ is None else environ
  if not cluster_env_detected(env):
    return False
  address = next((env[v] for v in _COORDINATOR_VARS if env.get(v)), None)
  if address is not None:
    kwargs.setdefault('coordinator_address', address)
    if env.get('JAX_NUM_PROCESSES'):
      kwargs.setdefault('num_processes', int(env['JAX_NUM_PROCESSES']))
    if env.get('JAX_PROCESS_ID'):
      kwargs.setdefault('process_id', int(env['JAX_PROCESS_ID']))
  jax.distributed.initialize(**kwargs)
  return True


def _int(value: str | None) -> int:
  try:
    return int(value) if value else 0
  except ValueError:
    return 0


# ----------------------------------------------------------------------------
# Mesh, shardings and placement.


def make_mesh(devices: Any = None, axis_name: str = DATA_AXIS) -> Mesh:
  """A 1-D mesh over `devices` (default: all devices, `jax.devices()`)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (axis_name,))


def batch_spec(batch_axis: int = 0, axis_name: str = DATA_AXIS) -> P:
  """PartitionSpec splitting axis `batch_axis` over `axis_name`."""
  return P(*([None] * batch_axis), axis_name)


def data_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
  """Sharding of arrays split along `batch_axis` over the mesh's data axis."""
  return NamedSharding(mesh, batch_spec(batch_axis, mesh.axis_names[0]))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  """Sharding of arrays held whole by every device of the mesh."""
  return NamedSharding(mesh, P())


def shard_batch(batch: Any, mesh: Mesh, batch_axis: int = 0) -> Any:
  """Places a batch (array or pytree) split along `batch_axis` over the mesh.

  In a single process `batch` is the global batch. With several processes
  each passes its own, process-local part (the global batch is their
  concatenation in process order), as a data loader reading a disjoint slice
  per host would.

  Args:
    batch: arrays whose `batch_axis` is divisible by the number of devices
      (per process: by the number of local devices).
    mesh: the mesh.
    batch_axis: the example axis (1 for [steps, batch, ...] scans).

  Returns:
    The same pytree of global `jax.Array`s sharded with `data_sharding`.

  Raises:
    ValueError: an axis is not divisible by the number of devices.
  """
  sharding = data_sharding(mesh, batch_axis)
  n = (mesh.devices.size if jax.process_count() == 1 else
       len(mesh.local_devices))

  def put(x):
    if np.shape(x)[batch_axis] % n:
      raise ValueError(f'batch axis {batch_axis} of shape {np.shape(x)} is '
                       f'not divisible by {n} devices.')
    if jax.process_count() == 1:
      return jax.device_put(x, sharding)
    return jax.make_array_from_process_local_data(sharding, np.asarray(x))

  return jax.tree_util.tree_map(put, batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places every leaf of `tree` whole on every device of the mesh."""
  return jax.device_put(tree, replicated_sharding(mesh))


# ----------------------------------------------------------------------------
# Training steps.


def loss_fn(model: image_vae.VAE, objective: str = 'elbo',
            estimator: str = 'pathwise', num_samples: int = 1,
            beta: float = 1.0) -> Callable[[Params, Array, PRNGKey], Array]:
  """(params, batch, key) -> minus the batch-mean surrogate bound."""
  def loss(params, batch, key):
    return -image_vae.batch_surrogate(model, params, batch, key, objective,
                                      estimator, num_samples, beta)
  return loss


def train_step_fn(model: image_vae.VAE,
                  optimizer: optax.GradientTransformation,
                  objective: str = 'elbo', estimator: str = 'pathwise',
                  num_samples: int = 1, beta: float = 1.0) -> TrainStep:
  """One optimizer step on one batch (not jitted; see `jit_train_step`).

  Args:
    model: the VAE.
    optimizer: an optax optimizer.
    objective: the bound ('elbo', 'elbo_mc_kl', 'iwae').
    estimator: its gradient estimator.
    num_samples: samples per example.
    beta: KL weight.

  Returns:
    step(params, opt_state, batch [B, D], key) -> (params, opt_state, loss).
  """
  loss = loss_fn(model, objective, estimator, num_samples, beta)

  def step(params, opt_state, batch, key):
    value, grads = jax.value_and_grad(loss)(params, batch, key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value

  return step


def multi_step_fn(step: TrainStep) -> TrainStep:
  """Fuses many steps into one `lax.scan` (one dispatch for S steps).

  Args:
    step: from `train_step_fn`.

  Returns:
    steps(params, opt_state, batches [S, B, D], key) -> (params, opt_state,
    losses [S]); step s uses `fold_in(key, s)`.
  """
  def steps(params, opt_state, batches, key):
    def body(carry, xs):
      p, o = carry
      i, batch = xs
      p, o, value = step(p, o, batch, jax.random.fold_in(key, i))
      return (p, o), value
    idx = jnp.arange(batches.shape[0])
    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state),
                                               (idx, batches))
    return params, opt_state, losses

  return steps


def jit_train_step(step: TrainStep, mesh: Mesh | None = None,
                   batch_axis: int = 0, donate: bool = True) -> TrainStep:
  """Jits a `train_step_fn` / `multi_step_fn` step, sharded over `mesh`.

  With a mesh: params, optimizer state, key and losses are replicated and
  the batch is split along `batch_axis` (0 for one step, 1 for the
  [S, B, D] batches of `multi_step_fn`). Without one: plain `jax.jit`.

  Args:
    step: the step function.
    mesh: the mesh, or None for a single device.
    batch_axis: the batch's example axis.
    donate: donate the params and optimizer state buffers (in-place update).

  Returns:
    The jitted step.
  """
  donate_argnums = (0, 1) if donate else ()
  if mesh is None:
    return jax.jit(step, donate_argnums=donate_argnums)
  rep = replicated_sharding(mesh)
  return jax.jit(step, in_shardings=(rep, rep, data_sharding(mesh, batch_axis),
                                     rep),
                 out_shardings=(rep, rep, rep), donate_argnums=donate_argnums)


# ----------------------------------------------------------------------------
# Many gradient estimates at one minibatch.


def flat_gradient_fn(model: image_vae.VAE, objective: str = 'elbo',
                     estimator: str = 'pathwise', num_samples: int = 1,
                     beta: float = 1.0):
  """(params, batch, key) -> (bound, {group: flat gradient estimate})."""
  def fn(params, batch, key):
    value, grads = jax.value_and_grad(
        lambda p: image_vae.batch_surrogate(model, p, batch, key, objective,
                                            estimator, num_samples, beta))(
                                                params)
    return value, {g: flatten_util.ravel_pytree(grads[g])[0] for g in GROUPS}
  return fn


def draw_keys(key: PRNGKey, num_draws: int, chunk: int) -> Array:
  """`num_draws` keys split from `key`, shaped [num_draws // chunk, chunk, 2].

  Raises:
    ValueError: `chunk` does not divide `num_draws`.
  """
  if chunk < 1 or num_draws % chunk:
    raise ValueError(f'chunk={chunk} must divide num_draws={num_draws}.')
  keys = jax.random.split(key, num_draws)
  return keys.reshape((num_draws // chunk, chunk) + keys.shape[1:])


def init_moments(params: Params) -> dict[str, Any]:
  """Empty running moments {'count', 'bound', group: {'mean', 'm2'}}."""
  out = {'count': jnp.zeros((), jnp.float32), 'bound': jnp.zeros((),
                                                                jnp.float32)}
  for g in GROUPS:
    flat = flatten_util.ravel_pytree(params[g])[0]
    # Distinct buffers (a donated state must not hold one buffer twice).
    out[g] = {'mean': jnp.zeros_like(flat), 'm2': jnp.zeros_like(flat)}
  return out


def merge_moments(state: dict[str, Any], bounds: Array,
                  draws: dict[str, Array]) -> dict[str, Any]:
  """Adds a chunk of draws [c, P] to running moments (Chan et al. merge)."""
  n = state['count']
  c = jnp.asarray(bounds.shape[0], jnp.float32)
  total = n + c
  out = {'count': total,
         'bound': state['bound'] + (jnp.mean(bounds) - state['bound']) * c /
                  total}
  for g in GROUPS:
    chunk_mean = jnp.mean(draws[g], axis=0)
    chunk_m2 = jnp.sum(jnp.square(draws[g] - chunk_mean), axis=0)
    delta = chunk_mean - state[g]['mean']
    out[g] = {'mean': state[g]['mean'] + delta * (c / total),
              'm2': state[g]['m2'] + chunk_m2 + jnp.square(delta) * (n * c /
                                                                    total)}
  return out


def finalize_moments(state: dict[str, Any]) -> dict[str, Any]:
  """{'num_draws', 'bound', group: {'mean', 'variance' (ddof=1)}}."""
  out = {'num_draws': state['count'], 'bound': state['bound']}
  for g in GROUPS:
    out[g] = {'mean': state[g]['mean'],
              'variance': state[g]['m2'] / jnp.maximum(state['count'] - 1, 1)}
  return out


def gradient_moments_fn(model: image_vae.VAE, objective: str = 'elbo',
                        estimator: str = 'pathwise', num_samples: int = 1,
                        beta: float = 1.0, mesh: Mesh | None = None):
  """Mean and variance of many gradient estimates, vmapped in chunks.

  fn(params, batch, keys [C, c, 2]) draws C·c independent estimates: a
  `lax.scan` over the C chunks, each chunk's c draws vmapped (one set of
  large matmuls), with the running moments merged per chunk, so memory is
  O(c · P) for any number of draws. With `mesh`, each chunk's draws are
  constrained to be split over the mesh (use `jit_gradient_moments`).

  c = 1 is a plain `lax.scan` over the draws (no vmap). On XLA:CPU it is the
  faster choice: vmapping turns the decoder's weight gradients into batched
  dots ([c, 200, B] x [c, B, 784]), which XLA:CPU runs several times slower
  than the unbatched ones (see benchmarks/README.md); on a GPU large c is
  the point.

  Args:
    model: the VAE.
    objective: the bound.
    estimator: the gradient estimator.
    num_samples: samples per example.
    beta: KL weight.
    mesh: the mesh the draw axis is split over, or None.

  Returns:
    fn(params, batch, keys) -> `finalize_moments` output.
  """
  grad = flat_gradient_fn(model, objective, estimator, num_samples, beta)

  def fn(params, batch, keys):
    def body(state, chunk_keys):
      if chunk_keys.shape[0] == 1:  # A plain scan over draws, no vmap.
        bound, draw = grad(params, batch, chunk_keys[0])
        bounds, draws = bound[None], {g: d[None] for g, d in draw.items()}
      else:
        bounds, draws = jax.vmap(lambda k: grad(params, batch, k))(chunk_keys)
      if mesh is not None:
        draws = jax.lax.with_sharding_constraint(draws,
                                                 data_sharding(mesh, 0))
      return merge_moments(state, bounds, draws), None
    state, _ = jax.lax.scan(body, init_moments(params), keys)
    return finalize_moments(state)

  return fn


def jit_gradient_moments(fn: Callable[..., Any], mesh: Mesh | None = None):
  """Jits a `gradient_moments_fn` function; with a mesh, splits the draws.

  The keys [C, c, 2] are split along c (each chunk's draws spread over the
  devices); params and batch are replicated; the moments come back
  replicated.
  """
  if mesh is None:
    return jax.jit(fn)
  rep = replicated_sharding(mesh)
  return jax.jit(fn, in_shardings=(rep, rep, data_sharding(mesh, 1)),
                 out_shardings=rep)


@functools.lru_cache(maxsize=None)
def _single_moment_update(model, objective, estimator, num_samples, beta):
  grad = flat_gradient_fn(model, objective, estimator, num_samples, beta)

  def update(state, params, batch, key):
    bound, draws = grad(params, batch, key)
    return merge_moments(state, bound[None],
                         {g: d[None] for g, d in draws.items()})

  return jax.jit(update, donate_argnums=0)


def gradient_moments_loop(model: image_vae.VAE, params: Params, batch: Array,
                          keys: Array, objective: str = 'elbo',
                          estimator: str = 'pathwise', num_samples: int = 1,
                          beta: float = 1.0) -> dict[str, Any]:
  """The same moments from a Python loop over a jitted one-estimate update.

  The baseline for `gradient_moments_fn`: one jitted call per draw (one
  gradient estimate merged into the running moments on device), keys in the
  same order, so the results agree up to float rounding.

  Args:
    model: the VAE.
    params: parameters.
    batch: x [B, D].
    keys: [..., 2] draw keys (e.g. from `draw_keys`), flattened in order.
    objective: the bound.
    estimator: the gradient estimator.
    num_samples: samples per example.
    beta: KL weight.

  Returns:
    The `finalize_moments` output.
  """
  update = _single_moment_update(model, objective, estimator, num_samples,
                                 beta)
  # Host keys: indexing a device array would dispatch a slice per draw.
  keys = np.asarray(keys).reshape(-1, np.shape(keys)[-1])
  state = init_moments(params)
  for key in keys:
    state = update(state, params, batch, key)
  return finalize_moments(state)
