"""Tests for vae.iwae_gradients on a linear-Gaussian model with exact answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import stat_checks
from vae import distributions as dists
from vae.estimators import iwae
from vae.problems import linear_gaussian as lg

K = 5


def identity(q):
  return q


@pytest.fixture(scope='module')
def problem():
  with jax.enable_x64(True):
    model = lg.random_model(jax.random.PRNGKey(0), data_dim=4, latent_dim=2,
                            noise_scale=0.8)
    x, _ = lg.sample_data(model, jax.random.PRNGKey(1), 1)
    x = x[0]
    log_joint = lambda z: (lg.log_likelihood(model, x, z) +
                           jnp.sum(dists.standard_normal((2,), jnp.float64).log_prob(z)))
    mean, cov = lg.posterior(model, x)
    q = dists.Normal(mean + 0.3, 0.5 * jnp.log(jnp.diag(cov)) + 0.2)
    yield model, x, log_joint, q


def draw(fn, log_joint, q, num_samples, num_draws=20000, seed=0):
  keys = jax.random.split(jax.random.PRNGKey(seed), num_draws)
  g = jax.jit(jax.vmap(lambda k: fn(log_joint, q, identity, k, num_samples)))(keys)
  return jax.tree_util.tree_map(np.asarray, g)


def flat(g):
  return np.concatenate([g.loc, g.log_scale], axis=-1)


def test_unbiased_estimators_agree_on_the_iwae_gradient(problem):
  _, _, log_joint, q = problem
  with jax.enable_x64(True):
    reference = flat(draw(iwae.iwae, log_joint, q, K, 40000, seed=9))
    ref_mean = reference.mean(0)
    ref_se = reference.std(0) / np.sqrt(reference.shape[0])
    for fn in (iwae.dreg, iwae.vimco,
               iwae.iwae_score):
      g = flat(draw(fn, log_joint, q, K))
      se = np.sqrt(g.var(0) / g.shape[0] + ref_se**2)
      err = np.abs(g.mean(0) - ref_mean)
      assert np.all(err < 5 * se), (fn.__name__, err, se)


def test_stl_is_unbiased_for_k1_and_biased_for_larger_k(problem):
  _, _, log_joint, q = problem
  with jax.enable_x64(True):
    for k in (1, 20):
      path = flat(draw(iwae.iwae, log_joint, q, k, 40000, seed=3))
      stl = flat(draw(iwae.stl, log_joint, q, k, 40000, seed=4))
      se = np.sqrt(path.var(0) / path.shape[0] + stl.var(0) / stl.shape[0])
      z = np.abs(path.mean(0) - stl.mean(0)) / se
      if k == 1:
        assert np.all(z < 5), z
      else:
        assert np.max(z) > 5, z


def test_at_the_exact_posterior_stl_and_dreg_have_zero_variance():
  with jax.enable_x64(True):
    # W with orthogonal columns: the posterior covariance is diagonal, so a
    # diagonal Normal q can be the exact posterior.
    w = jnp.array([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    model = lg.LinearGaussianModel(w, jnp.array([0.1, -0.2, 0.3]),
                                   jnp.log(jnp.asarray(0.5)))
    x = jnp.array([1.0, 0.5, -0.3])
    mean, cov = lg.posterior(model, x)
    q = dists.Normal(mean, 0.5 * jnp.log(jnp.diag(cov)))
    log_joint = lambda z: (lg.log_likelihood(model, x, z) -
                           0.5 * z @ z - jnp.log(2 * jnp.pi))
    for fn in (iwae.stl, iwae.dreg):
      g = flat(draw(fn, log_joint, q, K, 200))
      np.testing.assert_allclose(g, 0.0, atol=1e-10)
    plain = flat(draw(iwae.iwae, log_joint, q, K, 200))
    assert np.all(plain.var(0) > 1e-4)


def test_dreg_and_iwae_share_the_decoder_gradient(problem):
  model, x, _, q = problem
  with jax.enable_x64(True):
    def grads(surrogate, key):
      def loss(q, m):
        log_joint = lambda z: (lg.log_likelihood(m, x, z) - 0.5 * z @ z -
                               jnp.log(2 * jnp.pi))
        return surrogate(log_joint, q, identity, key, K)
      return jax.grad(loss, argnums=(0, 1))(q, model)
    key = jax.random.PRNGKey(5)
    (_, dec_iwae), (_, dec_dreg) = (grads(iwae.iwae_surrogate, key),
                                    grads(iwae.dreg_surrogate, key))
    for a, b in zip(jax.tree_util.tree_leaves(dec_iwae),
                    jax.tree_util.tree_leaves(dec_dreg)):
      np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_vimco_reduces_variance_over_plain_score(problem):
  _, _, log_joint, q = problem
  with jax.enable_x64(True):
    plain = flat(draw(iwae.iwae_score, log_joint, q, K, 5000))
    vimco = flat(draw(iwae.vimco, log_joint, q, K, 5000))
    assert np.all(vimco.var(0) < plain.var(0))


def test_surrogate_values_equal_the_bound(problem):
  _, _, log_joint, q = problem
  with jax.enable_x64(True):
    key = jax.random.PRNGKey(2)
    values = [s(log_joint, q, identity, key, K) for s in (
        iwae.iwae_surrogate, iwae.stl_surrogate,
        iwae.dreg_surrogate)]
    np.testing.assert_allclose(values, values[0], rtol=1e-12)


def test_vimco_needs_two_samples(problem):
  _, _, log_joint, q = problem
  with pytest.raises(ValueError, match='num_samples must be >= 2'):
    iwae.vimco(log_joint, q, identity, jax.random.PRNGKey(0), 1)
