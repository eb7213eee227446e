"""The one importance-sampling engine: log p(x), bounds and their errors.

For any model (`vae.model.Model`) and a proposal q(z) per data point (the
encoder's q(z|x) by default; or a fitted q, or the prior),

    log p̂(x)  = log (1/K) Σ_k w_k,   w_k = p(x|z_k) p(z_k) / q(z_k),  z_k ~ q,

a stochastic lower bound on log p(x) (= IWAE_K) that is tight as K → ∞
(Burda et al., 2015). The same K samples give

    se(log p̂) = √(Σ_k w_k² / (Σ_k w_k)² - 1/K)     (delta method, √(ρ̂/K))
    ELBO      = (1/K) Σ_k log p(x|z_k) - KL(q ‖ p(z))   (analytic KL where
                the pair has one; else (1/K) Σ_k log w_k),
    se(ELBO)  = sd_k(its integrand) / √K,
    IWAE_k    = (k/K) Σ_{groups g} log (1/k) Σ_{j∈g} w_j   (K/k groups, k | C),
    se(IWAE_k) = sd_g(its terms) / √(K/k)   (NaN for a single group)
    log p̂_{2^j} for j = 0, 1, ...: the first 2^j weights of the stream
                (`nested`: estimates at growing K from one sampler).

Samples are drawn in chunks of C under one `lax.scan` (memory O(B·C) for
any K): chunk c of a batch uses the key split(key, K/C)[c] and z = q.sample(
key_c, (C,)) [C, B, D], decoded in cache-sized blocks (`log_weights_blocked`:
c·B ≈ 10^3 rows per matmul on CPU, all C·B elsewhere). Sums are merged in
log space (logaddexp) and means/variances by Chan et al.'s pairwise update.
`importance_sampling` runs batches of data points (batch i: fold_in(key, i)).
"""

import functools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vae import config as cfg
from vae import model as model_lib
from vae import types


@cfg.settings
class KGrid:
  """The sample counts of a study of log p̂_K against K (declared once for
  the experiments that sweep it): K = 1, 2, 4, ..., 2^max_log2_k."""
  max_log2_k: int = cfg.setting(16, 'Largest K is 2^this; K runs over powers '
                                'of 2.', min=0, max=24)

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey

# Rows (samples x data points) decoded per matmul on CPU: blocks of about
# 10^3 rows keep the decoder's activations in cache (10^4 rows at once ran
# 1.3x slower on a 2-core EPYC).
CPU_BLOCK_ROWS = 1024


def chunk_size_for(num_samples: int, chunk_size: int) -> int:
  """C = min(chunk_size, K); ValueError (one line) unless C divides K."""
  chunk = min(chunk_size, num_samples)
  if num_samples % chunk:
    raise ValueError(f'num_samples: {num_samples} must be a multiple of '
                     f'chunk_size {chunk}.')
  return chunk


