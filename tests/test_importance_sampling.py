"""Tests for vae.problems.importance_sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special
from scipy import stats

from vae import distributions as dists
from vae.problems import importance_sampling as isl
from vae.problems import linear_gaussian as lg


@pytest.fixture(autouse=True, scope='module')
def x64():
  with jax.enable_x64(True):
    yield


_log_weights = jax.jit(isl.log_weights, static_argnums=(0, 3))
_mvn = dists.MultivariateNormal.from_covariance


def _diagonal(mean, scale):
  """N(mean, diag(scale²))."""
  return dists.MultivariateNormal(mean, jnp.diag(scale))


@pytest.fixture(scope='module')
def problem(x64):
  del x64
  model = lg.random_model(jax.random.PRNGKey(0), 6, 2)
  x = lg.sample_data(model, jax.random.PRNGKey(1), 1)[0][0]
  prior = dists.standard_normal((2,), jnp.float64)
  log_joint = lambda z: lg.log_likelihood(model, x, z) + jnp.sum(
      prior.log_prob(z))
  return model, x, lg.posterior(model, x), log_joint


def test_log_weights_are_log_joint_minus_log_q():
  """log w = log p(x, z) - log N(z; μ, Σ), z ~ N(μ, Σ) (moments, scipy)."""
  cov = jnp.array([[2.0, 0.6], [0.6, 0.5]])
  q = _mvn(jnp.array([1.0, -1.0]), cov)
  log_w = _log_weights(lambda z: 0.0 * z[0], q, jax.random.PRNGKey(2),
                       100_000)
  z = jax.random.multivariate_normal(jax.random.PRNGKey(2), q.loc, cov,
                                     (100_000,), jnp.float64)
  np.testing.assert_allclose(-log_w[:5], stats.multivariate_normal(
      [1.0, -1.0], np.asarray(cov)).logpdf(np.asarray(z[:5])), rtol=1e-12)
  # E_q[-log q] is the entropy ½ log det(2πeΣ), within 5 standard errors.
  entropy = 0.5 * np.log(np.linalg.det(2 * np.pi * np.e * np.asarray(cov)))
  assert abs(float(jnp.mean(log_w)) - entropy) < 5 * float(
      jnp.std(log_w)) / np.sqrt(100_000)


def test_running_log_mean_exp():
  log_w = np.random.default_rng(3).normal(size=(3, 50)) * 30
  out = jax.jit(isl.running_log_mean_exp)(log_w)
  direct = np.stack([special.logsumexp(log_w[:, :k], -1) - np.log(k)
                     for k in range(1, 51)], -1)
  np.testing.assert_allclose(out, direct, rtol=1e-12)


def test_posterior_proposal_is_exact(problem):
  model, x, posterior, log_joint = problem
  log_w = _log_weights(log_joint, posterior, jax.random.PRNGKey(4), 100)
  np.testing.assert_allclose(log_w, lg.log_marginal(model, x), rtol=1e-12)
  assert abs(float(isl.log_chi2_plus_one(posterior, posterior))) < 1e-10
  bias, std = isl.predicted_bias_and_std(-1e-15, 4)  # Rounds below 0.
  assert bias == 0.0 and std == 0.0


@pytest.mark.parametrize('which', ['prior', 'wide'])
def test_chi2_matches_monte_carlo(which, problem):
  model, x, posterior, log_joint = problem
  if which == 'prior':
    q = _mvn(jnp.zeros(2), jnp.eye(2))
  else:
    q = _diagonal(posterior.loc + 0.1, 1.7 * jnp.sqrt(posterior.variance()))
  log_w = _log_weights(log_joint, q, jax.random.PRNGKey(5), 1_000_000)
  rel = log_w - lg.log_marginal(model, x)
  mc = jax.nn.logsumexp(2 * rel) - jnp.log(rel.shape[0])
  closed = isl.log_chi2_plus_one(posterior, q)
  assert closed > 0.1
  assert abs(float(mc - closed)) < 0.05 * float(closed) + 0.01
  # E_q[w]/p(x) = 1 (unbiasedness of p̂).
  assert abs(float(jnp.mean(jnp.exp(rel))) - 1.0) < 0.02


def test_chi2_is_infinite_for_too_light_tails():
  p = _mvn(jnp.zeros(1), jnp.eye(1))
  narrow = _diagonal(jnp.zeros(1), jnp.array([0.6]))
  fine = _diagonal(jnp.zeros(1), jnp.array([0.8]))
  assert np.isinf(isl.log_chi2_plus_one(p, narrow))  # needs σ_q² > σ_p²/2.
  # 1-D closed form for p = N(0, 1), q = N(0, s²): ∫p²/q = s²/√(2s² - 1).
  s = 0.8
  np.testing.assert_allclose(isl.log_chi2_plus_one(p, fine),
                             np.log(s**2 / np.sqrt(2 * s**2 - 1)), rtol=1e-12)


def test_delta_method_predicts_the_error_for_large_k(problem):
  model, x, posterior, log_joint = problem
  q = _diagonal(posterior.loc, 1.5 * jnp.sqrt(posterior.variance()))
  k = 256
  keys = jax.random.split(jax.random.PRNGKey(6), 2000)
  est = jax.jit(jax.vmap(lambda key: jax.nn.logsumexp(isl.log_weights(
      log_joint, q, key, k)) - jnp.log(k)))(keys)
  summary = isl.error_summary(est, lg.log_marginal(model, x))
  log_rho1 = isl.log_chi2_plus_one(posterior, q)
  bias, std = isl.predicted_bias_and_std(log_rho1, k)
  np.testing.assert_allclose(summary['std'], std, rtol=0.1)
  assert summary['bias'] < 0  # Jensen: log p̂ is biased low.
  np.testing.assert_allclose(summary['bias'], bias, rtol=0.5)
  # samples_needed solves predicted RMSE = tolerance.
  k_needed = isl.samples_needed(log_rho1, 0.05)
  b, s = isl.predicted_bias_and_std(log_rho1, k_needed)
  np.testing.assert_allclose(jnp.sqrt(b**2 + s**2), 0.05, rtol=1e-10)
