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
