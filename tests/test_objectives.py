"""Bounds ordered as theory says, on a linear-Gaussian model with exact log p(x)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import stat_checks
from vae import distributions as dists
from vae.problems import linear_gaussian as lg
from vae import objectives
from vae.estimators import registry


@pytest.fixture(autouse=True)
def x64():
  with jax.enable_x64(True):
    yield


def setup(seed=0):
  model = lg.random_model(jax.random.PRNGKey(seed), data_dim=5, latent_dim=3,
                          noise_scale=0.7)
  x = lg.sample_data(model, jax.random.PRNGKey(seed + 1), 1)[0][0]
  log_lik = lambda z: lg.log_likelihood(model, x, z)
  prior = dists.standard_normal((3,), jnp.float64)
  mean, cov = lg.posterior(model, x)
  q = dists.Normal(mean + 0.2, 0.5 * jnp.log(jnp.diag(cov)))
  return model, x, log_lik, prior, q


def estimates(fn, log_lik, q, prior, num_samples, num_draws=4000, seed=0):
  keys = jax.random.split(jax.random.PRNGKey(seed), num_draws)
  return np.asarray(jax.jit(jax.vmap(
      lambda k: fn(log_lik, q, prior, k, num_samples)))(keys))


def test_elbo_forms_estimate_the_closed_form_elbo():
  model, x, log_lik, prior, q = setup()
  exact = lg.elbo(model, x, q)
  stat_checks.assert_mean_close(
      estimates(objectives.elbo, log_lik, q, prior, 1), exact)
  stat_checks.assert_mean_close(
      estimates(objectives.elbo_mc_kl, log_lik, q, prior, 1), exact)


def test_elbo_le_iwae_k_le_iwae_2k_le_log_px():
  model, x, log_lik, prior, q = setup()
  log_px = float(lg.log_marginal(model, x))
  means, ses = [float(lg.elbo(model, x, q))], [0.0]
  for k in (2, 4, 8, 16):
    v = estimates(objectives.iwae_bound, log_lik, q, prior, k)
    means.append(v.mean())
    ses.append(v.std() / np.sqrt(v.size))
  means.append(log_px)
  ses.append(0.0)
  for (a, sa), (b, sb) in zip(zip(means, ses), zip(means[1:], ses[1:])):
    # Each step up is positive by more than 3 combined standard errors.
    assert b - a > 3 * np.hypot(sa, sb), means


def test_elbo_equals_log_px_at_the_exact_posterior():
  w = jnp.array([[1.5, 0.0], [0.0, -0.7], [0.0, 0.0], [0.0, 0.0]])
  model = lg.LinearGaussianModel(w, jnp.arange(4.0) / 4, jnp.log(jnp.asarray(0.3)))
  x = jnp.array([0.4, -1.0, 0.2, 0.9])
  mean, cov = lg.posterior(model, x)
  q = dists.Normal(mean, 0.5 * jnp.log(jnp.diag(cov)))
  prior = dists.standard_normal((2,), jnp.float64)
  log_lik = lambda z: lg.log_likelihood(model, x, z)
  log_px = lg.log_marginal(model, x)
  for fn, n in ((objectives.elbo_mc_kl, 1), (objectives.iwae_bound, 7)):
    # Every estimate is exact: log p(x, z) - log q(z) = log p(x) for all z.
    np.testing.assert_allclose(estimates(fn, log_lik, q, prior, n, 50), log_px,
                               rtol=1e-10)
  # The analytic-KL form is exact only in expectation.
  stat_checks.assert_mean_close(
      estimates(objectives.elbo, log_lik, q, prior, 1), log_px)
  np.testing.assert_allclose(lg.elbo(model, x, q), log_px, rtol=1e-12)


def test_beta_weights_the_kl():
  _, _, log_lik, prior, q = setup()
  key = jax.random.PRNGKey(0)
  full = objectives.elbo(log_lik, q, prior, key, 3, beta=1.0)
  recon = objectives.elbo(log_lik, q, prior, key, 3, beta=0.0)
  half = objectives.elbo(log_lik, q, prior, key, 3, beta=0.5)
  np.testing.assert_allclose(half, 0.5 * (full + recon), rtol=1e-12)


@pytest.mark.parametrize('objective', objectives.OBJECTIVES)
def test_every_surrogate_value_is_its_objective(objective):
  _, _, log_lik, prior, q = setup()
  key = jax.random.PRNGKey(4)
  want = {'elbo': objectives.elbo, 'elbo_mc_kl': objectives.elbo_mc_kl,
          'iwae': objectives.iwae_bound}[objective](log_lik, q, prior, key, 3)
  for est in registry.names(objective, 'continuous', stateless=True):
    if est == 'measure_valued':  # Its value is drawn with a split key.
      continue
    got = objectives.surrogate_objective(objective, est, log_lik, q, prior,
                                         key, 3, baseline=0.0)
    np.testing.assert_allclose(got, want, rtol=1e-10, err_msg=est)


@pytest.mark.parametrize('objective', ['elbo', 'elbo_mc_kl'])
def test_elbo_surrogate_gradients_are_unbiased(objective):
  """Encoder gradient of every ELBO estimator matches the closed form."""
  model, x, log_lik, prior, q = setup()
  exact = jax.grad(lambda q: lg.elbo(model, x, q))(q)
  keys = jax.random.split(jax.random.PRNGKey(7), 20000)
  for est in registry.names(objective, 'continuous', stateless=True):
    grad = jax.jit(jax.vmap(jax.grad(
        lambda q, k: objectives.surrogate_objective(
            objective, est, log_lik, q, prior, k, 2, baseline=-20.0)),
        in_axes=(None, 0)))(q, keys)
    for a, b in zip(jax.tree_util.tree_leaves(grad),
                    jax.tree_util.tree_leaves(exact)):
      stat_checks.assert_mean_close(a, b)


def test_invalid_combinations_raise():
  _, _, log_lik, prior, q = setup()
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match='choose from'):
    objectives.surrogate_objective('elbo', 'dreg', log_lik, q, prior, key, 2)
  with pytest.raises(ValueError, match='unknown objective'):
    objectives.surrogate_objective('nope', 'pathwise', log_lik, q, prior, key, 2)
  with pytest.raises(ValueError, match='baseline'):
    objectives.surrogate_objective('elbo', 'score_moving_average', log_lik, q, prior,
                                   key, 2)
