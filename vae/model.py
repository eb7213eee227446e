"""A latent-variable model is three distributions; bounds of any such model.

A model (`Model`) is a static, hashable object with

    p(z)   = model.prior(params)
    q(z|x) = model.encoder(params, x)
    p(x|z) = model.decoder(params, z)

each a distribution pytree of `vae.distributions` (anything with `sample`
and `log_prob`; continuous or discrete, reparameterizable or not), latents
and data vectors along the last axis, plus `init(key, data_mean)` for its
parameters and `latent_dim`, `data_dim`. Everything here takes a model:

    log w      = log p(x|z) + β (log p(z) - log q(z|x))            (`log_weights`)
    ELBO       = E_q[log p(x|z)] - β KL(q ‖ p)   (analytic KL where the pair
                 has one; else E_q[log w], the Monte Carlo KL)
    IWAE_K     = E log (1/K) Σ_k w_k

`pathwise_bounds` gives these for a batch with reparameterized samples (one
[B·k, d] matmul per decoder layer; its gradient is the pathwise estimator);
`batch_surrogate` the training loss of any (objective, estimator) pair of
`vae.estimators.registry` (`objectives.surrogate_objective` per example);
`batch_objective` adds the score-function cost a moving-average baseline
tracks. Adding a model is one file in `vae/models/` (networks and these
three distributions); trainer, evaluator and importance sampling serve it.
"""

from typing import Any, Protocol

import jax
import jax.numpy as jnp

from vae import kl as kl_lib
from vae import objectives
from vae import types
from vae.estimators import registry

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey


class Model(Protocol):
  """The model protocol: prior, encoder and decoder as distributions.

  Attributes:
    latent_dim: dimension D of z.
    data_dim: dimension d of x.
  """
  # Read-only (a frozen dataclass's fields satisfy them).
  @property
  def latent_dim(self) -> int: ...

  @property
  def data_dim(self) -> int: ...

  def __hash__(self) -> int: ...

  def init(self, key: PRNGKey, data_mean: Array | None = None) -> Params:
    """Initial parameters (a decoder may start at the data mean)."""

  def prior(self, params: Params) -> Any:
    """p(z), batch shape [D] (or [..., D])."""

  def encoder(self, params: Params, x: Array) -> Any:
    """q(z|x) for x [..., d]: batch shape [..., D], every parameter array
    with those leading axes (e.g. loc and log_scale both [..., D])."""

  def decoder(self, params: Params, z: Array) -> Any:
    """p(x|z) for z [..., D]: batch shape [..., d]."""


def event_log_prob(dist: Any, x: Array) -> Array:
  """log p(x) of vectors x [..., n]: Σ over the last axis of the elementwise
  log_prob, or the distribution's own `event_log_prob` where it has one
  (e.g. a full-covariance Gaussian, or a faster sum)."""
  own = getattr(dist, 'event_log_prob', None)
  return own(x) if own is not None else jnp.sum(dist.log_prob(x), -1)


def analytic_kl(q: Any, prior: Any) -> Array | None:
  """KL(q ‖ p) = Σ_j KL(q_j ‖ p_j) over the last axis, or None if the pair
  has no closed form (`vae.kl.kl_divergence`)."""
  try:
    kl = kl_lib.kl_divergence(q, prior)
  except NotImplementedError:
    return None
  # Elementwise KLs [..., D] are summed; a joint one [...] is per vector.
  return jnp.sum(kl, -1) if jnp.ndim(kl) == jnp.ndim(q.mean()) else kl


def elementwise_kl(q: Any, prior: Any) -> Array:
  """KL(q_j ‖ p_j) per latent dimension [..., D] where the pair has an
  elementwise closed form; NaN where it has none."""
  try:
    kl = kl_lib.kl_divergence(q, prior)
  except NotImplementedError:
    kl = None
  if kl is None or jnp.ndim(kl) < jnp.ndim(q.mean()):
    return jnp.full(jnp.shape(q.mean()), jnp.nan)
  return kl


def log_weights(model: Model, params: Params, x: Array, z: Array, q: Any,
                beta: float | Array = 1.0,
                log_q: Array | None = None) -> tuple[Array, Array]:
  """(log w, log p(x|z)): log w = log p(x|z) + β (log p(z) - log q(z|x)).

  Over the leading axes of z [..., D], against which x [..., d] and q
  broadcast (e.g. z [B, k, D] with x [B, 1, d] and q of batch [B, 1, D]; or
  z [C, B, D] with x [B, d] and q [B, D]); the decoder runs once on all.
  `log_q`: log q(z|x) where the caller has it (drawn with z), else
  `event_log_prob(q, z)`.
  """
  log_px = event_log_prob(model.decoder(params, z), x)
  log_pz = event_log_prob(model.prior(params), z)
  if log_q is None:
    log_q = event_log_prob(q, z)
  return log_px + beta * (log_pz - log_q), log_px


