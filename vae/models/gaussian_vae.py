"""A small VAE for low-dimensional real data: Gaussian encoder and decoder.

    z ~ N(0, I_d),   x | z ~ N(μ_θ(z), diag σ_θ(z)²),
    q_φ(z|x) = N(μ_φ(x), diag σ_φ(x)²).

p_θ(x) = ∫ N(z; 0, I) p_θ(x|z) dz is an infinite mixture of Gaussians; it is
fit by maximizing the ELBO with the pathwise estimator (Kingma & Welling 2014)
through `vae.train` and evaluated with the IWAE bound
log (1/K) Σ_k p(x, z_k)/q(z_k|x), which tends to log p(x) as K grows, or by
quadrature over a 1-D latent. Both networks are `networks.MLPEncoder`s (a
tanh trunk and linear loc and log-scale heads), initialized with LeCun-normal
weights N(0, 1/fan_in) and zero biases (`init_mlp`, `variables`).
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp

from vae import distributions as dists
from vae import objectives
from vae import train
from vae import types
from vae.models import networks

Array = types.Array
PRNGKey = types.PRNGKey
Params = dict[str, Any]


def init_mlp(key: PRNGKey, sizes: list[int]) -> list[dict[str, Array]]:
  """Dense layers sizes[0] -> ... -> sizes[-1]: W_l ~ N(0, 1/m_l), b_l = 0."""
  keys = jax.random.split(key, len(sizes) - 1)
  return [{'w': jax.random.normal(k, (m, n)) / jnp.sqrt(m), 'b': jnp.zeros(n)}
          for k, m, n in zip(keys, sizes[:-1], sizes[1:])]


def variables(layers: list[dict[str, Array]],
              heads: tuple[str, ...] = ('loc', 'log_scale')) -> Params:
  """Flax variables of a `networks` module from dense layers [{'w', 'b'}].

  layers[:-1] become the tanh trunk (h_{l+1} = tanh(h_l W_l + b_l)); the
  last layer's columns are split evenly into the linear `heads` (for
  `networks.MLPEncoder`: loc, log_scale; `BernoulliEncoder`: logits).
  """
  w, b = layers[-1]['w'], layers[-1]['b']
  params = {h: {'kernel': wh, 'bias': bh} for h, wh, bh in zip(
      heads, jnp.split(w, len(heads), -1), jnp.split(b, len(heads), -1))}
  if layers[:-1]:
    params['trunk'] = {f'hidden_{i}': {'kernel': l['w'], 'bias': l['b']}
                       for i, l in enumerate(layers[:-1])}
  return {'params': params}


def _hidden_sizes(params: Params) -> tuple[int, ...]:
  trunk = params['params'].get('trunk', {})
  return tuple(trunk[f'hidden_{i}']['kernel'].shape[-1]
               for i in range(len(trunk)))


def gaussian_mlp(params: Params, x: Array) -> tuple[Array, Array]:
  """(loc, log_scale) = `networks.MLPEncoder` at x; sizes read from params."""
  out = params['params']['loc']['kernel'].shape[-1]
  return networks.MLPEncoder(_hidden_sizes(params), out).apply(params, x)


def init(key: PRNGKey, data_dim: int, latent_dim: int,
         hidden: tuple[int, ...] = (64,)) -> Params:
  """Encoder x -> (μ_φ, log σ_φ) and decoder z -> (μ_θ, log σ_θ) variables."""
  k_enc, k_dec = jax.random.split(key)
  return {
      'encoder': variables(init_mlp(k_enc, [data_dim, *hidden,
                                            2 * latent_dim])),
      'decoder': variables(init_mlp(k_dec, [latent_dim, *hidden,
                                            2 * data_dim])),
  }


def num_params(params: Params) -> int:
  """The number of scalars in `params` (e.g. params['decoder']: the model)."""
  return sum(int(a.size) for a in jax.tree_util.tree_leaves(params))


def _normal_head(out: tuple[Array, Array],
                 min_log_scale: float) -> dists.Normal:
  loc, raw = out
  # log σ = m + softplus(raw - m): smooth, ≥ m (bounds the density).
  log_scale = min_log_scale + jax.nn.softplus(raw - min_log_scale)
  return dists.Normal(loc=loc, log_scale=log_scale)


def encode(params: Params, x: Array) -> dists.Normal:
  """q_φ(z|x) for one x [D] (or a batch [N, D])."""
  return _normal_head(gaussian_mlp(params['encoder'], x), -8.0)


def decode(params: Params, z: Array, min_log_scale: float = -4.0
           ) -> dists.Normal:
  """p_θ(x|z) for one z [d] (or a batch)."""
  return _normal_head(gaussian_mlp(params['decoder'], z), min_log_scale)


def _terms(params: Params, x: Array):
  q = encode(params, x)
  prior = dists.standard_normal(q.shape, dtype=x.dtype)
  log_lik = lambda z: jnp.sum(decode(params, z).log_prob(x))
  return log_lik, q, prior


def elbo(params: Params, x: Array, key: PRNGKey, num_samples: int = 1) -> Array:
  """ELBO(x) = E_q[log p_θ(x|z)] - KL(q_φ(z|x) ‖ N(0, I)), one x [D]."""
  log_lik, q, prior = _terms(params, x)
  return objectives.elbo(log_lik, q, prior, key, num_samples)


def iwae(params: Params, x: Array, key: PRNGKey, num_samples: int) -> Array:
  """IWAE_K(x) = log (1/K) Σ_k p_θ(x|z_k) p(z_k) / q_φ(z_k|x), z_k ~ q_φ."""
  log_lik, q, prior = _terms(params, x)
  return objectives.iwae_bound(log_lik, q, prior, key, num_samples)


def batch_bound(bound, params: Params, x: Array, key: PRNGKey,
                num_samples: int, common_noise: bool = False) -> Array:
  """`bound` (elbo or iwae) for each row of x [N, D]: [N].

  Args:
    bound: `elbo` or `iwae`.
    params: the VAE parameters.
    x: data [N, D].
    key: PRNG key.
    num_samples: samples per row.
    common_noise: use the same noise ε for every row (z = μ_φ(x) + σ_φ(x) ε),
      so the estimate is a smooth function of x (for density plots);
      otherwise rows get independent keys.

  Returns:
    The per-row estimates.
  """
  keys = (jnp.broadcast_to(key, (x.shape[0],) + jnp.shape(key))
          if common_noise else jax.random.split(key, x.shape[0]))
  return jax.vmap(lambda xi, ki: bound(params, xi, ki, num_samples))(x, keys)


@functools.partial(jax.jit, static_argnames=(
    'num_steps', 'batch_size', 'optimizer', 'num_samples'))
def fit(params: Params, x: Array, key: PRNGKey, num_steps: int = 3000,
        batch_size: int = 100,
        optimizer: train.OptimizerConfig = train.OptimizerConfig(
            learning_rate=3e-3),
        num_samples: int = 1) -> tuple[Params, Array]:
  """Maximizes the mean ELBO over minibatches (`vae.train.fit`).

  Step t draws (k_batch, k_loss) = split(key_t), key_t = split(key, T)[t],
  a minibatch of `batch_size` rows with replacement from k_batch, and takes
  one optimizer step on -(1/B) Σ_b ELBO(x_b) estimated with k_loss.

  Args:
    params: initial parameters (see `init`).
    x: training data [N, D].
    key: PRNG key (minibatches and samples).
    num_steps: optimizer steps T.
    batch_size: examples per step.
    optimizer: the optimizer (default Adam, learning rate 3e-3).
    num_samples: samples per example in the ELBO.

  Returns:
    (trained params, ELBO estimate of each step's minibatch [num_steps]).
  """
  keys = jax.vmap(jax.random.split)(jax.random.split(key, num_steps))
  idx = jax.vmap(lambda k: jax.random.randint(k, (batch_size,), 0, x.shape[
      0]))(keys[:, 0])
  opt = train.make_optimizer(optimizer, num_steps)

  def loss(p, batch, k, baseline):
    del baseline
    value = -jnp.mean(batch_bound(elbo, p, batch, k, num_samples))
    return value, {'elbo': -value}

  state, aux = train.fit(train.make_step(loss, opt),
                         train.init_state(params, opt), x[idx], keys[:, 1])
  return state.params, aux['elbo']


def log_marginal(params: Params, x: Array, key: PRNGKey,
                 num_samples: int = 1000, chunk: int = 1024,
                 common_noise: bool = False) -> Array:
  """IWAE_K estimates of log p_θ(x_n) for x [N, D], in chunks of `chunk`: [N].

  The data are padded to a multiple of `chunk` so that one compiled function
  serves every call with the same (chunk, K). See `batch_bound` for
  `common_noise`.
  """
  n = x.shape[0]
  chunk = min(chunk, n)
  padded = jnp.concatenate([x, jnp.zeros((-n % chunk,) + x.shape[1:],
                                         x.dtype)])
  out = [_batch_iwae(params, padded[lo:lo + chunk],
                     key if common_noise else jax.random.fold_in(key, i),
                     num_samples, common_noise)
         for i, lo in enumerate(range(0, padded.shape[0], chunk))]
  return jnp.concatenate(out)[:n]


@functools.partial(jax.jit, static_argnums=(3, 4))
def _batch_iwae(params, x, key, num_samples, common_noise):
  return batch_bound(iwae, params, x, key, num_samples, common_noise)


@functools.partial(jax.jit, static_argnames='chunk')
def log_marginal_quadrature(params: Params, x: Array, z_points: Array,
                            z_volume: Array, chunk: int = 512) -> Array:
  """log p_θ(x_n) by the midpoint rule over a latent grid (d ≤ 2): [N].

  log p(x) ≈ log Σ_j Δ N(z_j; 0, I) p_θ(x | z_j), z_j the grid points
  (`vae.mixtures.grid`), Δ the cell volume. Deterministic; accurate once the
  grid resolves p_θ(x|z) as a function of z.

  Args:
    params: the VAE parameters.
    x: data [N, D].
    z_points: latent grid [G, d].
    z_volume: Δ.
    chunk: rows of x per step (bounds the [chunk, G] temporaries).

  Returns:
    The log-densities.
  """
  lik = decode(params, z_points)  # batch of G Normals over D.
  log_prior = jnp.sum(dists.standard_normal(z_points.shape).log_prob(
      z_points), -1)

  def rows(xc):
    log_lik = jnp.sum(lik.log_prob(xc[:, None, :]), -1)  # [chunk, G]
    return jax.nn.logsumexp(log_lik + log_prior, axis=-1) + jnp.log(z_volume)

  n = x.shape[0]
  chunk = min(chunk, n)
  padded = jnp.concatenate([x, jnp.zeros((-n % chunk,) + x.shape[1:],
                                         x.dtype)])
  out = jax.lax.map(rows, padded.reshape((-1, chunk) + x.shape[1:]))
  return out.reshape(-1)[:n]
