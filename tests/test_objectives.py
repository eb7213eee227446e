"""vae.objectives: bound estimates and their gradients against exact values.

Exact values: a linear-Gaussian model with log p(x) in closed form, and the
1-D model of `tests/stat_checks.py`, whose ELBO (K = 1) and IWAE_K at any β
are computed by quadrature and differentiated by finite differences.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import stat_checks as sc
from vae import distributions as dists
from vae import kl
from vae import objectives
from vae import stats
from vae.problems import linear_gaussian as lg

NUM_DRAWS = 20000
# (objective, estimator, β, N): the paths of `surrogate_objective`: analytic
# KL, Monte Carlo KL, STL's stopped log q, a caller-kept baseline, IWAE.
PATHS = [('elbo', 'pathwise', 1.0, 2), ('elbo', 'measure_valued', 0.5, 2),
         ('elbo', 'score_moving_average', 1.0, 4),
         ('elbo_mc_kl', 'pathwise', 0.5, 2), ('elbo_mc_kl', 'stl', 1.0, 2),
         ('elbo_mc_kl', 'score_rloo', 1.0, 4), ('iwae', 'dreg', 0.5, 3),
         ('iwae', 'vimco', 1.0, 3)]
Z = stats.z_threshold(len(PATHS) * 3, alpha=1e-3)


def setup(seed=0):
  model = lg.random_model(jax.random.PRNGKey(seed), data_dim=5, latent_dim=3,
                          noise_scale=0.7)
  x = lg.sample_data(model, jax.random.PRNGKey(seed + 1), 1)[0][0]
  log_lik = lambda z: lg.log_likelihood(model, x, z)
  prior = dists.standard_normal((3,), jnp.float64)
  post = lg.posterior(model, x)
  q = dists.Normal(post.loc + 0.2, 0.5 * jnp.log(post.variance()))
  return model, x, log_lik, prior, q


def estimates(fn, log_lik, q, prior, num_samples, num_draws=4000, seed=0):
  keys = jax.random.split(jax.random.PRNGKey(seed), num_draws)
  return np.asarray(jax.jit(jax.vmap(
      lambda k: fn(log_lik, q, prior, k, num_samples)))(keys))


def test_elbo_forms_estimate_the_closed_form_elbo():
  with jax.enable_x64(True):
    model, x, log_lik, prior, q = setup()
    exact = lg.elbo(model, x, q)
    for fn in (objectives.elbo, objectives.elbo_mc_kl):
      sc.assert_mean_close(estimates(fn, log_lik, q, prior, 1, 20000), exact,
                           max_band=0.02)


def test_elbo_le_iwae_k_le_iwae_2k_le_log_px():
  with jax.enable_x64(True):
    model, x, log_lik, prior, q = setup()
    log_px = float(lg.log_marginal(model, x))
    means, ses = [float(lg.elbo(model, x, q))], [0.0]
    for k in (2, 8):
      v = estimates(objectives.iwae_bound, log_lik, q, prior, k)
      means.append(v.mean())
      ses.append(v.std() / np.sqrt(v.size))
    means.append(log_px)
    ses.append(0.0)
    for (a, sa), (b, sb) in zip(zip(means, ses), zip(means[1:], ses[1:])):
      # Each step up is positive by more than 3 combined standard errors.
      assert b - a > 3 * np.hypot(sa, sb), means


def test_elbo_equals_log_px_at_the_exact_posterior():
  with jax.enable_x64(True):
    w = jnp.array([[1.5, 0.0], [0.0, -0.7], [0.0, 0.0], [0.0, 0.0]])
    model = lg.LinearGaussianModel(w, jnp.arange(4.0) / 4,
                                   jnp.log(jnp.asarray(0.3)))
    x = jnp.array([0.4, -1.0, 0.2, 0.9])
    post = lg.posterior(model, x)
    q = dists.Normal(post.loc, 0.5 * jnp.log(post.variance()))
    prior = dists.standard_normal((2,), jnp.float64)
    log_lik = lambda z: lg.log_likelihood(model, x, z)
    log_px = lg.log_marginal(model, x)
    for fn, n in ((objectives.elbo_mc_kl, 1), (objectives.iwae_bound, 7)):
      # Every estimate is exact: log p(x, z) - log q(z) = log p(x) for all z.
      np.testing.assert_allclose(estimates(fn, log_lik, q, prior, n, 50),
                                 log_px, rtol=1e-10)
    sc.assert_mean_close(estimates(objectives.elbo, log_lik, q, prior, 1,
                                   20000), log_px, max_band=0.02)


def _lg_1d():
  """The 1-D model: log p(x|z), the prior N(0, 1) and q."""
  log_lik = sc.lg_log_joint(0.0)  # β = 0: the prior term drops out.
  return log_lik, dists.Normal(jnp.zeros(()), jnp.zeros(())), sc.lg_q()


@pytest.mark.parametrize('objective,estimator,beta,n', PATHS)
def test_surrogate_value_and_gradient_are_the_objectives(objective, estimator,
                                                          beta, n):
  # Value: E[surrogate] = ELBO_β (K = 1) or IWAE_K,β by quadrature; encoder
  # gradient: finite differences of the same; bands narrow enough to see a
  # 20% error in the gradient.
  log_lik, prior, q = _lg_1d()
  k = n if objective == 'iwae' else 1

  def estimate(key):
    value, g = jax.value_and_grad(lambda q: objectives.surrogate_objective(
        objective, estimator, log_lik, q, prior, key, n, beta=beta,
        baseline=-2.0))(q)
    return jnp.stack([value, g.loc, g.log_scale])
  got = sc.draw_moments(estimate, NUM_DRAWS)
  exact = np.concatenate([[sc.lg_expected_bound(*sc.LG_Q, beta, k)],
                          sc.lg_exact_gradient(beta, k)[:2]])
  z = sc.z_scores(got['mean'], got['variance'], NUM_DRAWS, exact)
  assert np.all(np.abs(z) < Z), (z, got['mean'], exact)
  band = Z * np.sqrt(got['variance'][1:] / NUM_DRAWS)
  assert np.all(band < 0.2 * np.abs(exact[1:])), (band, exact)


def test_beta_weights_the_kl():
  # E[elbo_mc_kl at β] = E_q log p(x|z) - β KL(q‖p) = ELBO + (1 - β) KL.
  with jax.enable_x64(True):
    model, x, log_lik, prior, q = setup()
    want = lg.elbo(model, x, q) + 0.5 * jnp.sum(kl.kl_divergence(q, prior))
    got = estimates(lambda *a: objectives.elbo_mc_kl(*a, beta=0.5), log_lik,
                    q, prior, 1, 20000)
    sc.assert_mean_close(got, want, max_band=0.02)


def test_invalid_combinations_raise():
  log_lik, prior, q = _lg_1d()
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match='choose from'):
    objectives.surrogate_objective('elbo', 'dreg', log_lik, q, prior, key, 2)
  with pytest.raises(ValueError, match='unknown objective'):
    objectives.surrogate_objective('nope', 'pathwise', log_lik, q, prior, key,
                                   2)
  with pytest.raises(ValueError, match='baseline'):
    objectives.surrogate_objective('elbo', 'score_moving_average', log_lik, q,
                                   prior, key, 2)
  with pytest.raises(ValueError, match='does not apply'):
    objectives.surrogate_objective('elbo', 'score_optimal_baseline', log_lik,
                                   q, prior, key, 2, baseline=0.0)