def expand(dist: Any, axis: int) -> Any:
  """The distribution with a new axis in every parameter (e.g. [B, D] ->
  [B, 1, D] with axis=1), so that it broadcasts against samples."""
  return jax.tree.map(lambda a: jnp.expand_dims(a, axis), dist)


def sample_per_example(q: Any, key: PRNGKey, num_samples: int) -> Array:
  """z [B, k, D]: q_b.sample(split(key, B)[b], (k,)) for q of batch [B, D].

  The samples `objectives.surrogate_objective` draws for example b with
  the b-th key (the same numbers on the whole-batch and per-example paths).
  """
  keys = jax.random.split(key, q.mean().shape[0])
  return jax.vmap(lambda qb, kb: qb.sample(kb, (num_samples,)))(q, keys)


def batch_noise(key: PRNGKey, batch_size: int, num_samples: int,
                latent_dim: int) -> Array:
  """ε [B, k, D]: ε_b ~ N(0, I) drawn with the b-th key of split(key, B).

  The standard-normal draws behind `sample_per_example` for a diagonal
  Gaussian q, drawn without q (e.g. for a whole epoch ahead).
  """
  keys = jax.random.split(key, batch_size)
  return jax.vmap(lambda k: jax.random.normal(
      k, (num_samples, latent_dim), jnp.float32))(keys)


def pathwise_bounds(model: Model, params: Params, batch: Array,
                    key: PRNGKey | None, objective: str = 'elbo',
                    beta: float | Array = 1.0, num_samples: int = 1,
                    noise: Array | None = None) -> Array:
  """Per-example bounds L(x_b) from z_bk ~ q(z|x_b), all examples at once.

    elbo:        (1/k) Σ_k log p(x_b|z_bk) - β KL(q(z|x_b) ‖ p(z))
    elbo_mc_kl:  (1/k) Σ_k log w_bk
    iwae:        log (1/k) Σ_k w_bk

  with log w as in `log_weights` (log q as z is drawn where q has
  `sample_and_log_prob`, e.g. a flow: no inversion). For a
  reparameterizable q its gradient in params is the pathwise estimator (the same numbers, up to float
  rounding, as `batch_surrogate(..., estimator='pathwise')` with this key).

  Args:
    model: the model.
    params: its parameters.
    batch: x, [B, d].
    key: the samples' key (`sample_per_example`); unused with noise.
    objective: 'elbo', 'elbo_mc_kl' or 'iwae'.
    beta: KL weight.
    num_samples: k.
    noise: ε [B, k, D] drawn ahead (`batch_noise`) for a diagonal Gaussian
      q: z = μ + σ ε (the same numbers as the key that drew ε).

  Returns:
    [B] bound estimates.
  """
  q = model.encoder(params, batch)
  log_q = None
  if noise is not None:
    z = q.loc[:, None] + q.scale[:, None] * noise
  elif hasattr(q, 'sample_and_log_prob'):  # E.g. a flow: log q as it draws.
    assert key is not None, 'pathwise_bounds needs a key or noise.'
    z, log_q = jax.vmap(lambda qb, kb: qb.sample_and_log_prob(
        kb, (num_samples,)))(q, jax.random.split(key, batch.shape[0]))
  else:
    assert key is not None, 'pathwise_bounds needs a key or noise.'
    z = sample_per_example(q, key, num_samples)
  log_w, log_px = log_weights(model, params, batch[:, None], z, expand(q, 1),
                              beta, log_q)  # [B, k] each.
  if objective == 'elbo':
    kl = analytic_kl(q, model.prior(params))
    if kl is None:
      raise ValueError('objective: elbo needs an analytic KL(q ‖ p); use '
                       'elbo_mc_kl.')
    return jnp.mean(log_px, -1) - beta * kl
  if objective == 'iwae':
    return jax.nn.logsumexp(log_w, -1) - jnp.log(float(z.shape[1]))
  return jnp.mean(log_w, -1)


