"""Tests for vae.control_variates: unbiased, and they reduce variance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import stat_checks
from tests.test_estimators import draws, exact, gaussian_builder
from vae.estimators import control_variates
from vae.estimators import core
from vae.problems import gaussian_costs


@pytest.mark.parametrize('cost_name', ['x^2', 'exp', 'cos'])
@pytest.mark.parametrize('fn', [control_variates.delta_method,
                                control_variates.cost_at_mean])
def test_unbiased(cost_name, fn):
  mu, sigma = 0.6, 0.8
  cost = gaussian_costs.COSTS[cost_name]
  params = {'mu': jnp.asarray(mu), 'sigma': jnp.asarray(sigma)}
  g = draws(fn, cost.fn, params, gaussian_builder, 2)
  want = exact(cost, mu, sigma)
  for p in params:
    stat_checks.assert_mean_close(g[p], want[p])


def test_delta_method_is_exact_for_a_quadratic_cost():
  # h = f when f is quadratic: zero variance, exact gradient.
  params = {'mu': jnp.asarray(1.3), 'sigma': jnp.asarray(0.4)}
  g = draws(control_variates.delta_method, lambda x: 3 * x**2 - x, params,
            gaussian_builder, 1, num_draws=100)
  np.testing.assert_allclose(g['mu'], 6 * 1.3 - 1, rtol=1e-5)
  np.testing.assert_allclose(g['sigma'], 6 * 0.4, rtol=1e-5)


@pytest.mark.parametrize('mu', [-2.0, 0.5, 3.0])
def test_control_variates_reduce_score_function_variance_for_x_squared(mu):
  sigma = 1.0
  cost = gaussian_costs.COSTS['x^2']
  params = {'mu': jnp.asarray(mu), 'sigma': jnp.asarray(sigma)}
  plain = draws(core.score_function, cost.fn, params, gaussian_builder, 4)
  for fn in (control_variates.cost_at_mean, core.leave_one_out,
             control_variates.delta_method):
    g = draws(fn, cost.fn, params, gaussian_builder, 4)
    for p in params:
      assert np.var(g[p]) < np.var(plain[p]), (fn, p)


def test_moving_average_update():
  b = control_variates.moving_average_update(jnp.asarray(1.0),
                                             jnp.array([3.0, 5.0]), 0.75)
  np.testing.assert_allclose(b, 0.75 * 1.0 + 0.25 * 4.0)
  with pytest.raises(ValueError, match='decay'):
    control_variates.moving_average_update(0.0, jnp.ones(2), 1.0)
