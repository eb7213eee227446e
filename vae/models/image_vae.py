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

Speed (XLA:CPU, issue 11): the pathwise estimator, the one every bound is
trained and evaluated with by default, is computed with whole-batch arrays
(`pathwise_bounds`: one [B·k, d] matmul per layer) from the noise
`batch_noise` draws with the per-example keys the general path uses, so it
gives the same numbers up to float rounding; the other estimators vmap
`example_surrogate` over the batch. The Bernoulli log-likelihood
(`bernoulli_log_likelihood`) takes one exp and one log1p per pixel and
shares the exp with its derivative x - σ(l).
"""

import dataclasses
import functools

import flax.linen as nn
import jax
from jax import custom_derivatives
import jax.numpy as jnp
import numpy as np

from vae import config as cfg
from vae import distributions as dists
from vae import kl as kl_lib
from vae.estimators import registry
from vae.models import networks
from vae import objectives
from vae import types

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey

MAX_WIDTH = 10_000  # Widest layer (and largest latent dimension) accepted.
# Rows (samples x images) decoded per matmul on CPU by `log_weights_blocked`:
# blocks of about 10^3 rows keep the decoder's activations in cache (10^4
# rows at once ran 1.3x slower on a 2-core EPYC).
CPU_BLOCK_ROWS = 1024


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
      return bernoulli_log_likelihood(
          x, self.decoder.apply(params['decoder'], z))
    return log_likelihood


@jax.custom_jvp
def bernoulli_log_likelihood(x: Array, logits: Array) -> Array:
  """log p(x|l) = Σ_j x_j l_j - max(l_j, 0) - log1p(exp(-|l_j|)) (last axis).

  = Σ_j x_j l_j - softplus(l_j), for pixels x_j in [0, 1]. Its derivatives
  are ∂/∂l_j = x_j - σ(l_j) and ∂/∂x_j = l_j (a custom JVP that reuses
  exp(-|l_j|) for σ(l_j); forward and reverse mode, any order).
  """
  return _bernoulli_terms(x, logits)[0]


def _bernoulli_terms(x, logits):
  e = jnp.exp(-jnp.abs(logits))
  value = jnp.sum(x * logits - jnp.maximum(logits, 0.0) - jnp.log1p(e),
                  axis=-1)
  sigmoid = jnp.where(logits >= 0, 1.0, e) / (1.0 + e)
  return value, sigmoid


def _bernoulli_log_likelihood_jvp(primals, tangents):
  x, logits = primals
  dx, dlogits = tangents
  value, sigmoid = _bernoulli_terms(x, logits)
  terms = []  # No work for a zero tangent (e.g. of the data x).
  if not _is_zero(dlogits):
    terms.append((x - sigmoid) * dlogits)
  if not _is_zero(dx):
    terms.append(logits * dx)
  return value, (jnp.sum(sum(terms), axis=-1) if terms else
                 jnp.zeros_like(value))


def _is_zero(tangent) -> bool:
  return isinstance(tangent, custom_derivatives.SymbolicZero)


bernoulli_log_likelihood.defjvp(_bernoulli_log_likelihood_jvp,
                                symbolic_zeros=True)


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


def batch_noise(key: PRNGKey, batch_size: int, num_samples: int,
                latent_dim: int) -> Array:
  """ε [B, k, D]: ε_b ~ N(0, I) drawn with the b-th key of split(key, B).

  The standard-normal draws behind z_b = μ_b + σ_b ε_b of `batch_surrogate`
  (and of `example_surrogate` with key split(key, B)[b]) for the pathwise
  estimator: the same numbers on either path.
  """
  return _normal_per_key(jax.random.split(key, batch_size),
                         (num_samples, latent_dim))


def _normal_per_key(keys: Array, shape: tuple[int, ...]) -> Array:
  """[n, *shape]: row i ~ N(0, I) drawn with keys[i] (as `Normal.sample`)."""
  return jax.vmap(lambda k: jax.random.normal(k, shape, jnp.float32))(keys)


def pathwise_bounds(model: VAE, params: Params, batch: Array, noise: Array,
                    objective: str = 'elbo', beta: float | Array = 1.0
                    ) -> Array:
  """Per-example bounds L(x_b) with z_bk = μ_b + σ_b ε_bk, all examples at once.

    elbo:        (1/k) Σ_k log p(x_b|z_bk) - β KL(q(z|x_b) ‖ p(z))
    elbo_mc_kl:  (1/k) Σ_k [log p(x_b|z_bk) + β log p(z_bk)/q(z_bk|x_b)]
    iwae:        log (1/k) Σ_k exp(log p(x_b|z_bk) + β log p(z_bk)/q(z_bk|x_b))

  Differentiable in params: its gradient is the pathwise estimator, as
  `example_surrogate(..., estimator='pathwise')` with the same ε computes
  it (equal up to float rounding), but with [B·k, d] matmuls.

  Args:
    model: the VAE.
    params: {'encoder', 'decoder'}.
    batch: x, [B, data_dim].
    noise: ε, [B, k, latent_dim] (`batch_noise`).
    objective: 'elbo', 'elbo_mc_kl' or 'iwae'.
    beta: KL weight.

  Returns:
    [B] bound estimates.
  """
  q = model.posterior(params, batch)
  q = dists.Normal(q.loc[:, None], q.log_scale[:, None])  # [B, 1, D].
  z = q.loc + q.scale * noise
  log_w, log_px = log_weights_at(model, params, batch[:, None], q, z,
                                 beta)  # [B, k] each.
  if objective == 'elbo':
    kl = jnp.sum(kl_lib.kl_divergence(q, model.prior()), axis=(-2, -1))
    return jnp.mean(log_px, -1) - beta * kl
  if objective == 'iwae':
    return jax.nn.logsumexp(log_w, -1) - jnp.log(float(noise.shape[1]))
  return jnp.mean(log_w, -1)


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
  if estimator == 'pathwise':  # Whole-batch arrays, the same numbers.
    registry.check(estimator, objective, num_samples, beta)
    noise = batch_noise(key, batch.shape[0], num_samples, model.latent_dim)
    return jnp.mean(pathwise_bounds(model, params, batch, noise, objective,
                                    beta))
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


def log_weights_at(model: VAE, params: Params, x: Array, q: dists.Normal,
                   z: Array, beta: float | Array = 1.0
                   ) -> tuple[Array, Array]:
  """(log w, log p(x|z)): log w = log p(x|z) + β (log p(z) - log q(z|x)).

  Over the leading axes of z [..., latent_dim], against which x [...,
  data_dim] and q broadcast (e.g. z [B, k, D] with x [B, 1, d]; or z [C, B,
  D] with x [B, d]); the decoder runs once on all of them.
  """
  log_px = bernoulli_log_likelihood(x, model.decoder.apply(params['decoder'],
                                                           z))
  return log_px + beta * jnp.sum(model.prior().log_prob(z) - q.log_prob(z),
                                 -1), log_px


def log_weights_blocked(model: VAE, params: Params, x: Array,
                        q: dists.Normal, z: Array,
                        max_rows: int | None = None) -> tuple[Array, Array]:
  """`log_weights_at` (β = 1) of z [C, B, D], x [B, d], in blocks of samples.

  The C samples are decoded c at a time (`lax.map`; c the largest divisor
  of C with c·B ≤ max_rows, default `CPU_BLOCK_ROWS` on CPU and all C
  elsewhere): the same numbers as one call, in cache-sized matmuls.

  Returns:
    (log w, log p(x|z)), each [C, B].
  """
  num, batch = z.shape[:2]
  if max_rows is None:
    max_rows = CPU_BLOCK_ROWS if jax.default_backend() == 'cpu' else num * batch
  c = max([d for d in range(1, num + 1) if num % d == 0 and
           d * batch <= max_rows] or [1])
  if c == num:
    return log_weights_at(model, params, x, q, z)
  lw, log_px = jax.lax.map(lambda zz: log_weights_at(model, params, x, q, zz),
                           z.reshape((num // c, c) + z.shape[1:]))
  return lw.reshape(num, batch), log_px.reshape(num, batch)


def log_weights(model: VAE, params: Params, x: Array, key: PRNGKey,
                num_samples: int) -> Array:
  """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q; shape [K].

  Decodes all K samples in one batched call (one matmul per layer).
  """
  q = model.posterior(params, x)
  return log_weights_at(model, params, x, q,
                        q.sample(key, (num_samples,)))[0]


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def importance_log_likelihood(model: VAE, params: Params, batch: Array,
                              key: PRNGKey, num_samples: int,
                              chunk_size: int = 500) -> Array:
  """Importance-sampled log p(x) ≈ log (1/K) Σ_k w_k for each x in the batch.

  Computed in chunks of `chunk_size` samples with a running logsumexp
  (`lax.scan`), so memory is O(B · chunk_size) for any K. A stochastic lower
  bound on log p(x) (= IWAE_K) that tightens as K grows. Image b's chunk c
  uses the key split(split(key, B)[b], K / chunk_size)[c]; all B images'
  chunks are decoded together (`log_weights_blocked`).

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
  chunk_keys = jnp.swapaxes(jax.vmap(lambda k: jax.random.split(
      k, num_chunks))(keys), 0, 1)  # [chunks, B].
  q = model.posterior(params, batch)  # Batch shape [B, D].

  def body(acc, ck):
    noise = _normal_per_key(ck, (chunk, model.latent_dim))  # [B, chunk, D].
    z = q.loc + q.scale * jnp.swapaxes(noise, 0, 1)  # [chunk, B, D].
    lw, _ = log_weights_blocked(model, params, batch, q, z)
    return jnp.logaddexp(acc, jax.nn.logsumexp(lw, 0)), None

  acc, _ = jax.lax.scan(body, jnp.full(batch.shape[:1], -jnp.inf,
                                       jnp.float32), chunk_keys)
  return acc - jnp.log(float(num_samples))
