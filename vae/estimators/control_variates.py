"""Control variates, composed with any score-type estimator.

A control variate for ∇_θ E_q[f] is a function h(z) whose expectation
E_q[h] is known in closed form (Mohamed et al. 2020, sec. 7; optax's 2021
`control_variates`). It is three things (`ControlVariate`): its value h(z)
at a sample, its expectation E_q[h] as a function of q's parameters, and
the update of the state the caller keeps for it (a moving average of past
costs); with a coefficient c (a scalar, or one per parameter element).
`with_control_variate` applies one to an estimator ĝ[·] (a surrogate with
the common signature, e.g. `core.score_function_surrogate`), run on f and
on h with the same key, hence the same samples:

    ĝ_cv = ĝ[f] - c ⊙ (ĝ[h] - ∇_θ E_q[h]),

unbiased whenever ĝ is (E ĝ[h] = ∇_θ E_q[h]) and c does not depend on the
samples. The control variates here:

  `baseline`       h ≡ 1, E_q[h] = 1, c = b (the state): the score
                   function with baseline b, ĝ[f] - b ⊙ ĝ[1] = mean((f - b)
                   ∇ log q); b a moving average of past costs
                   (`moving_average`) or the variance-optimal constant b*_θ =
                   E[f s_θ²]/E[s_θ²] per parameter (`optimal_baseline`,
                   computed by the caller where E_q is known);
  `cost_at_mean`   h ≡ f(E_q[z]) (a baseline that uses no sample);
  `delta_method`   the second-order Taylor expansion of f at μ, whose
                   Gaussian expectation is known (sec. 7.4).

The leave-one-out baseline lives in `core.leave_one_out_surrogate` (it
uses the other samples, so it is an estimator, not a control variate).
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from vae import distributions as dists
from vae import types
from vae.estimators import core

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey
CostFn = types.CostFn
DistBuilder = types.DistBuilder

sg = jax.lax.stop_gradient


class ControlVariate(NamedTuple):
  """A control variate h for ∇_θ E_q[f], with E_q[h] known.

  Attributes:
    value: (function, dist, state) -> h, h(z) -> scalar: its value at one
      sample z (dist is q with stopped parameters: h depends on θ only
      through z).
    expectation: (function, dist, state) -> E_q[h], differentiable in the
      parameters of dist (its gradient is the exact ∇_θ E_q[h]).
    update: (state, costs) -> state: the state after a step whose costs
      are f(z_n) = `costs` (e.g. `moving_average_update`); None: the state
      is not updated from costs (none, or the caller computes it).
    coefficient: state -> c, a scalar or a tree like the parameters (one c
      per element); None: c = 1.
  """
  value: Callable[[CostFn, Any, Any], CostFn]
  expectation: Callable[[CostFn, Any, Any], Array]
  update: Callable[[Any, Array], Any] | None = None
  coefficient: Callable[[Any], Array | Params] | None = None


def with_control_variate(surrogate: Callable[..., Array],
                         control_variate: ControlVariate
                         ) -> Callable[..., Array]:
  """`surrogate` with `control_variate` applied, as a surrogate.

  ĝ_cv = ĝ[f] - c ⊙ (ĝ[h] - ∇_θ E_q[h]), where ĝ[·] is `surrogate`'s
  gradient, run with the same key (the same samples z_n) on f and h. For a
  scalar c this is ĝ[f - c·h] + c·∇_θ E_q[h] (ĝ is linear in f), so f - c·h
  is formed per sample before it multiplies the score, as a hand-written
  baseline would; for one c per parameter element the two gradients are
  combined elementwise. The value stays ĝ[f]'s, (1/N) Σ f(z_n), and the
  gradient for parameters f closes over stays ĝ[f]'s. Unbiased when
  `surrogate` is and c does not depend on the samples.

  Args:
    surrogate: (function, params, dist_builder, key, num_samples,
      **options) -> scalar, linear in f and drawing its samples from `key`
      alone: a score-type one (`core.score_function_surrogate`,
      `core.leave_one_out_surrogate`), or any other such (a pathwise one
      differentiates h, which must then be differentiable).
    control_variate: the `ControlVariate`.

  Returns:
    (function, params, dist_builder, key, num_samples, baseline=None,
    **options) -> scalar, where `baseline` is the control variate's state
    (the name the registry's callers pass it by).
  """

  def composed(function: CostFn, params: Params, dist_builder: DistBuilder,
               key: PRNGKey, num_samples: int, baseline: Any = None,
               **options) -> Array:
    state = baseline
    h = control_variate.value(function, sg(dist_builder(params)), state)
    expected = lambda p: control_variate.expectation(
        function, dist_builder(p), state)
    on = lambda fn, p: surrogate(fn, p, dist_builder, key, num_samples,
                                 **options)
    s_f = on(function, params)
    c = 1.0 if control_variate.coefficient is None else sg(
        control_variate.coefficient(state))
    # PyTreeDef (compiled, in jaxlib) has no type information for mypy.
    tree = jax.tree_util.tree_structure
    if tree(c) != tree(params):  # type: ignore[operator]
      s = on(lambda z: function(z) - c * h(z), params)
      e_h = expected(params)
      return sg(s_f) + (s - sg(s)) + c * (e_h - sg(e_h))
    # One c per parameter element: ĝ[f] - c ⊙ (ĝ[h] - ∇E_q[h]).
    g_h = jax.grad(lambda p: on(h, p))(params)
    g_e = jax.grad(expected)(params)
    return core.inject_gradient(s_f, params, jax.tree_util.tree_map(
        lambda c_, gh, ge: -c_ * (gh - ge), c, g_h, g_e))

  name = getattr(surrogate, '__name__', 'surrogate')
  composed.__name__ = f'{name}_with_control_variate'
  composed.__doc__ = (f'`{name}` with a control variate (see '
                      '`control_variates.with_control_variate`).')
  return composed


# --------------------------------------------------------------------------
# Baselines: h ≡ 1 with coefficient b.


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


def baseline(update: Callable[[Any, Array], Any] | None = None
             ) -> ControlVariate:
  """The baseline b (the state) as a control variate: h ≡ 1, c = b.

  E_q[h] = 1 has zero gradient, so ĝ_cv = ĝ[f] - b ⊙ ĝ[1]; for the score
  function that is (1/N) Σ (f(z_n) - b) ∇_θ log q(z_n). b is a scalar or a
  tree like the parameters (one constant per element).

  Args:
    update: how the caller updates b from a step's costs (None: it
      computes b otherwise).
  """
  one = lambda *_: jnp.ones(())
  return ControlVariate(value=lambda *_: one, expectation=one,
                        update=update, coefficient=lambda b: b)


def moving_average(decay: float = 0.9) -> ControlVariate:
  """The baseline b kept as a moving average of past costs by the caller:
  b ← decay·b + (1-decay)·mean f(z_n) (`moving_average_update`), used
  before the step's samples update it (so the estimator stays unbiased)."""
  return baseline(lambda b, costs: moving_average_update(b, costs, decay))


