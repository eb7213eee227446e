"""Gradient estimators for discrete latents (Bernoulli, Categorical).

Same signature as `vae.estimators.core`: `(function, params, dist_builder, key,
num_samples, **options) -> grads`, each the gradient of a `*_surrogate`.
`dist_builder(params)` must return a `Bernoulli` (for `disarm` and the
Bernoulli relaxations) or a `Categorical`. For Categoricals the relaxed
estimators call `function` on one-hot vectors (shape of the logits).

The score-function estimators of `vae.estimators.core` (plain, baselines, RLOO)
also apply to discrete q unchanged; VIMCO is in `vae.estimators.iwae`.
"""

import jax
import jax.numpy as jnp

from vae import distributions as dists
from vae.estimators import core
from vae import types

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey
CostFn = types.CostFn
DistBuilder = types.DistBuilder

sg = jax.lax.stop_gradient


def _relaxed_sample(dist, key: PRNGKey, num_samples: int, temperature):
  """Relaxed (soft) and exact (hard) samples sharing the same noise."""
  if isinstance(dist, dists.Bernoulli):
    logit = dists.RelaxedBernoulli(dist.logits, temperature).sample_logits(
        key, (num_samples,))
    soft = jax.nn.sigmoid(logit)
    hard = (logit > 0).astype(soft.dtype)
  elif isinstance(dist, dists.Categorical):
    soft = dists.RelaxedCategorical(dist.logits, temperature).sample(
        key, (num_samples,))
    hard = jax.nn.one_hot(jnp.argmax(soft, axis=-1), dist.num_classes,
                          dtype=soft.dtype)
  else:
    raise TypeError('Gumbel-softmax estimators need a Bernoulli or '
                    f'Categorical distribution, got {type(dist).__name__}.')
  return soft, hard


def gumbel_softmax_surrogate(function: CostFn, params: Params,
                             dist_builder: DistBuilder, key: PRNGKey,
                             num_samples: int,
                             temperature: float = 0.5) -> Array:
  """Gumbel-softmax / Concrete relaxation (Jang et al.; Maddison et al. 2017).

  ∇_θ E_{q_θ(b)}[f(b)] ≈ (1/N) Σ_n ∇_θ f(y_n),
  y = softmax((logits + g)/τ) (Categorical) or σ((logits + L)/τ) (Bernoulli),
  g Gumbel, L logistic noise. BIASED: it is the exact gradient of E[f(y)], a
  different objective, and the bias goes to 0 as τ -> 0 (while the variance
  grows). Requires f defined and differentiable on the relaxed values.

  Args:
    function: f, maps one (relaxed) sample to a scalar.
    params: θ.
    dist_builder: θ -> Bernoulli or Categorical.
    key: PRNG key.
    num_samples: N ≥ 1.
    temperature: τ > 0.

  Returns:
    (1/N) Σ f(y_n); its gradient is the estimator.
  """
  core.check_num_samples(num_samples, who='gumbel_softmax')
  soft, _ = _relaxed_sample(dist_builder(params), key, num_samples,
                            temperature)
  return jnp.mean(jax.vmap(function)(soft))


def straight_through_surrogate(function: CostFn, params: Params,
                               dist_builder: DistBuilder, key: PRNGKey,
                               num_samples: int,
                               temperature: float = 1.0) -> Array:
  """Straight-through Gumbel-softmax (Jang et al. 2017; Bengio et al. 2013).

  Forward pass on exact discrete samples b (so the value is an unbiased
  estimate of E[f(b)]); backward pass through the relaxed sample y:
    ∇_θ ≈ (1/N) Σ_n ∇_z f(z)|_{z=b_n} · ∂y_n/∂θ,  z = b + y - sg(y).
  BIASED, and the bias does not vanish as τ -> 0 in general. Requires f
  differentiable as a function of real-valued inputs.

  Args:
    function: f, maps one sample (0/1 array, or one-hot for Categorical) to a
      scalar.
    params: θ.
    dist_builder: θ -> Bernoulli or Categorical.
    key: PRNG key.
    num_samples: N ≥ 1.
    temperature: τ > 0 of the relaxation used in the backward pass.

  Returns:
    (1/N) Σ f(b_n); its gradient is the estimator.
  """
  core.check_num_samples(num_samples, who='straight_through')
  soft, hard = _relaxed_sample(dist_builder(params), key, num_samples,
                               temperature)
  z = hard + soft - sg(soft)
  return jnp.mean(jax.vmap(function)(z))


def disarm_surrogate(function: CostFn, params: Params,
                     dist_builder: DistBuilder, key: PRNGKey,
                     num_samples: int) -> Array:
  """DisARM (Dong, Mnih & Tucker 2020) for multivariate Bernoulli q.

  With u ~ U(0,1)^d, b = 1[u < σ(α)], b̃ = 1[1 - u < σ(α)] (antithetic),
    ∂/∂α_i ≈ ½ (f(b) - f(b̃)) (-1)^{b̃_i} 1[b_i ≠ b̃_i] σ(|α_i|),
  averaged over N independent pairs (2N evaluations of f), and pulled back to
  θ through α = logits(θ). Unbiased, low variance; f may be any function of
  the binary vector (no differentiability needed).

  Args:
    function: f, maps one binary sample to a scalar.
    params: θ.
    dist_builder: θ -> Bernoulli.
    key: PRNG key.
    num_samples: N ≥ 1 antithetic pairs.

  Returns:
    The surrogate; its value is (1/2N) Σ (f(b_n) + f(b̃_n)).
  """
  core.check_num_samples(num_samples, who='disarm')

  def logits_of(p):
    d = dist_builder(p)
    if not isinstance(d, dists.Bernoulli):
      raise TypeError(f'disarm needs a Bernoulli, got {type(d).__name__}.')
    return d.logits

  logits, pullback = jax.vjp(logits_of, params)
  alpha = sg(logits)
  dtype = jnp.result_type(alpha, float)
  u = jax.random.uniform(key, (num_samples,) + jnp.shape(alpha), dtype)
  probs = jax.nn.sigmoid(alpha)
  b = (u < probs).astype(dtype)
  b_anti = (1.0 - u < probs).astype(dtype)
  f_b = jax.vmap(function)(b)
  f_anti = jax.vmap(function)(b_anti)
  weight = jnp.where(b != b_anti, 1.0, 0.0) * (1.0 - 2.0 * b_anti)
  expand = lambda v: jnp.reshape(v, v.shape + (1,) * jnp.ndim(alpha))
  per_pair = 0.5 * expand(sg(f_b - f_anti)) * weight * jax.nn.sigmoid(
      jnp.abs(alpha))
  grads, = pullback(jnp.mean(per_pair, axis=0))
  value = 0.5 * jnp.mean(f_b + f_anti)
  return core.inject_gradient(value, params, grads)
