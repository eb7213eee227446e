"""A VAE with Gaussian latents and Bernoulli pixels: losses and log-weights.

    q_φ(z|x) = N(μ_φ(x), diag σ_φ(x)²),  p(z) = N(0, I),
    p_θ(x|z) = Bern(σ(D_θ(z))).

`ModelConfig` declares the architecture's settings and `make` builds the
model. `batch_surrogate` is the training loss for any (objective, estimator)
pair of `vae.estimators.registry`: its value is the mean bound over the
batch, its gradient w.r.t. params = {'encoder', 'decoder'} is the estimator;
`batch_objective` adds the score-function cost that a moving-average
baseline tracks. `log_weights` and `importance_log_likelihood` give the
importance-sampled estimate of log p(x) used for test log-likelihoods.
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vae import config as cfg
from vae import distributions as dists
from vae.models import networks
from vae import objectives
from vae import types

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey

MAX_WIDTH = 10_000  # Widest layer (and largest latent dimension) accepted.


@cfg.settings
class ModelConfig:
  """The MLP VAE's architecture (default: Burda et al.'s 784-200-200-50)."""
  hidden_sizes: tuple[int, ...] = cfg.setting(
      (200, 200), 'Hidden layer widths of the encoder and of the decoder.',
      min=1, max=MAX_WIDTH)
  latent_dim: int = cfg.setting(50, 'Dimension of z.', min=1, max=MAX_WIDTH)
  activation: str = cfg.setting('tanh', 'Hidden-layer activation.',
                                choices=tuple(networks.ACTIVATIONS))

  def num_params(self, data_dim: int = 784) -> int:
    """Σ_layers (d_in + 1)·d_out over the encoder and the decoder."""
    h = self.hidden_sizes
    enc = zip((data_dim,) + h, h + (2 * self.latent_dim,))
    dec = zip((self.latent_dim,) + h, h + (data_dim,))
    return sum((i + 1) * o for i, o in (*enc, *dec))


@dataclasses.dataclass(frozen=True)
class VAE:
  """A static, hashable VAE definition (usable as a jit static argument).

  Attributes:
    encoder: x -> (loc, log_scale), e.g. `networks.MLPEncoder`.
    decoder: z -> Bernoulli logits, e.g. `networks.MLPDecoder`.
    latent_dim: dimension of z.
    data_dim: dimension of x.
  """
  encoder: nn.Module
  decoder: nn.Module
  latent_dim: int
  data_dim: int = 784

  def init(self, key: PRNGKey) -> Params:
    """Initial parameters {'encoder': ..., 'decoder': ...}."""
    return networks.init_vae_params(key, self.encoder, self.decoder,
                                    self.data_dim, self.latent_dim)

  def posterior(self, params: Params, x: Array) -> dists.Normal:
    """q_φ(z|x) for x [..., data_dim]."""
    loc, log_scale = self.encoder.apply(params['encoder'], x)
    return dists.Normal(loc, log_scale)

  def prior(self) -> dists.Normal:
    """p(z) = N(0, I)."""
    return dists.standard_normal((self.latent_dim,))

  def log_likelihood_fn(self, params: Params, x: Array):
    """z -> log p_θ(x|z) = Σ_pixels x·l - softplus(l), l = decoder(z)."""
    def log_likelihood(z):
      logits = self.decoder.apply(params['decoder'], z)
      return jnp.sum(dists.Bernoulli(logits).log_prob(x), axis=-1)
    return log_likelihood


def burda_vae(latent_dim: int = 50, hidden_sizes=(200, 200),
              activation: str = 'tanh', data_dim: int = 784,
              output_bias_init=None) -> VAE:
  """Burda et al. (2015) one-stochastic-layer architecture (784-200-200-50)."""
  return VAE(
      encoder=networks.MLPEncoder(hidden_sizes=tuple(hidden_sizes),
                                  latent_dim=latent_dim, activation=activation),
      decoder=networks.MLPDecoder(hidden_sizes=tuple(hidden_sizes),
                                  output_dim=data_dim, activation=activation,
                                  output_bias_init=output_bias_init),
      latent_dim=latent_dim, data_dim=data_dim)


def make(config: ModelConfig, data_dim: int = 784) -> VAE:
  """The MLP VAE of `config` (output bias zeros; see `init_params`)."""
  return burda_vae(config.latent_dim, config.hidden_sizes, config.activation,
                   data_dim)


def init_params(model: VAE, key: PRNGKey,
                pixel_mean: np.ndarray | None = None) -> Params:
  """θ₀ = model.init(key), with decoder output bias b = logit(x̄) if given.

  b_j = log p_j - log(1 - p_j), p_j = clip(x̄_j, 1e-3, 1 - 1e-3) (the mean
  training image; `networks.mean_logit_init`): the decoder starts out
  predicting the mean image. The other parameters do not depend on x̄.
  """
  params = model.init(key)
  if pixel_mean is None:
    return params
  bias = networks.mean_logit_init(pixel_mean)(None, np.shape(pixel_mean))
  decoder = params['decoder']['params']
  logits = {**decoder['logits'], 'bias': jnp.asarray(bias, jnp.float32)}
  return {**params, 'decoder': {**params['decoder'], 'params': {
      **decoder, 'logits': logits}}}


def example_surrogate(model: VAE, params: Params, x: Array, key: PRNGKey,
                      objective: str, estimator: str, num_samples: int,
                      beta: float = 1.0,
                      baseline: Array | None = None) -> Array:
  """One example's surrogate bound (see `objectives.surrogate_objective`)."""
  q = model.posterior(params, x)
  return objectives.surrogate_objective(
      objective, estimator, model.log_likelihood_fn(params, x), q,
      model.prior(), key, num_samples, beta=beta, baseline=baseline)