def optimal_baseline() -> ControlVariate:
  """The variance-optimal constant b*_θ = E_q[f s_θ²]/E_q[s_θ²], s_θ =
  ∂ log q/∂θ, one per parameter element, supplied by the caller where E_q is
  known (e.g. by quadrature: `gaussian_costs.optimal_baseline`)."""
  return baseline()


# --------------------------------------------------------------------------
# The cost at the mean.


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


def cost_at_mean() -> ControlVariate:
  """h ≡ f(E_q[z]) (stopped), E_q[h] = h: ĝ_cv = ĝ[f] - f(E_q z) ĝ[1].

  For the score function, (1/N) Σ_n (f(z_n) - f(E_q z)) ∇_θ log q(z_n).
  Requires f defined at the mean (`cost_at_mean_baseline`).
  """
  at_mean = lambda function, dist, _: cost_at_mean_baseline(function, dist)
  return ControlVariate(value=lambda *a: _constant(at_mean(*a)),
                        expectation=at_mean)


def _constant(value: Array) -> CostFn:
  return lambda z: value


# --------------------------------------------------------------------------
# The delta method.


def _taylor_at_mean(function: CostFn, dist):
  """(h, E_q[h]) of the second-order expansion of f at a = sg(μ)."""
  if not isinstance(dist, dists.Normal):
    raise TypeError('delta_method needs a Normal distribution, got '
                    f'{type(dist).__name__}.')
  shape = dist.shape
  mu = jnp.ravel(jnp.broadcast_to(dist.loc, shape))
  var = jnp.ravel(dist.variance())
  flat_f = lambda z: function(jnp.reshape(z, shape))
  a = sg(mu)
  f_a, g_a, h_a = sg((flat_f(a), jax.grad(flat_f)(a),
                      jax.hessian(flat_f)(a)))

  def taylor(z):
    dz = jnp.ravel(z) - a
    return f_a + g_a @ dz + 0.5 * dz @ h_a @ dz

  dmu = mu - a
  expected = (f_a + g_a @ dmu + 0.5 * dmu @ h_a @ dmu +
              0.5 * jnp.sum(jnp.diag(h_a) * var))
  return taylor, expected


def delta_method(coefficient: float = 1.0) -> ControlVariate:
  """The delta-method control variate (Mohamed et al. 2020, sec. 7.4).

  With the second-order Taylor expansion of f at a = sg(μ),
    h(z) = f(a) + ∇f(a)ᵀ(z - a) + ½ (z - a)ᵀ H (z - a),
  whose Gaussian expectation is known,
    E_q[h] = f(a) + ∇f(a)ᵀ(μ - a) + ½ (μ - a)ᵀH(μ - a) + ½ Σ_i H_ii σ_i²;
  with the score function,
    ∇_θ E_q[f] ≈ (1/N) Σ_n (f(z_n) - c·h(z_n)) ∇_θ log q(z_n) + c·∇_θ E_q[h].
  Unbiased for any coefficient c. Requires q Normal (diagonal) and f twice
  differentiable at μ (the Hessian costs O(d) extra passes).

  Args:
    coefficient: c.
  """
  return ControlVariate(
      value=lambda function, dist, _: _taylor_at_mean(function, dist)[0],
      expectation=lambda function, dist, _: _taylor_at_mean(function,
                                                            dist)[1],
      coefficient=lambda _: coefficient)
