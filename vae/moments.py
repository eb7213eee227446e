"""Moments of many independent gradient estimates: the one chunked routine.

Given `estimate(key) -> pytree` (one draw of an estimator: a gradient, a grid
of gradients, a bound), `moments` draws D independent estimates with keys
split from one key and returns, for every leaf, elementwise

    mean      m  = (1/D) Σ_d x_d
    variance  s² = Σ_d (x_d - m)² / (D - 1)
    m4           = (1/D) Σ_d (x_d - m)⁴              (order=4 only)
    cosine       = (1/D) Σ_d cos(x_d, r)              (with a reference r)

The draws are taken in chunks of c: each chunk's c draws are vmapped (one
set of large matmuls), and chunk statistics are merged into running ones
(Chan et al. 1979 for the mean and M2; Pébay 2008 for M3 and M4), inside a
`lax.scan`, so memory is O(c · size of one draw) for any D. With a device
`mesh` (`make_mesh`; the `devices` setting of `MeshConfig`), each chunk's
c draws are split over its devices (c a multiple of their number): the
same draws, so the same moments up to the order of float reductions. Pure
and traceable: jit it (or call it inside a jitted function).
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp

from vae import config as cfg
from vae import types
from vae.estimators import registry

Array = types.Array
PRNGKey = types.PRNGKey
DATA_AXIS = 'data'


@cfg.settings
class Draws:
  """How many estimates a variance study draws, and from how many samples.

  Experiments reuse these declarations (`vae.config.like`) with their own
  defaults and bounds.
  """
  num_draws: int = cfg.setting(
      1000, 'Independent estimates per configuration (their moments are '
      'measured).', min=2, max=10**7)
  sample_counts: tuple[int, ...] = cfg.setting(
      (1,), 'Samples per estimate N (K for the IWAE bound).', min=1,
      max=10**5)


@cfg.settings
class MeshConfig:
  """The devices work is split over: a 1-D data-parallel mesh (`make_mesh`).

  Declared once; the trainer (`vae.train.TrainConfig`) and the variance
  experiments reuse it (`vae.config.like`).
  """
  devices: int = cfg.setting(
      1, 'Devices to split batches/draws over (1-D data-parallel mesh): 1 '
      'one device (no mesh), 0 all, N the first N.', min=0, max=2**16)


def device_count(devices: int) -> int:
  """N of the `devices` setting: all of `jax.devices()` for 0.

  Raises:
    ValueError (one line): more devices than there are, or, in a
      multi-process job (`jax.distributed`), not all of them (each process
      must hold a part of the mesh).
  """
  available = jax.devices()
  n = devices or len(available)
  if n > len(available):
    raise ValueError(f'devices={devices}: only {len(available)} '
                     f'{available[0].platform} device(s) are available.')
  if jax.process_count() > 1 and n != len(available):
    raise ValueError(f'devices={devices}: a job of {jax.process_count()} '
                     f'processes must use all {len(available)} devices '
                     '(devices=0).')
  return n


def data_mesh(devices: int) -> jax.sharding.Mesh | None:
  """The mesh of the `devices` setting: None for 1 (the one-device path),
  else `make_mesh` over the first `device_count(devices)` devices."""
  if devices == 1:
    return None
  return make_mesh(jax.devices()[:device_count(devices)])


@cfg.settings
class Comparison:
  """The estimators a study compares (experiments narrow the choices with
  `vae.config.like`)."""
  estimators: tuple[str, ...] = cfg.setting(
      ('pathwise',), 'Gradient estimators compared.',
      choices=tuple(registry.ESTIMATORS))


def _sum_over_draws(x: Array) -> Array:
  """Σ over the leading axis as a vector-matrix product.

  XLA:CPU reduces a leading axis far slower than it multiplies matrices.
  """
  ones = jnp.ones((x.shape[0],), x.dtype)
  return jnp.tensordot(ones, x, axes=1)


def _chunk_stats(x: Array, order: int) -> dict[str, Array]:
  c = x.shape[0]
  if c == 1:  # One draw: its mean is itself, its central sums are zero.
    zero = jnp.zeros_like(x[0])
    return {'n': jnp.asarray(1, x.dtype), 'mean': x[0], 'm2': zero,
            **({'m3': zero, 'm4': zero} if order == 4 else {})}
  mean = _sum_over_draws(x) / c
  d = x - mean
  stats = {'n': jnp.asarray(c, x.dtype), 'mean': mean,
           'm2': _sum_over_draws(d * d)}
  if order == 4:
    stats['m3'] = _sum_over_draws(d**3)
    stats['m4'] = _sum_over_draws(d**4)
  return stats


def _merge(a: dict[str, Array], b: dict[str, Array]) -> dict[str, Array]:
  """Statistics of the union of two sets of draws (Chan; Pébay 2008)."""
  na, nb = a['n'], b['n']
  n = na + nb
  delta = b['mean'] - a['mean']
  out = {'n': n, 'mean': a['mean'] + delta * nb / n,
         'm2': a['m2'] + b['m2'] + delta**2 * na * nb / n}
  if 'm4' in a:
    out['m3'] = (a['m3'] + b['m3'] + delta**3 * na * nb * (na - nb) / n**2 +
                 3 * delta * (na * b['m2'] - nb * a['m2']) / n)
    out['m4'] = (a['m4'] + b['m4'] +
                 delta**4 * na * nb * (na**2 - na * nb + nb**2) / n**3 +
                 6 * delta**2 * (na**2 * b['m2'] + nb**2 * a['m2']) / n**2 +
                 4 * delta * (na * b['m3'] - nb * a['m3']) / n)
  return out


def _cosine(x: Array, r: Array) -> Array:
  """cos(x_d, r) per draw (rows of x flattened), 0 where a norm is 0."""
  x = x.reshape(x.shape[0], -1)
  r = r.reshape(-1)
  denom = jnp.linalg.norm(x, axis=1) * jnp.linalg.norm(r)
  safe = jnp.where(denom > 0, denom, 1.0)
  return jnp.where(denom > 0, (x @ r) / safe, 0.0)


def draw_keys(key: PRNGKey, num_draws: int, chunk: int) -> Array:
  """The D draw keys split from `key`, shaped [D // chunk, chunk, ...]."""
  if chunk < 1 or num_draws % chunk:
    raise ValueError(f'chunk={chunk} must divide num_draws={num_draws}.')
  keys = jax.random.split(key, num_draws)
  return keys.reshape((num_draws // chunk, chunk) + keys.shape[1:])


def default_chunk(num_draws: int, draw_size: int,
                  max_elements: int = 2**23, max_chunk: int = 50,
                  multiple_of: int = 1) -> int:
  """The largest divisor of D, ≤ max_chunk, ≤ max_elements per chunk, and a
  multiple of `multiple_of` (the devices of a mesh; at least that many).

  Raises:
    ValueError: `multiple_of` does not divide D.
  """
  if num_draws % multiple_of:
    raise ValueError(f'num_draws={num_draws} is not divisible by the '
                     f'{multiple_of} devices it is split over.')
  chunk = max(multiple_of, min(num_draws, max_chunk,
                               max_elements // max(draw_size, 1)))
  while num_draws % chunk or chunk % multiple_of:
    chunk -= 1
  return chunk


def moments(estimate: Callable[[PRNGKey], Any], key: PRNGKey, num_draws: int,
            chunk: int | None = None, order: int = 2, reference: Any = None,
            mesh: jax.sharding.Mesh | None = None) -> dict[str, Any]:
  """Moments over D independent draws of `estimate(key)` (module docstring).

  Args:
    estimate: key -> pytree of arrays, one draw.
    key: the PRNG key the D draw keys are split from.
    num_draws: D ≥ 2.
    chunk: draws per vmapped chunk, dividing D (default: all of them);
      1 is a plain scan over draws (no vmap), the faster choice on XLA:CPU
      for large networks.
    order: 2 (mean, variance) or 4 (also m4, the 4th central moment).
    reference: a pytree like one draw; adds 'cosine', the mean over draws
      of cos(draw, reference) per leaf.
    mesh: split each chunk's draws over this mesh's 'data' axis (the
      chunk must be a multiple of its size).

  Returns:
    {'mean': tree, 'variance': tree, ['m4': tree], ['cosine': tree]}.
  """
  if num_draws < 2:
    raise ValueError(f'num_draws must be >= 2, got {num_draws}.')
  if order not in (2, 4):
    raise ValueError(f'order must be 2 or 4, got {order}.')
  keys = draw_keys(key, num_draws, chunk or num_draws)
  if mesh is not None and keys.shape[1] % mesh.size:
    raise ValueError(f'chunk={keys.shape[1]} draws cannot be split over '
                     f'{mesh.size} devices; make it a multiple.')
  split = None if mesh is None else jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(DATA_AXIS))

  def chunk_stats(chunk_keys):
    if chunk_keys.shape[0] == 1:
      draws = jax.tree.map(lambda x: x[None], estimate(chunk_keys[0]))
    else:
      if split is not None:
        chunk_keys = jax.lax.with_sharding_constraint(chunk_keys, split)
      draws = jax.vmap(estimate)(chunk_keys)
    if split is not None:
      draws = jax.lax.with_sharding_constraint(draws, split)
    stats = jax.tree.map(lambda x: _chunk_stats(x, order), draws)
    cos = None
    if reference is not None:
      cos = jax.tree.map(lambda x, r: jnp.sum(_cosine(x, r)), draws,
                         reference)
    return stats, cos

  # The merge starts from no draws (n = 0, zero sums): `estimate` is traced
  # and compiled once, inside the scan, not also for a first chunk.
  empty = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                       jax.eval_shape(chunk_stats, keys[0]))
  is_stats = lambda x: isinstance(x, dict) and 'm2' in x

  def body(carry, chunk_keys):
    acc, cos_acc = carry
    stats, c = chunk_stats(chunk_keys)
    acc = jax.tree.map(_merge, acc, stats, is_leaf=is_stats)
    if c is not None:
      cos_acc = jax.tree.map(jnp.add, cos_acc, c)
    return (acc, cos_acc), None

  (acc, cos), _ = jax.lax.scan(body, empty, keys)
  get = lambda name: jax.tree.map(lambda s: s[name], acc, is_leaf=is_stats)
  out = {'mean': get('mean'),
         'variance': jax.tree.map(lambda m2: m2 / (num_draws - 1), get('m2'))}
  if order == 4:
    out['m4'] = jax.tree.map(lambda m4: m4 / num_draws, get('m4'))
  if reference is not None:
    out['cosine'] = jax.tree.map(lambda c: c / num_draws, cos)
  return out


def make_mesh(devices: Any = None) -> jax.sharding.Mesh:
  """A 1-D mesh over `devices` (a list; default: all) with axis 'data'."""
  devices = jax.devices() if devices is None else devices
  return jax.sharding.Mesh(list(devices), (DATA_AXIS,))