def batch_surrogate(model: VAE, params: Params, batch: Array, key: PRNGKey,
                    objective: str = 'elbo', estimator: str = 'pathwise',
                    num_samples: int = 1, beta: float = 1.0,
                    baseline: Array | None = None) -> Array:
  """S̄ = (1/B) Σ_b S(x_b): the mean over the batch of per-example surrogates.

  Maximize it (minimize its negative). Per-example surrogates keep the score
  function terms of different examples separate (no cross-example noise).

  Args:
    model: the VAE.
    params: {'encoder', 'decoder'}.
    batch: x, [B, data_dim].
    key: PRNG key (split per example).
    objective: 'elbo', 'elbo_mc_kl' or 'iwae'.
    estimator: an estimator valid for the objective.
    num_samples: samples per example (K for iwae).
    beta: KL weight.
    baseline: constant baseline for 'score_moving_average'.

  Returns:
    The scalar mean surrogate (its value is the mean bound estimate).
  """
  keys = jax.random.split(key, batch.shape[0])
  per_example = jax.vmap(
      lambda x, k: example_surrogate(model, params, x, k, objective, estimator,
                                     num_samples, beta, baseline))(batch, keys)
  return jnp.mean(per_example)


def batch_objective(model: VAE, params: Params, batch: Array, key: PRNGKey,
                    objective: str, estimator: str, num_samples: int,
                    beta: float | Array, baseline: Array | None
                    ) -> tuple[Array, Array]:
  """(S̄, f̄): `batch_surrogate` and the batch's mean score-function cost.

  f̄ = (1/B) Σ_b f(x_b) with f the cost whose score-function gradient the
  estimator takes (`objectives.score_cost`): f = value + β KL for 'elbo',
  the value itself otherwise. A moving-average baseline tracks f̄; it
  carries no gradient. Same keys and samples as `batch_surrogate`.
  """
  prior = model.prior()

  def one(x, k):
    value = example_surrogate(model, params, x, k, objective, estimator,
                              num_samples, beta, baseline)
    q = model.posterior(params, x)
    return value, objectives.score_cost(objective, value, q, prior, beta)

  values, costs = jax.vmap(one)(batch, jax.random.split(key, batch.shape[0]))
  return jnp.mean(values), jnp.mean(costs)


def log_weights(model: VAE, params: Params, x: Array, key: PRNGKey,
                num_samples: int) -> Array:
  """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q; shape [K].

  Decodes all K samples in one batched call (one matmul per layer).
  """
  q = model.posterior(params, x)
  z = q.sample(key, (num_samples,))
  logits = model.decoder.apply(params['decoder'], z)
  log_px_z = jnp.sum(dists.Bernoulli(logits).log_prob(x), axis=-1)
  return (log_px_z + jnp.sum(model.prior().log_prob(z), -1) -
          jnp.sum(q.log_prob(z), -1))


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def importance_log_likelihood(model: VAE, params: Params, batch: Array,
                              key: PRNGKey, num_samples: int,
                              chunk_size: int = 500) -> Array:
  """Importance-sampled log p(x) ≈ log (1/K) Σ_k w_k for each x in the batch.

  Computed in chunks of `chunk_size` samples with a running logsumexp
  (`lax.scan`), so memory is O(B · chunk_size) for any K. A stochastic lower
  bound on log p(x) (= IWAE_K) that tightens as K grows.

  Args:
    model: the VAE (static).
    params: parameters.
    batch: x, [B, data_dim].
    key: PRNG key.
    num_samples: K (static); must be a multiple of chunk_size (or smaller).
    chunk_size: samples per chunk (static).

  Returns:
    [B] estimates of log p(x).
  """
  chunk = min(chunk_size, num_samples)
  if num_samples % chunk:
    raise ValueError(f'num_samples={num_samples} must be a multiple of '
                     f'chunk_size={chunk}.')
  num_chunks = num_samples // chunk
  keys = jax.random.split(key, batch.shape[0])

  def one_example(x, k):
    def body(acc, ck):
      lw = log_weights(model, params, x, ck, chunk)
      return jnp.logaddexp(acc, jax.nn.logsumexp(lw)), None
    acc, _ = jax.lax.scan(body, jnp.asarray(-jnp.inf, jnp.float32),
                          jax.random.split(k, num_chunks))
    return acc - jnp.log(float(num_samples))

  return jax.vmap(one_example)(batch, keys)
