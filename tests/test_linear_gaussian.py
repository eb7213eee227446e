"""Tests for vae.linear_gaussian against scipy and brute-force Gaussian algebra."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vae import distributions as dists
from vae.problems import linear_gaussian as lg


@pytest.fixture(autouse=True)
def x64():
  with jax.enable_x64(True):
    yield


def model_and_data(seed=0, n=3):
  model = lg.random_model(jax.random.PRNGKey(seed), data_dim=6, latent_dim=2,
                          noise_scale=0.6)
  x, _ = lg.sample_data(model, jax.random.PRNGKey(seed + 1), n)
  return model, x


def test_log_marginal_matches_scipy():
  model, x = model_and_data()
  cov = np.asarray(model.weight @ model.weight.T) + 0.36 * np.eye(6)
  want = stats.multivariate_normal(np.asarray(model.bias), cov).logpdf(np.asarray(x))
  got = jax.vmap(lambda xi: lg.log_marginal(model, xi))(x)
  np.testing.assert_allclose(got, want, rtol=1e-10)


def test_posterior_matches_joint_gaussian_conditioning():
  model, x = model_and_data()
  w, b = np.asarray(model.weight), np.asarray(model.bias)
  c = w @ w.T + 0.36 * np.eye(6)
  for xi in np.asarray(x):
    # Joint of (z, x): Cov(z, x) = Wᵀ; p(z|x) = N(Wᵀ C⁻¹ (x - b), I - Wᵀ C⁻¹ W).
    mean_want = w.T @ np.linalg.solve(c, xi - b)
    cov_want = np.eye(2) - w.T @ np.linalg.solve(c, w)
    mean, cov = lg.posterior(model, jnp.asarray(xi))
    np.testing.assert_allclose(mean, mean_want, rtol=1e-9)
    np.testing.assert_allclose(cov, cov_want, rtol=1e-9, atol=1e-12)


def test_log_px_minus_elbo_is_kl_to_posterior():
  model, x = model_and_data(n=5)
  keys = jax.random.split(jax.random.PRNGKey(7), 5)
  for xi, key in zip(x, keys):
    q = dists.Normal(jax.random.normal(key, (2,)), 0.3 * jax.random.normal(key, (2,)))
    gap = lg.log_marginal(model, xi) - lg.elbo(model, xi, q)
    np.testing.assert_allclose(gap, lg.kl_to_posterior(model, xi, q), rtol=1e-9,
                               atol=1e-9)
    assert gap > 0


def test_fit_ppca_is_the_maximum_likelihood_solution():
  true = lg.random_model(jax.random.PRNGKey(0), 5, 2, noise_scale=0.4)
  x, _ = lg.sample_data(true, jax.random.PRNGKey(1), 2000)
  fit = lg.fit_ppca(x, 2)
  mean_ll = lambda m: jnp.mean(jax.vmap(lambda xi: lg.log_marginal(m, xi))(x))
  best = mean_ll(fit)
  # Any perturbation of the MLE lowers the likelihood.
  for i, eps in enumerate([1e-2, -1e-2]):
    key = jax.random.PRNGKey(10 + i)
    perturbed = lg.LinearGaussianModel(
        fit.weight + eps * jax.random.normal(key, fit.weight.shape),
        fit.bias + eps, fit.log_noise_scale + eps)
    assert mean_ll(perturbed) < best
  # Stationary point: the gradient of the log-likelihood vanishes.
  grads = jax.grad(mean_ll)(fit)
  for g in jax.tree_util.tree_leaves(grads):
    np.testing.assert_allclose(g, 0.0, atol=1e-8)
  with pytest.raises(ValueError, match='latent_dim'):
    lg.fit_ppca(x, 5)
