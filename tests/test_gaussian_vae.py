"""Tests for vae.gaussian_vae: bounds, quadrature log-likelihood, training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae.models import gaussian_vae as gv
from vae.problems import mixtures


@pytest.fixture(scope='module')
def trained():
  """A VAE with a 1-D latent briefly fit to a 1-D two-component mixture."""
  mix = mixtures.from_moments(jnp.array([0.5, 0.5]),
                              jnp.array([[-2.0], [2.0]]),
                              jnp.array([[[0.3]], [[0.3]]]))
  x, _ = mixtures.sample(mix, jax.random.PRNGKey(0), 300)
  params = gv.init(jax.random.PRNGKey(1), 1, 1, (16,))
  fitted, history = gv.fit(params, x, jax.random.PRNGKey(2), 400)
  return params, fitted, history, x


def test_training_raises_the_elbo(trained):
  _, _, history, _ = trained
  assert np.mean(history[-50:]) > np.mean(history[:50]) + 0.3


def test_quadrature_matches_iwae_and_bounds_are_ordered(trained):
  _, params, _, x = trained
  x = x[:64]
  z, dz = mixtures.grid(-7.0, 7.0, 4000)
  exact = gv.log_marginal_quadrature(params, x, z, dz)
  iwae = gv.log_marginal(params, x, jax.random.PRNGKey(3), 2000, chunk=32)
  elbo = jax.jit(lambda p, k: gv.batch_bound(gv.elbo, p, x, k, 64))(
      params, jax.random.PRNGKey(4))
  # IWAE draws scatter around log p(x) (and are low on average).
  np.testing.assert_allclose(iwae, exact, atol=0.2)
  assert abs(float(jnp.mean(iwae - exact))) < 0.02
  # ELBO ≤ IWAE_K ≤ log p(x) in expectation (averaged over the points).
  assert np.mean(elbo) < np.mean(iwae) - 0.01
  assert np.mean(elbo) < np.mean(exact) - 0.01


def test_quadrature_density_integrates_to_one(trained):
  _, params, _, _ = trained
  z, dz = mixtures.grid(-7.0, 7.0, 4000)
  xs, dx = mixtures.grid(-8.0, 8.0, 1600)
  density = jnp.exp(gv.log_marginal_quadrature(params, xs, z, dz))
  assert abs(float(jnp.sum(density) * dx) - 1.0) < 1e-3


def test_log_marginal_pads_the_last_chunk_and_shares_noise(trained):
  _, params, _, x = trained
  x = jnp.concatenate([x[:20], x[:20]])  # 40 rows: chunks of 32, padded.
  z, dz = mixtures.grid(-7.0, 7.0, 4000)
  exact = gv.log_marginal_quadrature(params, x, z, dz)
  key = jax.random.PRNGKey(5)
  independent = gv.log_marginal(params, x, key, 2000, chunk=32)
  np.testing.assert_allclose(independent, exact, atol=0.2)
  assert np.all(independent[:20] != independent[20:])
  common = gv.log_marginal(params, x, key, 2000, chunk=32, common_noise=True)
  np.testing.assert_array_equal(common[:20], common[20:])
