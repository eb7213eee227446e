"""A VAE as a density on low-dimensional data: fit it, and its exact log p(x).

For a model with a reparameterizable q (e.g. `vae.models.gaussian_vae`),
`fit` maximizes the mean ELBO over minibatches with the pathwise estimator
(Kingma & Welling 2014; `vae.model.batch_surrogate`, `vae.optim`). With a
1-D or 2-D latent, the marginal

    p_θ(x) = ∫ p(z) p_θ(x|z) dz ≈ Σ_j Δ p(z_j) p_θ(x | z_j)

is computed on a latent grid (`log_marginal_quadrature`): the exact check of
the IWAE estimate log (1/K) Σ_k p(x, z_k)/q(z_k|x) of `vae.importance`.
"""

import functools

import jax
import jax.numpy as jnp

from vae import model as model_lib
from vae import optim
from vae import types

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey


@functools.partial(jax.jit, static_argnames=(
    'model', 'num_steps', 'batch_size', 'optimizer', 'num_samples'))
def fit(model: model_lib.Model, params: Params, x: Array, key: PRNGKey,
        num_steps: int = 3000, batch_size: int = 100,
        optimizer: optim.OptimizerConfig = optim.OptimizerConfig(
            learning_rate=3e-3),
        num_samples: int = 1) -> tuple[Params, Array]:
  """Maximizes the mean ELBO over minibatches (`vae.optim.fit`).

  Step t draws (k_batch, k_loss) = split(key_t), key_t = split(key, T)[t],
  a minibatch of `batch_size` rows with replacement from k_batch, and takes
  one optimizer step on -(1/B) Σ_b ELBO(x_b), the pathwise surrogate with
  k_loss (`vae.model.batch_surrogate`; example b: split(k_loss, B)[b]).

  Args:
    model: the model (a reparameterizable q; static).
    params: initial parameters (`model.init`).
    x: training data [N, d].
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
  opt = optim.make_optimizer(optimizer, num_steps)

  def loss(p, batch, k, baseline):
    del baseline
    value = model_lib.batch_surrogate(model, p, batch, k, 'elbo', 'pathwise',
                                      num_samples)
    return -value, {'elbo': value}

  state, aux = optim.fit(optim.make_step(loss, opt),
                         optim.init_state(params, opt), x[idx], keys[:, 1])
  return state.params, aux['elbo']


@functools.partial(jax.jit, static_argnames=('model', 'chunk'))
def log_marginal_quadrature(model: model_lib.Model, params: Params, x: Array,
                            z_points: Array, z_volume: Array,
                            chunk: int = 512) -> Array:
  """log p_θ(x_n) by the midpoint rule over a latent grid (D ≤ 2): [N].

  log p(x) ≈ log Σ_j Δ p(z_j) p_θ(x | z_j), z_j the grid points
  (`vae.problems.mixtures.grid`), Δ the cell volume. Deterministic;
  accurate once the grid resolves p_θ(x|z) as a function of z and covers
  the prior's mass.

  Args:
    model: the model (static).
    params: its parameters.
    x: data [N, d].
    z_points: latent grid [G, D].
    z_volume: Δ.
    chunk: rows of x per step (bounds the [chunk, G] temporaries).

  Returns:
    The log-densities.
  """
  lik = model.decoder(params, z_points)  # Batch [G, d].
  log_prior = model_lib.event_log_prob(model.prior(params), z_points)

  def rows(xc):
    log_lik = model_lib.event_log_prob(lik, xc[:, None, :])  # [chunk, G].
    return jax.nn.logsumexp(log_lik + log_prior, axis=-1) + jnp.log(z_volume)

  n = x.shape[0]
  chunk = min(chunk, n)
  padded = jnp.concatenate([x, jnp.zeros((-n % chunk,) + x.shape[1:],
                                         x.dtype)])
  out = jax.lax.map(rows, padded.reshape((-1, chunk) + x.shape[1:]))
  return out.reshape(-1)[:n]