def free_bits_bound(model: Model, params: Params, batch: Array,
                    key: PRNGKey | None, free_bits: float | Array,
                    beta: float | Array = 1.0, num_samples: int = 1,
                    noise: Array | None = None) -> Array:
  """The free-bits ELBO of a batch (Kingma et al. 2016), a scalar:

    S̄_λ = (1/B) Σ_b (1/k) Σ_k log p(x_b|z_bk) - β Σ_j max(λ, KL̄_j),
    KL̄_j = (1/B) Σ_b KL(q(z_j|x_b) ‖ p(z_j))   (`objectives.free_bits_kl`)

  with reparameterized z_bk ~ q(z|x_b) (`sample_per_example`, or z = μ + σ ε
  from `noise`), so its gradient is the pathwise one. It equals the
  batch-mean ELBO of `pathwise_bounds` ('elbo') when every KL̄_j ≥ λ.
  Needs a KL per latent dimension in closed form (a diagonal Gaussian q and
  a diagonal Gaussian prior): ValueError (one line) otherwise.
  """
  q = model.encoder(params, batch)
  try:
    kl = kl_lib.kl_divergence(q, model.prior(params))
  except NotImplementedError:
    kl = None
  if kl is None or jnp.ndim(kl) < jnp.ndim(q.mean()):
    raise ValueError('free bits need KL(q ‖ p) per latent dimension in '
                     'closed form (a diagonal Gaussian q, N(0, I) prior).')
  if noise is not None:
    z = q.loc[:, None] + q.scale[:, None] * noise
  else:
    assert key is not None, 'free_bits_bound needs a key or noise.'
    z = sample_per_example(q, key, num_samples)
  log_px = event_log_prob(model.decoder(params, z), batch[:, None])
  return jnp.mean(log_px) - beta * objectives.free_bits_kl(kl, free_bits)


def example_surrogate(model: Model, params: Params, x: Array, key: PRNGKey,
                      objective: str, estimator: str, num_samples: int,
                      beta: float | Array = 1.0,
                      baseline: float | Array | None = None,
                      **options) -> Array:
  """One example's surrogate bound (`objectives.surrogate_objective`) with
  f(z) = log p(x|z), q = q(z|x), p = p(z)."""
  q = model.encoder(params, x)
  decoder = lambda z: event_log_prob(model.decoder(params, z), x)
  return objectives.surrogate_objective(
      objective, estimator, decoder, q, model.prior(params), key, num_samples,
      beta=beta, baseline=baseline, **options)


def batch_surrogate(model: Model, params: Params, batch: Array, key: PRNGKey,
                    objective: str = 'elbo', estimator: str = 'pathwise',
                    num_samples: int = 1, beta: float | Array = 1.0,
                    baseline: float | Array | None = None,
                    **options) -> Array:
  """S̄ = (1/B) Σ_b S(x_b): the mean of the per-example surrogates.

  Maximize it. Its value is the mean bound estimate and its gradient the
  estimator (encoder) and the ordinary Monte Carlo gradient (decoder,
  prior); example b uses the key split(key, B)[b]. Per-example surrogates
  keep the score-function terms of different examples apart. The pathwise
  estimator takes the whole-batch path (`pathwise_bounds`: the same numbers).

  Args:
    model: the model.
    params: its parameters.
    batch: x, [B, d].
    key: PRNG key.
    objective: 'elbo', 'elbo_mc_kl' or 'iwae'.
    estimator: a registry estimator valid for the objective.
    num_samples: samples per example (K for iwae).
    beta: KL weight.
    baseline: the moving-average baseline (estimators with state).
    **options: the estimator's options (e.g. temperature).

  Returns:
    The scalar mean surrogate.
  """
  if estimator == 'pathwise':
    registry.check(estimator, objective, num_samples, beta)
    return jnp.mean(pathwise_bounds(model, params, batch, key, objective,
                                    beta, num_samples))
  keys = jax.random.split(key, batch.shape[0])
  return jnp.mean(jax.vmap(lambda x, k: example_surrogate(
      model, params, x, k, objective, estimator, num_samples, beta, baseline,
      **options))(batch, keys))


def batch_objective(model: Model, params: Params, batch: Array, key: PRNGKey,
                    objective: str, estimator: str, num_samples: int,
                    beta: float | Array = 1.0,
                    baseline: float | Array | None = None,
                    **options) -> tuple[Array, Array]:
  """(S̄, f̄): `batch_surrogate` and the batch's mean score-function cost.

  f̄ = (1/B) Σ_b f(x_b), f the cost whose score-function gradient the
  estimator takes (`objectives.score_cost`): value + β KL for 'elbo', the
  value itself otherwise. A moving-average baseline tracks f̄ (no gradient).
  Same keys and samples as `batch_surrogate`.
  """
  prior = model.prior(params)

  def one(x, k):
    value = example_surrogate(model, params, x, k, objective, estimator,
                              num_samples, beta, baseline, **options)
    return value, objectives.score_cost(objective, value,
                                        model.encoder(params, x), prior, beta)

  values, costs = jax.vmap(one)(batch, jax.random.split(key, batch.shape[0]))
  return jnp.mean(values), jnp.mean(costs)
