"""Control variates for the score-function estimator.

Baselines (constant, moving average, cost at the mean) plug into
`core.score_function_surrogate(..., baseline=b)`; the leave-one-out
baseline lives in `core.leave_one_out_surrogate`. This module adds the
delta-method control variate of Mohamed et al. (2020, sec. 7.4) and the small
pure helpers a training loop needs to keep a moving-average baseline.
"""

import jax
import jax.numpy as jnp

from vae import distributions as dists
from vae.estimators import core
from vae import types

Array, Params, PRNGKey = types.Array, types.Params, types.PRNGKey
CostFn, DistBuilder = types.CostFn, types.DistBuilder

sg = jax.lax.stop_gradient


def moving_average_update(baseline: Array, costs: Array,
                          decay: float = 0.9) -> Array:
  """Exponential moving average b ← decay·b + (1-decay)·mean(costs).

  Keep `b` as explicit state in the training loop and use the value from
  BEFORE this step's samples as the baseline, so that it stays independent of
  them and the score-function estimator stays unbiased.

  Args:
    baseline: the current b.
    costs: this step's f(z) values (any shape).
    decay: in [0, 1).

  Returns:
    The updated baseline.
  """
  if not 0.0 <= decay < 1.0:
    raise ValueError(f'decay must be in [0, 1), got {decay}.')
  return decay * baseline + (1.0 - decay) * jnp.mean(sg(costs))


def cost_at_mean_baseline(function: CostFn, dist) -> Array:
  """b = f(E_q[z]): a baseline that uses no sample (the estimator is unbiased).

  Defined where E_q[z] is a valid input of f: Normal and Bernoulli (f must
  accept the probabilities σ(logits)). A Categorical's samples are class
  indices, whose mean is no class: refused with a TypeError.
  """
  if not hasattr(dist, 'mean'):
    raise TypeError(f'score_mean_baseline needs q with a mean that f accepts '
                    f'(Normal, Bernoulli), got {type(dist).__name__}; use '
                    'score_rloo or score_optimal_baseline.')
  return sg(function(dist.mean()))


def _second_order_expansion(function: CostFn, point: Array):
  value = function(point)
  grad = jax.grad(function)(point)
  hess = jax.hessian(function)(point)
  return value, grad, hess


def delta_method_surrogate(function: CostFn, params: Params,
                           dist_builder: DistBuilder, key: PRNGKey,
                           num_samples: int, coefficient: float = 1.0) -> Array:
  """Score function with the delta-method control variate, as a surrogate.

  With the second-order Taylor expansion of f at a = sg(μ),
    h(z) = f(a) + ∇f(a)ᵀ(z - a) + ½ (z - a)ᵀ H (z - a),
  whose Gaussian expectation is known,
    E_q[h] = f(a) + ∇f(a)ᵀ(μ - a) + ½ (μ - a)ᵀH(μ - a) + ½ Σ_i H_ii σ_i²,
  the estimator is
    ∇_θ E_q[f] ≈ (1/N) Σ_n (f(z_n) - c·h(z_n)) ∇_θ log q(z_n) + c·∇_θ E_q[h].
  Unbiased for any coefficient c. Requires q Normal (diagonal) and f twice
  differentiable at μ (the Hessian costs O(d) extra passes).

  Args:
    function: f, maps one sample to a scalar.
    params: θ.
    dist_builder: θ -> Normal.
    key: PRNG key.
    num_samples: N ≥ 1.
    coefficient: c, the control-variate coefficient.

  Returns:
    The surrogate; its value is (1/N) Σ f(z_n).
  """
  core.check_num_samples(num_samples, who='delta_method')
  dist = dist_builder(params)
  if not isinstance(dist, dists.Normal):
    raise TypeError('delta_method needs a Normal distribution, got '
                    f'{type(dist).__name__}.')
  shape = dist.shape
  mu = jnp.ravel(jnp.broadcast_to(dist.loc, shape))
  var = jnp.ravel(dist.variance())
  flat_f = lambda z: function(jnp.reshape(z, shape))
  a = sg(mu)
  f_a, g_a, h_a = sg(_second_order_expansion(flat_f, a))

  def taylor(z):
    dz = jnp.ravel(z) - a
    return f_a + g_a @ dz + 0.5 * dz @ h_a @ dz

  dmu = mu - a
  expected_taylor = (f_a + g_a @ dmu + 0.5 * dmu @ h_a @ dmu +
                     0.5 * jnp.sum(jnp.diag(h_a) * var))
  z = sg(dist.sample(key, (num_samples,)))
  fz = jax.vmap(function)(z)
  hz = jax.vmap(taylor)(z)
  log_q = jax.vmap(lambda zi: core.sample_log_prob(dist, zi))(z)
  score_part = jnp.mean(fz + sg(fz - coefficient * hz) * (log_q - sg(log_q)))
  return score_part + coefficient * (expected_taylor - sg(expected_taylor))


delta_method = core.gradient_from_surrogate(delta_method_surrogate)


def cost_at_mean_surrogate(function: CostFn, params: Params,
                           dist_builder: DistBuilder, key: PRNGKey,
                           num_samples: int) -> Array:
  """Score function with the baseline b = f(E_q[z]), as a surrogate.

  ∇_θ E_q[f] ≈ (1/N) Σ_n (f(z_n) - f(E_q z)) ∇_θ log q(z_n). Unbiased (b uses
  no sample). Requires log q differentiable in θ and f defined at the mean.

  Args:
    function: f, maps one sample to a scalar.
    params: θ.
    dist_builder: θ -> distribution with `mean()`.
    key: PRNG key.
    num_samples: N ≥ 1.

  Returns:
    The surrogate.
  """
  b = cost_at_mean_baseline(function, dist_builder(params))
  return core.score_function_surrogate(function, params, dist_builder, key,
                                      num_samples, baseline=b)


cost_at_mean = core.gradient_from_surrogate(cost_at_mean_surrogate)
