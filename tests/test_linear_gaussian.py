"""Tests for vae.problems.linear_gaussian against scipy and Gaussian algebra."""

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
  want = stats.multivariate_normal(np.asarray(model.bias), cov).logpdf(
      np.asarray(x))
  np.testing.assert_allclose(jax.jit(lg.log_marginal)(model, x), want,
                             rtol=1e-10)


def test_posterior_matches_joint_gaussian_conditioning():
  model, x = model_and_data()
  w, b = np.asarray(model.weight), np.asarray(model.bias)
  c = w @ w.T + 0.36 * np.eye(6)
  posterior = jax.jit(lg.posterior)
  for xi in np.asarray(x):
    # Joint of (z, x): Cov(z, x) = Wᵀ; p(z|x) = N(Wᵀ C⁻¹ (x - b), I - Wᵀ C⁻¹ W).
    post = posterior(model, jnp.asarray(xi))
    mean, cov = post.loc, post.covariance()
    np.testing.assert_allclose(mean, w.T @ np.linalg.solve(c, xi - b),
                               rtol=1e-9)
    np.testing.assert_allclose(cov, np.eye(2) - w.T @ np.linalg.solve(c, w),
                               rtol=1e-9, atol=1e-12)


def test_log_px_minus_elbo_is_kl_to_posterior_by_monte_carlo():
  """log p(x) - ELBO(q) = KL(q ‖ p(z|x)) = E_q[log q - log p(z|x)] (scipy)."""
  model, x = model_and_data(n=1)
  loc, scale = np.array([0.3, -0.8]), np.exp([-0.5, 0.2])

  @jax.jit
  def terms(model, x):
    q = dists.Normal(jnp.asarray(loc), jnp.log(scale))
    post = lg.posterior(model, x)
    return (lg.log_marginal(model, x) - lg.elbo(model, x, q),
            lg.kl_to_posterior(model, x, q), post.loc, post.covariance())

  gap, kl, mean, cov = terms(model, x[0])
  z = loc + scale * np.random.default_rng(7).normal(size=(200_000, 2))
  log_ratio = (np.sum(stats.norm(loc, scale).logpdf(z), -1) -
               stats.multivariate_normal(mean, cov).logpdf(z))
  se = log_ratio.std() / np.sqrt(len(z))
  assert abs(log_ratio.mean() - float(gap)) < 5 * se
  np.testing.assert_allclose(kl, gap, rtol=1e-9)


def test_fit_ppca_is_the_maximum_likelihood_solution():
  true = lg.random_model(jax.random.PRNGKey(0), 5, 2, noise_scale=0.4)
  x, _ = lg.sample_data(true, jax.random.PRNGKey(1), 500)
  fit = lg.fit_ppca(x, 2)
  mean_ll = jax.jit(lambda m: jnp.mean(lg.log_marginal(m, x)))
  best = mean_ll(fit)
  # Any perturbation of the MLE lowers the likelihood.
  for i, eps in enumerate([1e-2, -1e-2]):
    key = jax.random.PRNGKey(10 + i)
    perturbed = lg.LinearGaussianModel(
        fit.weight + eps * jax.random.normal(key, fit.weight.shape),
        fit.bias + eps, fit.log_noise_scale + eps)
    assert mean_ll(perturbed) < best
  # Stationary point: the gradient of the log-likelihood vanishes.
  for g in jax.tree_util.tree_leaves(jax.jit(jax.grad(mean_ll))(fit)):
    np.testing.assert_allclose(g, 0.0, atol=1e-8)
  with pytest.raises(ValueError, match='latent_dim'):
    lg.fit_ppca(x, 5)


def test_draw_problem_data_have_the_model_moments():
  model, (x,), ortho, (xo,) = lg.draw_problem(jax.random.PRNGKey(2), 4, 2,
                                              0.5, (20_000,), (20_000,))
  w = np.asarray(ortho.weight)
  np.testing.assert_allclose(w.T @ w, np.diag([1.0, 4.0]), atol=1e-12)
  for m, data in ((model, x), (ortho, xo)):
    np.testing.assert_allclose(np.cov(np.asarray(data).T),
                               lg.marginal_covariance(m), atol=0.15)
    np.testing.assert_allclose(np.mean(data, 0), m.bias, atol=0.06)
