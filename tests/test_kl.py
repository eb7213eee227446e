"""Tests for vae.kl: analytic KLs against independent computations and MC."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from tests import stat_checks
from vae import distributions as dists
from vae import kl


@pytest.fixture(autouse=True)
def x64():
  with jax.enable_x64(True):
    yield


def _quad_kl_normal(mq, sq, mp, sp):
  """∫ q log(q/p) by quadrature: independent of the closed form."""
  f = lambda x: stats.norm.pdf(x, mq, sq) * (
      stats.norm.logpdf(x, mq, sq) - stats.norm.logpdf(x, mp, sp))
  val, _ = integrate.quad(f, mq - 40 * sq, mq + 40 * sq, epsabs=1e-13,
                          limit=200)
  return val


@pytest.mark.parametrize('mq,sq,mp,sp', [(0.0, 1.0, 0.0, 1.0),
                                         (1.0, 0.5, -0.3, 2.0),
                                         (-2.0, 3.0, 0.5, 0.7),
                                         (0.1, 1.0001, 0.1, 1.0)])
def test_normal_kl_matches_quadrature(mq, sq, mp, sp):
  q = dists.Normal.from_scale(mq, sq)
  p = dists.Normal.from_scale(mp, sp)
  np.testing.assert_allclose(kl.kl_divergence(q, p),
                             _quad_kl_normal(mq, sq, mp, sp), atol=1e-9)


def test_standard_normal_kl_is_the_special_case():
  q = dists.Normal(jnp.array([0.3, -1.0]), jnp.array([0.2, -0.5]))
  prior = dists.standard_normal((2,), jnp.float64)
  np.testing.assert_allclose(kl.kl_normal_standard_normal(q),
                             kl.kl_divergence(q, prior), rtol=1e-12)


def test_bernoulli_kl_matches_direct_sum():
  a = np.array([-2.0, 0.3, 4.0, 30.0])
  b = np.array([1.0, 0.3, -4.0, -30.0])
  pa, pb = 1 / (1 + np.exp(-a)), 1 / (1 + np.exp(-b))
  direct = pa * np.log(pa / pb) + (1 - pa) * np.log((1 - pa) / (1 - pb))
  got = kl.kl_divergence(dists.Bernoulli(jnp.asarray(a)),
                         dists.Bernoulli(jnp.asarray(b)))
  np.testing.assert_allclose(got, direct, rtol=1e-5)
  assert got[1] == 0.0


def test_categorical_kl_matches_scipy_entropy():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
  got = kl.kl_divergence(dists.Categorical(jnp.asarray(a)),
                         dists.Categorical(jnp.asarray(b)))
  want = stats.entropy(np.asarray(jax.nn.softmax(a)),
                       np.asarray(jax.nn.softmax(b)),
                       axis=-1)
  np.testing.assert_allclose(got, want, rtol=1e-10)


def _log_ratio_variance(q, p, family):
  """Var_q[log q(z) - log p(z)] per variable, in closed form or by enumeration.

  Normal: with a = σq/σp, c = (μq - μp)/σp, log q - log p =
  ½((a² - 1) ε² + 2acε + c²) + const, so Var = ½(a² - 1)² + a²c².
  """
  if family == 'normal':
    a = np.exp(q.log_scale - p.log_scale)
    c = (q.loc - p.loc) / np.exp(p.log_scale)
    return 0.5 * (a**2 - 1)**2 + a**2 * c**2
  if family == 'bernoulli':
    pq, pp = jax.nn.sigmoid(q.logits), jax.nn.sigmoid(p.logits)
    probs, ratios = [pq, 1 - pq], [np.log(pq / pp), np.log((1 - pq) / (1 - pp))]
  else:
    probs = list(np.moveaxis(np.asarray(q.probs), -1, 0))
    ratios = list(np.moveaxis(np.asarray(q.log_probs - p.log_probs), -1, 0))
  mean = sum(w * r for w, r in zip(probs, ratios))
  return sum(w * r * r for w, r in zip(probs, ratios)) - mean**2


@pytest.mark.parametrize('family', ['normal', 'bernoulli', 'categorical'])
def test_monte_carlo_kl_mean_and_variance_are_exact(family):
  # mc_kl_divergence with N samples: mean = analytic KL, variance =
  # Var[log q - log p] / N (closed form or enumeration above).
  if family == 'normal':
    q = dists.Normal(jnp.array([0.5, -1.0]), jnp.array([0.1, -0.4]))
    p = dists.Normal(jnp.array([0.0, 0.3]), jnp.array([0.3, 0.2]))
  elif family == 'bernoulli':
    q = dists.Bernoulli(jnp.array([1.0, -2.0]))
    p = dists.Bernoulli(jnp.array([-0.5, 0.5]))
  else:
    q = dists.Categorical(jnp.array([[1.0, 0.0, -1.0]]))
    p = dists.Categorical(jnp.array([[0.0, 0.5, 0.0]]))
  n, draws = 3, 20000
  est = jax.jit(jax.vmap(lambda k: kl.mc_kl_divergence(q, p, k, n)))(
      jax.random.split(jax.random.PRNGKey(3), draws))
  stat_checks.assert_mean_close(est, kl.kl_divergence(q, p), max_band=0.05)
  stat_checks.assert_variance_close(est, _log_ratio_variance(q, p, family) / n)


def test_kl_errors():
  with pytest.raises(NotImplementedError, match='mc_kl_divergence'):
    kl.kl_divergence(dists.Normal(0.0, 0.0), dists.Bernoulli(0.0))
  with pytest.raises(ValueError, match='num_samples'):
    kl.mc_kl_divergence(dists.Normal(0.0, 0.0), dists.Normal(0.0, 0.0),
                        jax.random.PRNGKey(0), 0)


def _mvn(seed, batch=(), dim=3):
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  return dists.MultivariateNormal.from_unconstrained(
      jax.random.normal(k1, batch + (dim,)),
      0.3 * jax.random.normal(k3, batch + (dim,)),
      0.5 * jax.random.normal(k2, batch + (dim, dim)))


def _numpy_kl_gaussians(mq, cq, mp, cp):
  """½[tr(Σp⁻¹Σq) + (μp-μq)ᵀΣp⁻¹(μp-μq) - D + log det Σp - log det Σq]."""
  inv = np.linalg.inv(cp)
  diff = mp - mq
  return 0.5 * (np.trace(inv @ cq) + diff @ inv @ diff - len(mq) +
                np.linalg.slogdet(cp)[1] - np.linalg.slogdet(cq)[1])


def test_mvn_kl_matches_numpy_and_monte_carlo():
  q, p = _mvn(0, (2,)), _mvn(1, (2,))
  got = kl.kl_divergence(q, p)
  assert got.shape == (2,)
  cq, cp = np.asarray(q.covariance()), np.asarray(p.covariance())
  want = [_numpy_kl_gaussians(np.asarray(q.loc[b]), cq[b],
                              np.asarray(p.loc[b]), cp[b]) for b in range(2)]
  np.testing.assert_allclose(got, want, rtol=1e-10)
  # log q(z) - log p(z), z ~ q: its mean is the KL, within its SE.
  z = q.sample(jax.random.PRNGKey(2), (40000,))
  stat_checks.assert_mean_close(q.log_prob(z) - p.log_prob(z), got,
                                max_band=0.05)
  np.testing.assert_allclose(kl.kl_divergence(q, q), 0.0, atol=1e-12)


def test_mvn_kl_with_a_diagonal_scale_is_the_normal_kl():
  nq = dists.Normal(jnp.array([[0.5, -1.0, 0.2]]), jnp.array([0.1, -0.4, 0.3]))
  np_ = dists.Normal(jnp.array([0.0, 0.3, -0.1]), jnp.array([0.3, 0.2, -0.5]))
  want = kl.kl_normal_normal(nq, np_).sum(-1)
  mq = dists.MultivariateNormal.from_normal(nq)
  mp = dists.MultivariateNormal.from_normal(np_)
  for a, b in [(mq, mp), (mq, np_), (nq, mp)]:
    np.testing.assert_allclose(kl.kl_divergence(a, b), want, rtol=1e-12)


def test_mvn_kl_to_a_diagonal_normal_matches_monte_carlo():
  q = _mvn(3)
  p = dists.Normal(jnp.array([0.2, -0.3, 0.0]), jnp.array([0.4, -0.1, 0.2]))
  z = q.sample(jax.random.PRNGKey(4), (40000,))
  stat_checks.assert_mean_close(q.log_prob(z) - p.event_log_prob(z),
                                kl.kl_divergence(q, p), max_band=0.05)
  # KL(p ‖ q) from samples of the Normal.
  x = p.sample(jax.random.PRNGKey(5), (40000,))
  stat_checks.assert_mean_close(p.event_log_prob(x) - q.log_prob(x),
                                kl.kl_divergence(p, q), max_band=0.05)
