"""vae.distributions against scipy and change-of-variables identities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from tests import stat_checks
from vae import distributions as dists


@pytest.fixture(autouse=True)
def x64():
  with jax.enable_x64(True):
    yield


def test_normal_log_prob_and_entropy_match_scipy():
  loc = np.array([0.3, -1.2, 4.0])
  scale = np.array([0.5, 2.0, 1e-3])
  x = np.array([0.1, 3.0, 4.0005])
  d = dists.Normal.from_scale(loc, scale)
  np.testing.assert_allclose(d.log_prob(x), stats.norm.logpdf(x, loc, scale),
                             rtol=1e-12)
  np.testing.assert_allclose(d.entropy(), stats.norm.entropy(loc, scale),
                             rtol=1e-12)


def test_normal_samples_have_the_right_moments_and_are_reparameterized():
  d = dists.Normal.from_scale(jnp.array([1.0, -2.0]), jnp.array([0.5, 3.0]))
  z = d.sample(jax.random.PRNGKey(0), (20000,))
  stat_checks.assert_mean_close(z, d.loc)
  stat_checks.assert_variance_close(z, d.variance())
  # d/dμ E[z] = 1 and d/dσ E[z²] = 2σ, through the samples.
  def second_moment(scale):
    return jnp.mean(dists.Normal.from_scale(0.0, scale).sample(
        jax.random.PRNGKey(1), (20000,))**2)
  grad = jax.grad(second_moment)(2.0)
  assert abs(grad - 4.0) < 0.15


def test_normal_rejects_bad_parameters():
  with pytest.raises(ValueError, match='scale'):
    dists.Normal.from_scale(0.0, -1.0)
  with pytest.raises(ValueError, match='scale'):
    dists.Normal.from_scale(0.0, 0.0)
  with pytest.raises(ValueError, match='do not broadcast'):
    dists.Normal(jnp.zeros(3), jnp.zeros(2))
  with pytest.raises(ValueError, match='finite'):
    dists.Normal(jnp.array([jnp.nan]), jnp.zeros(1))
  with pytest.raises(ValueError, match='sample_shape'):
    dists.Normal(0.0, 0.0).sample(jax.random.PRNGKey(0), (0,))


def test_normal_is_a_pytree_under_jit_and_vmap():
  d = dists.Normal(jnp.zeros((4, 3)), jnp.zeros((4, 3)))
  ent = jax.jit(jax.vmap(lambda q: q.entropy()))(d)
  assert ent.shape == (4, 3)
  z = jax.jit(lambda q, k: q.sample(k, (5,)))(d, jax.random.PRNGKey(0))
  assert z.shape == (5, 4, 3)


def test_bernoulli_matches_scipy_and_is_stable_at_extreme_logits():
  logits = np.array([-3.0, 0.0, 2.5])
  d = dists.Bernoulli(jnp.asarray(logits))
  p = 1 / (1 + np.exp(-logits))
  for x in (0.0, 1.0):
    np.testing.assert_allclose(d.log_prob(jnp.full(3, x)),
                               stats.bernoulli.logpmf(x, p), rtol=1e-10)
  np.testing.assert_allclose(d.entropy(), stats.bernoulli.entropy(p),
                             rtol=1e-10)
  extreme = dists.Bernoulli(jnp.array([-500.0, 500.0]))
  assert np.all(np.isfinite(extreme.log_prob(jnp.array([1.0, 0.0]))))
  np.testing.assert_allclose(extreme.log_prob(jnp.array([1.0, 0.0])),
                             [-500.0, -500.0])
  assert np.all(np.isfinite(extreme.entropy()))
  b = d.sample(jax.random.PRNGKey(0), (20000,))
  stat_checks.assert_mean_close(b, p)


def test_categorical_matches_scipy():
  logits = jnp.array([[0.1, 2.0, -1.0], [0.0, 0.0, 0.0]])
  d = dists.Categorical(logits)
  probs = np.asarray(jax.nn.softmax(logits, -1))
  np.testing.assert_allclose(d.log_prob(jnp.array([1, 2])),
                             np.log([probs[0, 1], probs[1, 2]]), rtol=1e-10)
  np.testing.assert_allclose(d.entropy(), stats.entropy(probs, axis=-1),
                             rtol=1e-10)
  samples = d.sample(jax.random.PRNGKey(0), (20000,))
  one_hot = np.asarray(jax.nn.one_hot(samples, 3))
  stat_checks.assert_mean_close(one_hot, probs)


def test_relaxed_bernoulli_density_is_the_derivative_of_its_cdf():
  # y = σ((l + L)/τ) with logistic L: P(Y <= y) = σ(τ logit(y) - l).
  logits, tau = 0.7, 0.6
  cdf = lambda y: jax.nn.sigmoid(tau * jnp.log(y / (1 - y)) - logits)
  d = dists.RelaxedBernoulli(jnp.asarray(logits), jnp.asarray(tau))
  for y in (0.05, 0.3, 0.5, 0.9):
    np.testing.assert_allclose(jnp.exp(d.log_prob(y)), jax.grad(cdf)(y),
                               rtol=1e-10)
  total, _ = integrate.quad(lambda y: float(jnp.exp(d.log_prob(y))), 0, 1)
  assert abs(total - 1) < 1e-6
  samples = d.sample(jax.random.PRNGKey(0), (20000,))
  stat_checks.assert_mean_close(samples < 0.5,
                                float(jax.nn.sigmoid(-logits)))


def test_relaxed_categorical_with_two_classes_is_relaxed_bernoulli():
  a, b, tau = 0.4, -0.9, 0.7
  cat = dists.RelaxedCategorical(jnp.array([a, b]), tau)
  bern = dists.RelaxedBernoulli(jnp.asarray(a - b), tau)
  for y0 in (0.1, 0.5, 0.8):
    np.testing.assert_allclose(cat.log_prob(jnp.array([y0, 1 - y0])),
                               bern.log_prob(y0), rtol=1e-10)
  y = cat.sample(jax.random.PRNGKey(0), (10,))
  np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-12)


def test_relaxation_rejects_bad_temperature():
  with pytest.raises(ValueError, match='temperature'):
    dists.RelaxedBernoulli(jnp.zeros(2), -0.5)
  with pytest.raises(ValueError, match='temperature'):
    dists.RelaxedCategorical(jnp.zeros(2), 0.0)


def test_relaxed_bernoulli_noise_has_logistic_tails_and_no_atom():
  # L = log u - log(1 - u): P(L < -t) = σ(-t). Over 2^24 draws the count
  # below -10 is Poisson(2^24 σ(-10)); nothing lies beyond the lattice's
  # ±16.6 (a uniform floored at the smallest float put mass 2⁻²³ at -87).
  with jax.enable_x64(False):
    d = dists.RelaxedBernoulli(jnp.zeros((), jnp.float32), 1.0)
    noise = d.sample_logits(jax.random.PRNGKey(0), (2**24,))
    expected = 2**24 * float(jax.nn.sigmoid(-10.0))
    count = int(jnp.sum(noise < -10))
    assert abs(count - expected) < 5 * np.sqrt(expected), (count, expected)
    assert float(jnp.min(noise)) > -17.0 and float(jnp.max(noise)) < 17.0


def _random_mvn(key, batch=(), dim=3):
  """A MultivariateNormal with random μ and a well-conditioned L."""
  k1, k2, k3 = jax.random.split(key, 3)
  loc = jax.random.normal(k1, batch + (dim,))
  lower = 0.5 * jax.random.normal(k2, batch + (dim, dim))
  log_diag = 0.3 * jax.random.normal(k3, batch + (dim,))
  return dists.MultivariateNormal.from_unconstrained(loc, log_diag, lower)


def test_mvn_log_prob_entropy_and_moments_match_scipy():
  q = _random_mvn(jax.random.PRNGKey(0), (2,))
  cov = np.asarray(q.scale_tril) @ np.swapaxes(np.asarray(q.scale_tril), 1, 2)
  x = jax.random.normal(jax.random.PRNGKey(1), (5, 2, 3))
  want = jax.scipy.stats.multivariate_normal.logpdf(x, q.loc, cov)
  np.testing.assert_allclose(q.log_prob(x), want, rtol=1e-12)
  np.testing.assert_allclose(q.event_log_prob(x), want, rtol=1e-12)
  assert q.log_prob(x).shape == (5, 2) and q.shape == (2, 3)
  np.testing.assert_allclose(
      q.entropy(), [stats.multivariate_normal(np.asarray(m), c).entropy()
                    for m, c in zip(q.loc, cov)], rtol=1e-12)
  np.testing.assert_allclose(q.covariance(), cov, rtol=1e-12)
  np.testing.assert_allclose(q.variance(), np.diagonal(cov, 0, 1, 2),
                             rtol=1e-12)
  np.testing.assert_allclose(q.log_det_covariance(),
                             np.linalg.slogdet(cov)[1], rtol=1e-12)
  np.testing.assert_array_equal(q.mean(), q.loc)
  # One loc [D] against a batch of points, and a batch of loc against one L.
  one = dists.MultivariateNormal(q.loc[0], q.scale_tril[0])
  np.testing.assert_allclose(one.log_prob(x[:, 0]), want[:, 0], rtol=1e-12)
  shared = dists.MultivariateNormal(q.loc, q.scale_tril[0])
  np.testing.assert_allclose(
      shared.log_prob(x), jax.scipy.stats.multivariate_normal.logpdf(
          x, q.loc, cov[0]), rtol=1e-12)


def test_mvn_samples_have_the_right_moments_and_are_reparameterized():
  q = _random_mvn(jax.random.PRNGKey(2))
  z = np.asarray(q.sample(jax.random.PRNGKey(3), (40000,)))
  stat_checks.assert_mean_close(z, q.loc)
  # E[(z_i - μ_i)(z_j - μ_j)] = Σ_ij, each within its standard error.
  centered = z - np.asarray(q.loc)
  products = centered[:, :, None] * centered[:, None, :]
  stat_checks.assert_mean_close(products, q.covariance())
  # d/dL E‖z - μ‖² = d/dL tr(L Lᵀ) = 2L (lower part), through the samples.
  def spread(tril):
    d = dists.MultivariateNormal(q.loc, tril)
    return jnp.mean(jnp.sum((d.sample(jax.random.PRNGKey(4), (40000,)) -
                             q.loc)**2, -1))
  grad = jax.grad(spread)(q.scale_tril)
  np.testing.assert_allclose(grad, 2.0 * q.scale_tril, atol=0.1)


def test_mvn_samples_are_those_of_jax_random_multivariate_normal():
  q = _random_mvn(jax.random.PRNGKey(5), (4,))
  key = jax.random.PRNGKey(6)
  want = jax.random.multivariate_normal(key, q.loc, q.covariance(), (7, 4),
                                        q.loc.dtype)
  np.testing.assert_allclose(q.sample(key, (7,)), want, rtol=1e-12,
                             atol=1e-12)


def test_mvn_with_a_diagonal_scale_is_the_normal():
  n = dists.Normal(jnp.array([[0.3, -1.0, 2.0], [0.0, 1.0, -2.0]]),
                   jnp.array([-0.5, 0.2, 1.0]))
  q = dists.MultivariateNormal.from_normal(n)
  assert q.shape == (2, 3) and q.scale_tril.shape == (2, 3, 3)
  key = jax.random.PRNGKey(7)
  np.testing.assert_array_equal(q.sample(key, (5,)), n.sample(key, (5,)))
  np.testing.assert_array_equal(q.sample(key), n.sample(key))
  x = jax.random.normal(key, (4, 2, 3))
  np.testing.assert_allclose(q.log_prob(x), n.event_log_prob(x), rtol=1e-12)
  np.testing.assert_allclose(n.event_log_prob(x),
                             np.sum(n.log_prob(x), -1), rtol=1e-15)
  np.testing.assert_allclose(q.entropy(), n.entropy().sum(-1), rtol=1e-12)
  same = dists.MultivariateNormal.from_unconstrained(
      n.loc, jnp.broadcast_to(n.log_scale, n.loc.shape))
  np.testing.assert_allclose(same.scale_tril, q.scale_tril, rtol=1e-15)


def test_mvn_from_unconstrained_ignores_the_upper_part_and_differentiates():
  loc, log_diag = jnp.array([0.5, -0.5]), jnp.array([0.1, -0.2])
  lower = jnp.array([[9.0, 9.0], [0.7, 9.0]])
  q = dists.MultivariateNormal.from_unconstrained(loc, log_diag, lower)
  want = np.array([[np.exp(0.1), 0.0], [0.7, np.exp(-0.2)]])
  np.testing.assert_allclose(q.scale_tril, want, rtol=1e-15)
  x = jnp.array([1.0, 2.0])
  g = jax.grad(lambda a: dists.MultivariateNormal.from_unconstrained(
      loc, log_diag, a).log_prob(x))(lower)
  assert g[0, 0] == g[0, 1] == g[1, 1] == 0.0 and g[1, 0] != 0.0
  # Batched per-image q's [B] under jit, vmap and grad.
  qs = _random_mvn(jax.random.PRNGKey(8), (6,), 4)
  z = jax.jit(lambda d, k: d.sample(k, (3,)))(qs, jax.random.PRNGKey(9))
  assert z.shape == (3, 6, 4)
  np.testing.assert_allclose(jax.vmap(lambda d, zi: d.log_prob(zi),
                                      in_axes=(0, 1))(qs, z),
                             qs.log_prob(z).T, rtol=1e-12)


def test_mvn_rejects_bad_parameters():
  with pytest.raises(ValueError, match=r'\[\.\.\., D, D\]'):
    dists.MultivariateNormal(jnp.zeros(3), jnp.eye(2))
  with pytest.raises(ValueError, match='do not broadcast'):
    dists.MultivariateNormal(jnp.zeros((2, 3)), jnp.zeros((4, 3, 3)) +
                             jnp.eye(3))
  with pytest.raises(ValueError, match='diagonal'):
    dists.MultivariateNormal(jnp.zeros(2), jnp.diag(jnp.array([1.0, 0.0])))
  with pytest.raises(ValueError, match='finite'):
    dists.MultivariateNormal.from_covariance(jnp.zeros(2),
                                             -jnp.eye(2))


def test_bernoulli_event_log_prob_sums_the_last_axis():
  d = dists.Bernoulli(jnp.array([[1.0, -2.0, 0.5]]))
  x = jnp.array([[1.0, 0.0, 1.0]])
  np.testing.assert_allclose(d.event_log_prob(x), d.log_prob(x).sum(-1),
                             rtol=1e-15)
  assert d.event_log_prob(x).shape == (1,)
