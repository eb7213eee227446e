"""vae.models.gaussian_vae with vae.problems.vae_density and vae.importance:
training, quadrature log-likelihood, importance sampling, bounds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae import importance
from vae import model as model_lib
from vae import stats
from vae.models import gaussian_vae as gv
from vae.problems import mixtures
from vae.problems import vae_density

MODEL = gv.GaussianVAE(1, 1, (16,))


@pytest.fixture(scope='module')
def trained():
  """A VAE with a 1-D latent briefly fit to a 1-D two-component mixture."""
  mix = mixtures.from_moments(jnp.array([0.5, 0.5]),
                              jnp.array([[-2.0], [2.0]]),
                              jnp.array([[[0.3]], [[0.3]]]))
  x, _ = mixtures.sample(mix, jax.random.PRNGKey(0), 300)
  params = MODEL.init(jax.random.PRNGKey(1))
  fitted, history = vae_density.fit(MODEL, params, x, jax.random.PRNGKey(2),
                                    400)
  return params, fitted, history, x


def test_layout_and_min_log_scales():
  params = MODEL.init(jax.random.PRNGKey(0))
  enc = params['encoder']['params']
  assert set(enc) == {'trunk', 'loc', 'log_scale'}
  assert enc['trunk']['hidden_0']['kernel'].shape == (1, 16)
  assert enc['loc']['kernel'].shape == enc['log_scale']['kernel'].shape == (
      16, 1)
  # log σ = m + softplus(raw - m) ≥ m, ≈ raw far above m.
  q = gv.normal_head((jnp.zeros(3), jnp.array([-50.0, 0.0, 30.0])), -8.0)
  np.testing.assert_allclose(q.log_scale, [-8.0, np.log1p(np.exp(-8.0)),
                                           30.0], atol=1e-6)


def test_training_raises_the_elbo(trained):
  _, _, history, _ = trained
  assert np.mean(history[-50:]) > np.mean(history[:50]) + 0.3


def test_quadrature_matches_iwae_and_bounds_are_ordered(trained):
  _, params, _, x = trained
  x = x[:64]
  z, dz = mixtures.grid(-7.0, 7.0, 4000)
  exact = vae_density.log_marginal_quadrature(MODEL, params, x, z, dz)
  out = importance.importance_sampling(MODEL, params, np.asarray(x),
                                       jax.random.PRNGKey(3), 2000,
                                       batch_size=32)
  iwae = out['log_px']
  elbo = model_lib.pathwise_bounds(MODEL, params, x, jax.random.PRNGKey(4),
                                   'elbo', num_samples=64)
  # IWAE draws scatter around log p(x) (and are low on average).
  np.testing.assert_allclose(iwae, exact, atol=0.2)
  assert abs(float(jnp.mean(iwae - exact))) < 0.02
  # ELBO ≤ IWAE_K ≤ log p(x) in expectation (averaged over the points).
  assert np.mean(elbo) < np.mean(iwae) - 0.01
  assert np.mean(elbo) < np.mean(exact) - 0.01
  assert np.mean(out['elbo']) < np.mean(iwae) - 0.01


def test_quadrature_density_integrates_to_one(trained):
  _, params, _, _ = trained
  z, dz = mixtures.grid(-7.0, 7.0, 4000)
  xs, dx = mixtures.grid(-8.0, 8.0, 1600)
  density = jnp.exp(vae_density.log_marginal_quadrature(MODEL, params, xs, z,
                                                        dz))
  assert abs(float(jnp.sum(density) * dx) - 1.0) < 1e-3


def test_importance_sampling_pads_batches_within_its_standard_errors(trained):
  """40 rows in batches of 32 (the last padded): each log p̂ within its
  delta-method se (plus the O(se²) bias) of the quadrature; repeated rows
  get independent samples."""
  _, params, _, x = trained
  x = jnp.concatenate([x[:20], x[:20]])
  z, dz = mixtures.grid(-7.0, 7.0, 4000)
  exact = np.asarray(vae_density.log_marginal_quadrature(MODEL, params, x, z,
                                                         dz))
  out = importance.importance_sampling(MODEL, params, np.asarray(x),
                                       jax.random.PRNGKey(5), 2000,
                                       batch_size=32)
  se = out['log_px_se']
  assert np.all(se > 0) and np.all(np.isfinite(out['log_px']))
  z_scores = (out['log_px'] + se**2 / 2 - exact) / se
  assert np.max(np.abs(z_scores)) < stats.z_threshold(40), z_scores
  assert np.all(out['log_px'][:20] != out['log_px'][20:])
