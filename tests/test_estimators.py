"""Unbiasedness and closed-form variances of the estimators in vae.estimators."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import stat_checks
from vae import distributions as dists
from vae.estimators import core
from vae.problems import gaussian_costs

NUM_DRAWS = 20000
MU, SIGMA = 0.6, 0.8


def gaussian_builder(p):
  return dists.Normal.from_scale(p['mu'], p['sigma'])


def draws(estimator, function, params, builder, num_samples, seed=0,
          num_draws=NUM_DRAWS):
  keys = jax.random.split(jax.random.PRNGKey(seed), num_draws)
  run = jax.jit(jax.vmap(
      lambda k: estimator(function, params, builder, k, num_samples)))
  return jax.tree_util.tree_map(np.asarray, run(keys))


def exact(cost, mu, sigma):
  return {'mu': cost.grad_mu(mu, sigma), 'sigma': cost.grad_sigma(mu, sigma)}


ESTIMATORS = {
    'pathwise': core.pathwise,
    'score': core.score_function,
    'score_rloo': core.leave_one_out,
    'measure_valued': core.measure_valued,
}


@pytest.mark.parametrize('cost_name', ['x^2', 'exp', 'cos'])
@pytest.mark.parametrize('name', list(ESTIMATORS))
def test_unbiased_for_gaussian_costs(cost_name, name):
  cost = gaussian_costs.COSTS[cost_name]
  params = {'mu': jnp.asarray(MU), 'sigma': jnp.asarray(SIGMA)}
  g = draws(ESTIMATORS[name], cost.fn, params, gaussian_builder, 2)
  want = exact(cost, MU, SIGMA)
  for p in ('mu', 'sigma'):
    stat_checks.assert_mean_close(g[p], want[p])


@pytest.mark.parametrize('mu', [-1.5, 0.0, 2.0])
def test_x_squared_variances_match_closed_forms(mu):
  sigma, n = 0.7, 3
  cost = gaussian_costs.COSTS['x^2']
  params = {'mu': jnp.asarray(mu), 'sigma': jnp.asarray(sigma)}
  # One-sample variances for f(x) = x², x = μ + σε, derived by hand:
  #   pathwise ∂μ: 2x           -> 4σ²
  #   pathwise ∂σ: 2xε          -> 4μ² + 8σ²
  #   score ∂μ:    x² ε/σ       -> μ⁴/σ² + 14μ² + 15σ²
  #   score ∂σ:    x²(ε²-1)/σ   -> 2μ⁴/σ² + 60μ² + 74σ²
  closed = {
      'pathwise': {'mu': 4 * sigma**2, 'sigma': 4 * mu**2 + 8 * sigma**2},
      'score': {'mu': mu**4 / sigma**2 + 14 * mu**2 + 15 * sigma**2,
                'sigma': 2 * mu**4 / sigma**2 + 60 * mu**2 + 74 * sigma**2},
  }
  for name, fn in [('pathwise', core.pathwise),
                   ('score', core.score_function)]:
    g = draws(fn, cost.fn, params, gaussian_builder, n, seed=1)
    for p in ('mu', 'sigma'):
      stat_checks.assert_variance_close(g[p], closed[name][p] / n)
    # Pathwise beats plain score function for x² at every μ.
  for p in ('mu', 'sigma'):
    assert closed['pathwise'][p] < closed['score'][p]


def test_measure_valued_multivariate_and_chain_rule_to_log_scale():
  # f(z) = Σ z_i² + z_0 z_1: ∂μ0 = 2μ0 + μ1, ∂μ1 = 2μ1 + μ0, ∂μ2 = 2μ2,
  # ∂σ_i = 2σ_i, and ∂/∂log σ_i = 2σ_i².
  f = lambda z: jnp.sum(z**2) + z[0] * z[1]
  mu = jnp.array([0.5, -1.0, 0.2])
  log_sigma = jnp.log(jnp.array([0.3, 1.2, 0.8]))
  sigma = jnp.exp(log_sigma)
  builder = lambda p: dists.Normal(p['loc'], p['log_scale'])
  params = {'loc': mu, 'log_scale': log_sigma}
  want = {'loc': 2 * mu + jnp.array([mu[1], mu[0], 0.0]),
          'log_scale': 2 * sigma**2}
  for fn in (core.measure_valued, core.pathwise,
             core.score_function):
    g = draws(fn, f, params, builder, 4, num_draws=10000)
    for p in params:
      stat_checks.assert_mean_close(g[p], want[p])


def test_surrogate_inside_an_outer_grad_gives_both_gradients():
  # E_{N(μ,σ²)}[(z - a)²] = (μ - a)² + σ²: d/da = -2(μ - a), d/dμ = 2(μ - a).
  mu, a = 0.4, 1.5
  def loss(theta, key):
    f = lambda z: (z - theta['a'])**2
    return core.score_function_surrogate(
        f, theta['mu'], lambda m: dists.Normal(m, jnp.log(0.5)), key, 4)
  theta = {'mu': jnp.asarray(mu), 'a': jnp.asarray(a)}
  keys = jax.random.split(jax.random.PRNGKey(2), NUM_DRAWS)
  g = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(theta, keys)
  stat_checks.assert_mean_close(g['a'], -2 * (mu - a))
  stat_checks.assert_mean_close(g['mu'], 2 * (mu - a))


def test_surrogate_value_is_the_monte_carlo_estimate():
  params = {'mu': jnp.asarray(MU), 'sigma': jnp.asarray(SIGMA)}
  key = jax.random.PRNGKey(0)
  vals = [s(jnp.cos, params, gaussian_builder, key, 1000) for s in (
      core.pathwise_surrogate, core.score_function_surrogate,
      core.leave_one_out_surrogate)]
  z = gaussian_builder(params).sample(key, (1000,))
  np.testing.assert_allclose(vals, [jnp.mean(jnp.cos(z))] * 3, rtol=1e-5)


def test_bad_arguments_raise_clear_errors():
  params = {'mu': jnp.asarray(0.0), 'sigma': jnp.asarray(1.0)}
  key = jax.random.PRNGKey(0)
  for fn in ESTIMATORS.values():
    with pytest.raises(ValueError, match='num_samples must be >= [12]'):
      fn(jnp.cos, params, gaussian_builder, key, 0)
  with pytest.raises(ValueError, match='num_samples must be >= 2'):
    core.leave_one_out(jnp.cos, params, gaussian_builder, key, 1)
  with pytest.raises(ValueError, match='scalar per sample'):
    core.score_function(lambda z: jnp.stack([z, z]), params,
                              gaussian_builder, key, 2)
  with pytest.raises(ValueError, match='scale'):
    core.pathwise(jnp.cos, {'mu': 0.0, 'sigma': -1.0}, gaussian_builder,
                        key, 2)
  with pytest.raises(TypeError, match='Normal'):
    core.measure_valued(jnp.sum, jnp.zeros(2), dists.Bernoulli, key, 2)
