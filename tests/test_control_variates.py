"""vae.estimators.control_variates: variances against quadrature, exactness.

(Unbiasedness of every control variate: tests/test_registry.py.)
"""

import jax.numpy as jnp
import numpy as np
import pytest

from tests import stat_checks as sc
from tests.test_estimators import draws, gaussian_builder
from vae.estimators import control_variates
from vae.estimators import core
from vae.problems import gaussian_costs as gc


def test_delta_method_is_exact_for_a_quadratic_cost():
  # h = f when f is quadratic: zero variance, exact gradient.
  params = {'mu': jnp.asarray(1.3), 'sigma': jnp.asarray(0.4)}
  g = draws(control_variates.delta_method, lambda x: 3 * x**2 - x, params,
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
  for fn, name in ((control_variates.delta_method, 'score_delta'),
                   (control_variates.cost_at_mean, 'score_mean_baseline')):
    g = draws(fn, jnp.cos, params, gaussian_builder, n, seed=2)
    for p in params:
      one = gc.single_sample_moments(fam, name, p, 1.0, mu, sigma)
      exact = gc.average_moments(one, n)
      sc.assert_variance_close(g[p], exact['variance'], exact['m4'])


def test_moving_average_update():
  b = control_variates.moving_average_update(jnp.asarray(1.0),
                                             jnp.array([3.0, 5.0]), 0.75)
  np.testing.assert_allclose(b, 0.75 * 1.0 + 0.25 * 4.0)
  with pytest.raises(ValueError, match='decay'):
    control_variates.moving_average_update(0.0, jnp.ones(2), 1.0)


def test_cost_at_mean_refuses_a_categorical():
  with pytest.raises(TypeError, match='Categorical'):
    control_variates.cost_at_mean(sc.categorical_cost,
                                  jnp.asarray(sc.CATEGORICAL_LOGITS),
                                  core.dists.Categorical,
                                  core.jax.random.PRNGKey(0), 2)