def log_weights_blocked(model: model_lib.Model, params: Params, x: Array,
                        q: Any, z: Array, max_rows: int | None = None,
                        log_q: Array | None = None) -> tuple[Array, Array]:
  """`model.log_weights` (β = 1) of z [C, B, D], x [B, d], in blocks.

  The C samples are decoded c at a time (`lax.map`; c the largest divisor
  of C with c·B ≤ max_rows, default `CPU_BLOCK_ROWS` on CPU and all C
  elsewhere): the same numbers as one call, in cache-sized matmuls.
  `log_q` [C, B]: log q(z) where it was drawn with z (a flow's
  `sample_and_log_prob`), else computed from q.

  Returns:
    (log w, log p(x|z)), each [C, B].
  """
  num, batch = z.shape[:2]
  if max_rows is None:
    max_rows = CPU_BLOCK_ROWS if jax.default_backend() == 'cpu' else num * batch
  c = max([d for d in range(1, num + 1) if num % d == 0 and
           d * batch <= max_rows] or [1])
  one = lambda zl: model_lib.log_weights(model, params, x, zl[0], q,
                                         log_q=zl[1])
  if c == num:
    return one((z, log_q))
  blocks = lambda a: None if a is None else a.reshape((num // c, c) +
                                                      a.shape[1:])
  lw, log_px = jax.lax.map(one, (blocks(z), blocks(log_q)))
  return lw.reshape(num, batch), log_px.reshape(num, batch)


def _merge(count, mean, m2, values):
  """Chan et al.'s update of (n, mean, M2) with the rows of values [C, B].

  A value of -inf (a sample where log p(z) or log p(x|z) underflows) makes
  its column's mean -inf and M2 inf from then on, as the sample mean is;
  without the guard the update gives (-inf) - (-inf) = NaN.
  """
  n_b = values.shape[0]
  dead = jnp.isneginf(mean) | jnp.any(jnp.isneginf(values), 0)
  values = jnp.where(dead, 0.0, values)
  mean, m2 = jnp.where(dead, 0.0, mean), jnp.where(dead, 0.0, m2)
  mean_b = jnp.mean(values, 0)
  m2_b = jnp.sum((values - mean_b)**2, 0)
  total = count + n_b
  delta = mean_b - mean
  return (total, jnp.where(dead, -jnp.inf, mean + delta * n_b / total),
          jnp.where(dead, jnp.inf,
                    m2 + m2_b + delta**2 * count * n_b / total))


def _nested_small(lw: Array, chunk: int) -> Array:
  """log (1/K) Σ_{k≤K} w_k for K = 1, 2, 4, ... ≤ C from the first chunk."""
  running = jax.lax.cumlogsumexp(lw, axis=0)  # [C, B].
  ks = [2**i for i in range(chunk.bit_length()) if 2**i <= chunk]
  return jnp.stack([running[k - 1] - math.log(k) for k in ks], -1)


@functools.partial(jax.jit, static_argnames=(
    'model', 'num_samples', 'chunk_size', 'iwae_ks', 'nested'))
def importance_batch(model: model_lib.Model, params: Params, x: Array,
                     key: PRNGKey, proposal: Any = None, *, num_samples: int,
                     chunk_size: int = 100, iwae_ks: tuple[int, ...] = (),
                     nested: bool = False) -> dict[str, Array]:
  """Per data point of x [B, d]: log p̂(x), its se, the ELBO, IWAE_k (module).

  Args:
    model: the model (static).
    params: its parameters.
    x: [B, d].
    key: the batch's key (chunk c: split(key, K / C)[c]).
    proposal: q with batch shape [B, D] (default: the encoder's q(z|x)).
    num_samples: K, a multiple of chunk_size (or smaller).
    chunk_size: C, samples per data point decoded together.
    iwae_ks: the k of the IWAE_k bounds; each must divide C.
    nested: also return 'log_px_by_k' [B, J]: log p̂ from the first 2^j
      weights, j = 0..log2 K (K and C powers of 2).

  Returns:
    {'log_px', 'log_px_se', 'elbo', 'elbo_se', 'kl', 'iwae_<k>',
     'iwae_<k>_se'... [, 'log_px_by_k']}: [B] arrays (kl: analytic, or
    the Monte Carlo
    (1/K) Σ_k log q(z_k)/p(z_k)).
  """
  q = model.encoder(params, x) if proposal is None else proposal
  chunk = chunk_size_for(num_samples, chunk_size)
  for j in iwae_ks:
    if j < 1 or chunk % j:
      raise ValueError(f'iwae_ks: {j} must divide the chunk size {chunk}.')
  if nested and (num_samples & (num_samples - 1) or chunk & (chunk - 1)):
    raise ValueError(f'nested estimates need num_samples ({num_samples}) '
                     f'and chunk_size ({chunk}) powers of 2.')
  kl = model_lib.analytic_kl(q, model.prior(params))
  batch = x.shape[0]
  zeros = jnp.zeros((batch,), jnp.float32)

  def body(carry, chunk_key):
    lse, lse2, moments, recon, iwae_moments = carry
    if hasattr(q, 'sample_and_log_prob'):  # A flow: log q as it draws.
      z, log_q = q.sample_and_log_prob(chunk_key, (chunk,))  # [C, B, D].
    else:
      z, log_q = q.sample(chunk_key, (chunk,)), None
    # Materialized once: without the barrier XLA fuses the decoder's
    # [C·B, d] log-likelihood into each of the sums below (17% slower).
    lw, log_px_z = jax.lax.optimization_barrier(
        log_weights_blocked(model, params, x, q, z, log_q=log_q))
    integrand = log_px_z if kl is not None else lw
    iwae_moments = tuple(
        _merge(*m, jax.nn.logsumexp(lw.reshape(chunk // j, j, batch), 1) -
               math.log(j)) for m, j in zip(iwae_moments, iwae_ks))
    out = (_nested_small(lw, chunk) if nested else None,
           jax.nn.logsumexp(lw, 0))
    return (jnp.logaddexp(lse, out[1]),
            jnp.logaddexp(lse2, jax.nn.logsumexp(2.0 * lw, 0)),
            _merge(*moments, integrand), recon + jnp.sum(log_px_z, 0),
            iwae_moments), out

  init = (zeros - jnp.inf, zeros - jnp.inf, (0.0, zeros, zeros), zeros,
          tuple((0.0, zeros, zeros) for _ in iwae_ks))
  (lse, lse2, (_, mean, m2), recon, iwae_moments), (small, chunk_lse) = (
      jax.lax.scan(
          body, init, jax.random.split(key, num_samples // chunk)))
  k = float(num_samples)
  elbo = mean - kl if kl is not None else mean
  out = {'log_px': lse - jnp.log(k),
         'log_px_se': jnp.sqrt(jnp.maximum(jnp.exp(lse2 - 2 * lse) - 1 / k,
                                           0.0)),
         'elbo': elbo,
         'elbo_se': jnp.sqrt(m2 / max(k - 1.0, 1.0) / k),
         # Monte Carlo: E_q[log q - log p(z)] = E_q[log p(x|z)] - ELBO.
         'kl': kl if kl is not None else recon / k - mean}
  for (_, iwae, iwae_m2), j in zip(iwae_moments, iwae_ks):
    groups = num_samples // j
    out[f'iwae_{j}'] = iwae
    out[f'iwae_{j}_se'] = (jnp.sqrt(iwae_m2 / (groups - 1) / groups)
                           if groups > 1 else jnp.full_like(iwae, jnp.nan))
  if nested:
    cum = jax.lax.cumlogsumexp(chunk_lse, axis=0)  # [K / C, B].
    large = [cum[2**i - 1] - math.log(2**i * chunk)
             for i in range(1, (num_samples // chunk).bit_length())]
    out['log_px_by_k'] = jnp.concatenate(
        [small[0]] + [v[:, None] for v in large], 1)
  return out


def pad(x: np.ndarray | Array,
        batch_size: int) -> tuple[np.ndarray, int]:
  """x padded with zeros to whole batches, [num_batches, B, d]; and n."""
  n = len(x)
  padded = -(-n // batch_size) * batch_size
  x = np.concatenate([np.asarray(x, np.float32),
                      np.zeros((padded - n,) + x.shape[1:], np.float32)])
  return x.reshape((-1, batch_size) + x.shape[1:]), n


def importance_sampling(model: model_lib.Model, params: Params,
                        x: np.ndarray, key: PRNGKey, num_samples: int = 5000,
                        iwae_ks: Sequence[int] = (), batch_size: int = 100,
                        chunk_size: int = 100, proposal: Any = None,
                        nested: bool = False,
                        log: Callable[[str], None] | None = None,
                        progress: Callable[[int, int], None] | None = None,
                        done: Sequence[Any] = (),
                        on_batch: Callable[[int, Any], None] | None = None
                        ) -> dict[str, np.ndarray]:
  """`importance_batch` over batches of the rows of x [N, d] (module).

  Args:
    model: the model.
    params: its parameters.
    x: [N, d].
    key: PRNG key (batch i uses fold_in(key, i)).
    num_samples: K; a multiple of chunk_size (or smaller).
    iwae_ks: the k of the IWAE_k bounds (each divides the chunk size).
    batch_size: data points decoded together.
    chunk_size: samples per data point decoded together (batch_size·
      chunk_size rows per matmul; about 10^4 is fast on CPU).
    proposal: q with batch shape [N, D] (default: the encoder's).
    nested: also 'log_px_by_k' (see `importance_batch`).
    log: if given (and `progress` is not), called with a progress line
      about every tenth of the way.
    progress: if given, called after each batch (its results computed) with
      (data points done, N): e.g. a progress bar's update.
    done: to resume, the outputs of the first batches of an interrupted call
      with the same arguments, as `on_batch` got them: not recomputed (batch
      i's key does not depend on the others, so the result is that of an
      uninterrupted call).
    on_batch: called with (i, batch i's outputs, numpy) after each batch
      computed here (`over_batches`).

  Returns:
    {'log_px', 'log_px_se', 'elbo', 'elbo_se', 'kl', 'iwae_<k>',
     'iwae_<k>_se'...}:
    float64 arrays [N] ([N, J] for log_px_by_k).
  """
  chunk = chunk_size_for(num_samples, chunk_size)
  iwae_ks = tuple(int(k) for k in iwae_ks)
  out = over_batches(
      lambda b, k, part: importance_batch(
          model, params, b, k, part, num_samples=num_samples,
          chunk_size=chunk, iwae_ks=iwae_ks, nested=nested),
      x, key, batch_size, proposal, log=log, label='importance sampling',
      progress=progress, done=done, on_batch=on_batch)
  return {name: np.asarray(v, np.float64) for name, v in out.items()}


def over_batches(fn: Callable[[Array, PRNGKey, Any], Any],
                 x: np.ndarray | Array, key: PRNGKey, batch_size: int,
                 per_point: Any = None, *,
                 log: Callable[[str], None] | None = None,
                 label: str = 'batches',
                 progress: Callable[[int, int], None] | None = None,
                 done: Sequence[Any] = (),
                 on_batch: Callable[[int, Any], None] | None = None) -> Any:
  """fn(x_i, fold_in(key, i), per_point_i) over the batches i of the rows
  of x [N, ...]; each output leaf's first N rows, concatenated (numpy).

  x is padded with zeros to whole batches of min(batch_size, N) rows (one
  compiled shape), `per_point` (a pytree of [N, ...] arrays, e.g. a
  proposal per data point; or None) with repeats of its row 0; the
  padding's outputs are dropped. The first len(done) batches are taken
  from `done` (their outputs from an interrupted call), not computed;
  `on_batch(i, output as numpy)` follows each batch computed. After each
  batch, `progress(done, N)` if given; else `log` gets '  <label>: done/N'
  about every tenth of the batches.
  """
  batch_size = min(batch_size, len(x))
  batches, n = pad(x, batch_size)
  extra = len(batches) * batch_size - n
  per_point = jax.tree.map(lambda a: jnp.concatenate(
      [jnp.asarray(a), jnp.repeat(jnp.asarray(a)[:1], extra, 0)]), per_point)
  outs = []
  if len(done) > len(batches):
    raise ValueError(f'done: {len(done)} batches, more than the '
                     f'{len(batches)} of these data.')
  for i, b in enumerate(batches):
    if i < len(done):
      outs.append(done[i])
    else:
      part = jax.tree.map(lambda a: a[i * batch_size:(i + 1) * batch_size],
                          per_point)
      outs.append(fn(jnp.asarray(b), jax.random.fold_in(key, i), part))
      if on_batch is not None:
        outs[-1] = jax.device_get(outs[-1])
        on_batch(i, outs[-1])
    rows = min((i + 1) * batch_size, n)
    if progress is not None:
      jax.block_until_ready(outs[-1])
      progress(rows, n)
    elif log is not None and (i + 1) % max(1, len(batches) // 10) == 0:
      jax.block_until_ready(outs[-1])
      log(f'  {label}: {rows}/{n}')
  return jax.tree.map(
      lambda *a: np.concatenate([np.asarray(v) for v in a])[:n], *outs)


def prior_proposal(model: model_lib.Model, params: Params,
                   batch_size: int) -> Any:
  """p(z) as a proposal for each of `batch_size` data points: its parameters
  broadcast to a leading axis [B, ...]."""
  return jax.tree.map(lambda a: jnp.broadcast_to(a, (batch_size,) + a.shape),
                      model.prior(params))
