"""Tests for vae.mixtures: densities, EM, and E_p[-log q] = H(p) + KL(p ‖ q)."""

import jax
import jax.numpy as jnp
from jax.scipy.stats import multivariate_normal
import numpy as np
import pytest
from scipy import stats

from vae.problems import mixtures

_fit_em = mixtures.fit_em
_log_prob = mixtures.log_prob
_sample = mixtures.sample


@pytest.fixture(autouse=True, scope='module')
def x64():
  with jax.enable_x64(True):
    yield


def _mixture_1d():
  return mixtures.true_mixture(1)


def _mixture_2d():
  return mixtures.true_mixture(2)


def test_log_prob_matches_scipy():
  mix = _mixture_2d()
  x = jax.random.normal(jax.random.PRNGKey(0), (7, 2)) * 2
  expected = np.log(sum(
      w * stats.multivariate_normal(m, c).pdf(x) for w, m, c in zip(
          np.asarray(mix.weights), np.asarray(mix.means),
          np.asarray(mix.covariances))))
  np.testing.assert_allclose(mixtures.log_prob(mix, x), expected, rtol=1e-12)
  resp = jnp.exp(mixtures.log_responsibilities(mix, x))
  np.testing.assert_allclose(jnp.sum(resp, -1), 1.0, rtol=1e-12)


@pytest.mark.parametrize('make', [_mixture_1d, _mixture_2d])
def test_density_integrates_to_one(make):
  mix = make()
  lo = jnp.full(mix.dim, -7.0)
  points, volume = mixtures.grid(lo, -lo, 4000 if mix.dim == 1 else 400)
  mass = jnp.sum(jnp.exp(mixtures.log_prob(mix, points))) * volume
  assert abs(float(mass) - 1.0) < 1e-6


def test_sample_moments():
  mix = _mixture_2d()
  x, comp = _sample(mix, jax.random.PRNGKey(1), 200_000)
  mean, cov = mixtures.mean_and_covariance(mix)
  np.testing.assert_allclose(jnp.mean(x, 0), mean, atol=0.01)
  np.testing.assert_allclose(jnp.cov(x.T), cov, atol=0.02)
  np.testing.assert_allclose(jnp.bincount(comp, length=3) / x.shape[0],
                             mix.weights, atol=0.005)


def test_fit_gaussian_is_the_mle():
  x, _ = mixtures.sample(_mixture_2d(), jax.random.PRNGKey(2), 300)
  fit = mixtures.fit_gaussian(x)
  mean_ll = lambda m, t: jnp.mean(multivariate_normal.logpdf(x, m, t @ t.T))
  g_mean, g_tril = jax.jit(jax.grad(mean_ll, argnums=(0, 1)))(
      fit.means[0], jnp.linalg.cholesky(fit.covariances[0]))
  np.testing.assert_allclose(g_mean, 0.0, atol=1e-10)
  np.testing.assert_allclose(jnp.tril(g_tril), 0.0, atol=1e-10)


