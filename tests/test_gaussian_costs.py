"""The closed forms in vae.gaussian_costs against independent computations."""

import math

import numpy as np
import pytest

from vae.problems import gaussian_costs as gc


def _mc_free_expectation(cost, mu, sigma):
  """E[f] by Gauss-Hermite quadrature with 120 nodes (independent method)."""
  nodes, weights = np.polynomial.hermite_e.hermegauss(120)
  return np.sum(weights * cost.np_fn(mu + sigma * nodes)) / math.sqrt(2 * math.pi)


@pytest.mark.parametrize('name', ['x^2', 'exp', 'cos'])
def test_closed_forms_match_quadrature_and_finite_differences(name):
  cost = gc.COSTS[name]
  mu, sigma, h = 0.7, 1.1, 1e-5
  e = lambda m, s: _mc_free_expectation(cost, m, s)
  assert abs(cost.expectation(mu, sigma) - e(mu, sigma)) < 1e-10
  fd_mu = (e(mu + h, sigma) - e(mu - h, sigma)) / (2 * h)
  fd_sigma = (e(mu, sigma + h) - e(mu, sigma - h)) / (2 * h)
  assert abs(gc.exact_gradient(cost, 'mu', mu, sigma) - fd_mu) < 1e-6
  assert abs(gc.exact_gradient(cost, 'sigma', mu, sigma) - fd_sigma) < 1e-6


def test_quadrature_gradient_for_sigmoid_matches_finite_differences():
  cost = gc.COSTS['sigmoid']
  mu, sigma, h = -0.4, 2.0, 1e-5
  e = lambda m, s: _mc_free_expectation(cost, m, s)
  assert abs(gc.exact_gradient(cost, 'mu', mu, sigma) -
             (e(mu + h, sigma) - e(mu - h, sigma)) / (2 * h)) < 1e-6
  assert abs(gc.exact_gradient(cost, 'sigma', mu, sigma) -
             (e(mu, sigma + h) - e(mu, sigma - h)) / (2 * h)) < 1e-6


@pytest.mark.parametrize('mu', [-2.0, 0.0, 1.5])
def test_x_squared_variances_match_hand_derivations(mu):
  sigma = 0.9
  cost = gc.COSTS['x^2']
  want = {
      ('pathwise', 'mu'): 4 * sigma**2,
      ('pathwise', 'sigma'): 4 * mu**2 + 8 * sigma**2,
      ('score', 'mu'): mu**4 / sigma**2 + 14 * mu**2 + 15 * sigma**2,
      ('score', 'sigma'): 2 * mu**4 / sigma**2 + 60 * mu**2 + 74 * sigma**2,
      # Delta method is exact for a quadratic: zero variance.
      ('score_delta', 'mu'): 0.0,
      ('score_delta', 'sigma'): 0.0,
  }
  for (est, param), var in want.items():
    mean, got = gc.single_sample_moments(cost, est, param, mu, sigma)
    assert abs(got - var) < 1e-6 * (1 + var), (est, param, got, var)
    assert abs(mean - gc.exact_gradient(cost, param, mu, sigma)) < 1e-8


def test_unknown_estimator_has_no_closed_form():
  assert gc.single_sample_moments(gc.COSTS['cos'], 'score_rloo', 'mu', 0.0,
                                  1.0) is None
