"""vae.estimators.control_variates: the composition against the hand-written
formulas, variances against quadrature, exactness.

(Unbiasedness of every composed registry entry: tests/test_registry.py.)
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import stat_checks as sc
from tests.test_estimators import draws, gaussian_builder
from vae import distributions as dists
from vae.estimators import control_variates as cv
from vae.estimators import core
from vae.estimators import registry
from vae.problems import gaussian_costs as gc

sg = jax.lax.stop_gradient
PARAMS = {'mu': jnp.asarray(0.3), 'sigma': jnp.asarray(0.8)}


def _by_hand(function, params, key, n, cost_minus, extra=lambda p: 0.0):
  """mean((f - h)(z) ∇ log q(z)) + ∇ extra(θ) per parameter, or with
  `cost_minus` a tree of per-parameter (f - b) functions."""
  def surrogate(p, g):
    dist = gaussian_builder(p)
    z = sg(dist.sample(key, (n,)))
    log_q = jax.vmap(lambda zi: jnp.sum(dist.log_prob(zi)))(z)
    return jnp.mean(sg(jax.vmap(g)(z)) * log_q) + extra(p)
  if not isinstance(cost_minus, dict):
    return jax.grad(surrogate)(params, cost_minus)
  return {k: jax.grad(surrogate)(params, g)[k] for k, g in cost_minus.items()}


def test_composed_entries_equal_the_hand_written_estimators():
  # Same key, same samples: the composition ĝ[f] - c ⊙ (ĝ[h] - ∇E_q[h])
  # equals mean((f - b) ∇ log q) (+ ∇E_q[h] for the delta method).
  f, key, n = jnp.cos, jax.random.PRNGKey(4), 5
  b, tree = 0.7, {'mu': 0.4, 'sigma': -0.9}
  mean = jnp.cos(PARAMS['mu'])
  a = PARAMS['mu']  # Taylor of cos at a: cos a - sin a dz - ½ cos a dz².
  taylor = lambda z: jnp.cos(a) - jnp.sin(a) * (z - a) - 0.5 * jnp.cos(
      a) * (z - a)**2
  expected = lambda p: (jnp.cos(a) - jnp.sin(a) * (p['mu'] - a) - 0.5 *
                        jnp.cos(a) * ((p['mu'] - a)**2 + p['sigma']**2))
  cases = {
      ('score_moving_average', b): _by_hand(f, PARAMS, key, n,
                                            lambda z: f(z) - b),
      ('score_optimal_baseline', None): _by_hand(
          f, PARAMS, key, n, {k: (lambda z, c=c: f(z) - c)
                              for k, c in tree.items()}),
      ('score_mean_baseline', None): _by_hand(f, PARAMS, key, n,
                                              lambda z: f(z) - mean),
      ('score_delta', None): _by_hand(f, PARAMS, key, n,
                                      lambda z: f(z) - taylor(z), expected),
  }
  for (name, state), want in cases.items():
    options = {'baseline': tree if state is None else state} if (
        registry.lookup(name).state) else {}
    got = registry.get(name, **options)(f, PARAMS, gaussian_builder, key, n)
    for p in PARAMS:
      np.testing.assert_allclose(got[p], want[p], rtol=2e-5, atol=1e-6,
                                 err_msg=f'{name} {p}')


def test_composed_value_is_the_plain_monte_carlo_estimate():
  key, n = jax.random.PRNGKey(1), 6
  plain = core.score_function_surrogate(jnp.cos, PARAMS, gaussian_builder,
                                        key, n)
  for name in ('score_moving_average', 'score_mean_baseline', 'score_delta',
               'score_optimal_baseline'):
    state = {'baseline': {'mu': 1.0, 'sigma': 2.0}} if (
        registry.lookup(name).state) else {}
    value = registry.lookup(name).expectation(
        jnp.cos, PARAMS, gaussian_builder, key, n, **state)
    np.testing.assert_allclose(value, plain, rtol=1e-6, err_msg=name)


def test_a_control_variate_composes_with_other_estimators():
  # On a quadratic f the delta method's h is f itself: composed with any
  # estimator (here pathwise and leave-one-out) the estimate is exact.
  f = lambda x: 3 * x**2 - x
  for base in (core.pathwise_surrogate, core.leave_one_out_surrogate):
    est = core.gradient_from_surrogate(cv.with_control_variate(
        base, cv.delta_method()))
    g = est(f, PARAMS, gaussian_builder, jax.random.PRNGKey(0), 3)
    np.testing.assert_allclose(g['mu'], 6 * 0.3 - 1, rtol=1e-5)
    np.testing.assert_allclose(g['sigma'], 6 * 0.8, rtol=1e-5)


def test_composed_surrogate_inside_an_outer_grad_gives_both_gradients():
  # E_{N(μ,σ²)}[(z - a)²] = (μ - a)² + σ²: d/da = -2(μ - a) (pathwise, the
  # control variate adds none), d/dμ = 2(μ - a).
  mu, a = 0.4, 1.5
  surrogate = registry.lookup('score_moving_average').expectation

  def loss(theta, key):
    f = lambda z: (z - theta['a'])**2
    return surrogate(f, theta['mu'], lambda m: dists.Normal(m, jnp.log(0.5)),
                     key, 4, baseline=1.0)
  theta = {'mu': jnp.asarray(mu), 'a': jnp.asarray(a)}
  keys = jax.random.split(jax.random.PRNGKey(2), 20000)
  g = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(theta, keys)
  sc.assert_mean_close(g['a'], -2 * (mu - a), max_band=0.05)
  sc.assert_mean_close(g['mu'], 2 * (mu - a), max_band=0.1)


def test_delta_method_is_exact_for_a_quadratic_cost():
  # h = f when f is quadratic: zero variance, exact gradient.
  params = {'mu': jnp.asarray(1.3), 'sigma': jnp.asarray(0.4)}
  g = draws(registry.get('score_delta'), lambda x: 3 * x**2 - x, params,
            gaussian_builder, 1, num_draws=100)
  np.testing.assert_allclose(g['mu'], 6 * 1.3 - 1, rtol=1e-5)
  np.testing.assert_allclose(g['sigma'], 6 * 0.4, rtol=1e-5)


@pytest.mark.parametrize('mu', [-2.0, 0.5])
def test_control_variate_variances_match_quadrature(mu):
  # cos(x) under N(μ, 0.8²): measured variances of the delta method and the
  # cost-at-mean baseline equal the quadrature values (SE from the exact
  # 4th moment). (Neither always beats the plain score function: the delta
  # method with coefficient 1 doubles the ∂σ variance here.)
  sigma, n, fam = 0.8, 4, gc.FAMILIES['cos']
  params = {'mu': jnp.asarray(mu), 'sigma': jnp.asarray(sigma)}
  for name in ('score_delta', 'score_mean_baseline'):
    g = draws(registry.get(name), jnp.cos, params, gaussian_builder, n,
              seed=2)
    for p in params:
      one = gc.single_sample_moments(fam, name, p, 1.0, mu, sigma)
      exact = gc.average_moments(one, n)
      sc.assert_variance_close(g[p], exact['variance'], exact['m4'])


def test_moving_average_update():
  b = cv.moving_average_update(jnp.asarray(1.0), jnp.array([3.0, 5.0]), 0.75)
  np.testing.assert_allclose(b, 0.75 * 1.0 + 0.25 * 4.0)
  np.testing.assert_allclose(cv.moving_average(0.75).update(
      jnp.asarray(1.0), jnp.array([3.0, 5.0])), b)
  assert cv.optimal_baseline().update is None
  with pytest.raises(ValueError, match='decay'):
    cv.moving_average_update(0.0, jnp.ones(2), 1.0)


def test_cost_at_mean_refuses_a_categorical():
  with pytest.raises(TypeError, match='Categorical'):
    registry.get('score_mean_baseline')(
        sc.categorical_cost, jnp.asarray(sc.CATEGORICAL_LOGITS),
        dists.Categorical, jax.random.PRNGKey(0), 2)


def test_the_registry_lists_each_composition_by_name():
  for name, e in registry.ESTIMATORS.items():
    if e.control_variate is not None:
      assert name == f'score_{e.control_variate}', name
      assert e.control_variate in registry.CONTROL_VARIATES
  assert {e.control_variate for e in registry.ESTIMATORS.values()} - {
      None} == set(registry.CONTROL_VARIATES)