def test_em_step_matches_numpy_reference():
  mix = _mixture_2d()
  x, _ = mixtures.sample(mix, jax.random.PRNGKey(3), 100)
  start = mixtures.init_from_data(x, 3, jax.random.PRNGKey(4))
  new, ll = mixtures.em_step(start, x)
  xs = np.asarray(x)
  dens = np.stack([w * stats.multivariate_normal(m, c).pdf(xs) for w, m, c in
                   zip(np.asarray(start.weights), np.asarray(start.means),
                       np.asarray(start.covariances))], -1)
  resp = dens / dens.sum(-1, keepdims=True)
  nk = resp.sum(0)
  means = resp.T @ xs / nk[:, None]
  covs = np.stack([(resp[:, k, None] * (xs - means[k])).T @ (xs - means[k]) /
                   nk[k] for k in range(3)])
  np.testing.assert_allclose(ll, np.mean(np.log(dens.sum(-1))), rtol=1e-12)
  np.testing.assert_allclose(new.weights, nk / 100, rtol=1e-10)
  np.testing.assert_allclose(new.means, means, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(new.covariances, covs, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_em_log_likelihood_is_monotone_and_beats_a_gaussian(seed):
  true = _mixture_2d()
  x, _ = _sample(true, jax.random.PRNGKey(10 + seed), 400)
  fitted, history = _fit_em(x, 3, jax.random.PRNGKey(seed), 60)
  assert np.min(np.diff(np.asarray(history))) > -1e-12
  assert history[-1] > history[0] + 0.1
  np.testing.assert_allclose(history[-1], jnp.mean(_log_prob(fitted, x)),
                             rtol=1e-12)
  gaussian_ll = jnp.mean(_log_prob(mixtures.fit_gaussian(x), x))
  assert history[-1] > gaussian_ll + 0.5


def test_em_recovers_the_true_mixture():
  true = _mixture_2d()
  x, _ = _sample(true, jax.random.PRNGKey(5), 400)
  fitted, _ = _fit_em(x, 3, jax.random.PRNGKey(6), 60)
  order = np.argsort(np.asarray(fitted.means[:, 0]))
  np.testing.assert_allclose(fitted.means[order], true.means, atol=0.15)
  np.testing.assert_allclose(fitted.weights[order], true.weights, atol=0.05)


def test_gaussian_cross_entropy_matches_monte_carlo():
  mix = _mixture_2d()
  m, c = mixtures.mean_and_covariance(mix)
  mu, cov = jnp.array([0.5, -0.2]), jnp.array([[2.0, 0.4], [0.4, 1.0]])
  x, _ = _sample(mix, jax.random.PRNGKey(7), 400_000)
  mc = -jnp.mean(multivariate_normal.logpdf(x, mu, cov))
  assert abs(float(mixtures.gaussian_cross_entropy(mu, cov, m, c) - mc)) < 0.01


@pytest.fixture(scope='module')
def kl_setup(x64):
  del x64
  mix = _mixture_2d()
  points, volume = mixtures.grid(jnp.array([-6.0, -6.0]),
                                 jnp.array([6.0, 5.0]), 300)
  return mix, points, volume, jax.jit(mixtures.log_prob)(mix, points)


def test_cross_entropy_minus_kl_is_the_entropy_for_every_model(kl_setup):
  """E_p[-log q] (closed form) - KL(p‖q) (quadrature) = H(p), for all q."""
  mix, points, volume, log_p = kl_setup
  m, c = mixtures.mean_and_covariance(mix)
  entropy = mixtures.kl_decomposition_quadrature(log_p, log_p, volume)
  assert abs(float(entropy['kl'])) < 1e-12
  values = []
  for mu, cov in [(m, c), (m + 0.4, 1.3 * c), (m - 1.0, jnp.eye(2)),
                  (jnp.zeros(2), jnp.array([[3.0, -0.5], [-0.5, 0.7]]))]:
    gauss = mixtures.from_moments(jnp.ones(1), mu[None], cov[None])
    quad = mixtures.kl_decomposition_quadrature(
        log_p, _log_prob(gauss, points), volume)
    cross_entropy = mixtures.gaussian_cross_entropy(mu, cov, m, c)
    assert quad['kl'] > 0.1
    np.testing.assert_allclose(cross_entropy, quad['cross_entropy'],
                               atol=1e-6)
    values.append(float(cross_entropy - quad['kl']))
  np.testing.assert_allclose(values, float(entropy['entropy']), atol=1e-6)


def test_min_kl_gaussian_is_moment_matching(kl_setup):
  """∇ KL(p ‖ N(μ, LLᵀ)) = 0 at the moments of p; larger KL nearby."""
  mix, points, volume, log_p = kl_setup
  m, c = mixtures.mean_and_covariance(mix)

  @jax.jit
  def kl(mu, tril):
    log_q = multivariate_normal.logpdf(points, mu, tril @ tril.T)
    return mixtures.kl_decomposition_quadrature(log_p, log_q, volume)['kl']

  tril = jnp.linalg.cholesky(c)
  g_mu, g_tril = jax.jit(jax.grad(kl, argnums=(0, 1)))(m, tril)
  np.testing.assert_allclose(g_mu, 0.0, atol=1e-6)
  np.testing.assert_allclose(jnp.tril(g_tril), 0.0, atol=1e-6)
  best = kl(m, tril)
  for delta in (jnp.array([0.1, 0.0]), jnp.array([0.0, -0.1])):
    assert kl(m + delta, tril) > best + 1e-3
  assert kl(m, 1.1 * tril) > best + 1e-3


def test_mc_decomposition_estimates_the_quadrature_one(kl_setup):
  """Monte Carlo entropy and KL vs quadrature, within 4 standard errors."""
  mix, points, volume, log_p = kl_setup
  gauss = mixtures.from_moments(jnp.ones(1), jnp.array([[0.5, -0.2]]),
                                jnp.array([[[2.0, 0.4], [0.4, 1.0]]]))
  quad = mixtures.kl_decomposition_quadrature(
      log_p, _log_prob(gauss, points), volume)
  x, _ = _sample(mix, jax.random.PRNGKey(8), 50_000)
  log_p_x, log_q_x = _log_prob(mix, x), _log_prob(gauss, x)
  mc = mixtures.kl_decomposition_mc(log_p_x, log_q_x)
  assert abs(float(mc['kl'] - quad['kl'])) < 4 * float(mc['kl_stderr'])
  assert float(quad['kl']) > 10 * float(mc['kl_stderr'])
  stderr = jnp.std(log_p_x) / jnp.sqrt(x.shape[0])
  assert abs(float(mc['entropy'] - quad['entropy'])) < 4 * float(stderr)


def test_compare_checks_monte_carlo_against_quadrature():
  """z of `compare` is small for an exact density, large for a wrong one."""
  true = mixtures.true_mixture(1)
  points, volume = mixtures.quadrature_grid(true, 2000)
  x, _ = _sample(true, jax.random.PRNGKey(9), 20_000)
  log_p = (_log_prob(true, x), _log_prob(true, points))
  gauss = mixtures.fit_gaussian(x)
  log_q = (log_p[0], _log_prob(gauss, x), _log_prob(gauss, points))
  right = mixtures.compare(log_p, log_q, volume)
  assert abs(right['z']) < 4 and right['kl_quadrature'] > 0.2
  assert abs(right['model_mass_on_grid'] - 1.0) < 1e-3
  # Off by 0.05 nats at the held-out points only: caught.
  wrong = mixtures.compare(log_p, (log_q[0], log_q[1] + 0.05, log_q[2]),
                           volume)
  assert abs(wrong['z']) > 10


def test_fit_models_and_num_params():
  true = mixtures.true_mixture(2)
  x, _ = _sample(true, jax.random.PRNGKey(10), 400)
  models, histories = mixtures.fit_models(true, x, (3,), 60,
                                          jax.random.PRNGKey(11))
  assert list(models) == ['true p_data', 'gaussian (min KL, population)',
                          'gaussian MLE', 'mixture EM K=3']
  assert [mixtures.num_params(m) for m in models.values()] == [17, 5, 5, 17]
  assert list(histories) == [3] and histories[3].shape == (61,)
  # The population Gaussian has the moments of p_data.
  np.testing.assert_allclose(
      models['gaussian (min KL, population)'].covariances[0],
      mixtures.mean_and_covariance(true)[1], rtol=1e-12)
