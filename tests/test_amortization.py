"""Tests for vae.amortization: the best diagonal q, the gaps, ELBO fitting."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae import distributions as dists
from vae import optim
from vae.problems import amortization as am
from vae.problems import linear_gaussian as lg


@pytest.fixture(autouse=True, scope='module')
def x64():
  with jax.enable_x64(True):
    yield


def _adam(learning_rate):
  return optim.OptimizerConfig(learning_rate=learning_rate)


@pytest.fixture(scope='module')
def setup(x64):
  del x64
  model = lg.random_model(jax.random.PRNGKey(0), 6, 3)
  x, _ = lg.sample_data(model, jax.random.PRNGKey(1), 40)
  return model, x


def test_optimal_diagonal_q_is_the_elbo_maximizer(setup):
  model, x = setup
  q = am.optimal_diagonal_q(model, x)
  elbo = lambda loc, ls, xi: lg.elbo(model, xi, dists.Normal(loc, ls))
  grads = jax.jit(jax.vmap(jax.grad(elbo, argnums=(0, 1))))(
      q.loc, q.log_scale, x)
  np.testing.assert_allclose(grads[0], 0.0, atol=1e-10)
  np.testing.assert_allclose(grads[1], 0.0, atol=1e-10)
  # Its mean is the posterior mean; its precision the posterior's diagonal.
  post = lg.posterior(model, x[0])
  mean, cov = post.loc, post.covariance()
  np.testing.assert_allclose(q.loc[0], mean, rtol=1e-10)
  np.testing.assert_allclose(q.variance()[0],
                             1.0 / jnp.diag(jnp.linalg.inv(cov)), rtol=1e-10)
  best = am.batch_elbo(model, x, q)
  for scale in (0.9, 1.1):
    worse = dists.Normal(q.loc, q.log_scale + jnp.log(scale))
    assert np.all(am.batch_elbo(model, x, worse) < best)


def test_approximation_gap_formula(setup):
  model, x = setup
  gap = am.batch_log_marginal(model, x) - am.batch_elbo(
      model, x, am.optimal_diagonal_q(model, x))
  np.testing.assert_allclose(gap, am.approximation_gap(model), rtol=1e-9)
  assert am.approximation_gap(model) > 1e-3
  # And it is KL(q* ‖ p(z|x)).
  q0 = am.optimal_diagonal_q(model, x[0])
  np.testing.assert_allclose(lg.kl_to_posterior(model, x[0], q0), gap[0],
                             rtol=1e-9)


def test_orthogonal_model_has_an_exact_diagonal_posterior():
  model = am.orthogonal_model(jax.random.PRNGKey(2), 7, 3)
  w = model.weight
  np.testing.assert_allclose(w.T @ w, jnp.diag(jnp.diag(w.T @ w)), atol=1e-12)
  assert abs(float(am.approximation_gap(model))) < 1e-12
  x, _ = lg.sample_data(model, jax.random.PRNGKey(3), 10)
  np.testing.assert_allclose(
      am.batch_elbo(model, x, am.optimal_diagonal_q(model, x)),
      am.batch_log_marginal(model, x), rtol=1e-12)


def test_gaps_are_nonnegative_and_training_closes_the_amortization_gap(setup):
  model, x = setup
  init = am.init_encoder(jax.random.PRNGKey(4), 'linear', 6, 3)
  params, history, (evals,) = am.train_encoder(model, x, init, 1500,
                                               _adam(3e-2), (x,))
  before, after = am.checked_gaps(model, (x,), init)[0], am.checked_gaps(
      model, (x,), params)[0]
  # q* is linear in x with a constant variance, so a linear encoder can
  # reach it: training drives the amortization gap (>= 0) toward 0.
  for g in (before, after):
    assert g['amortization_gap'] > -1e-9 and not g['disagrees']
  assert after['amortization_gap'] < 0.02 * before['amortization_gap']
  assert history[-1] > history[0]
  np.testing.assert_allclose(evals[-1], after['elbo_amortized'], rtol=1e-10)


def test_mlp_encoder_shapes():
  params = am.init_encoder(jax.random.PRNGKey(5), 'mlp', 6, 3, hidden=8)
  q = am.encode(params, jnp.ones((4, 6)))
  assert q.loc.shape == (4, 3) and q.log_scale.shape == (4, 3)
  with pytest.raises(ValueError, match='linear'):
    am.init_encoder(jax.random.PRNGKey(5), 'conv', 6, 3)


def test_fit_by_elbo_refuses_an_unknown_inference(setup):
  # Its fits against the pPCA maximum likelihood: compare_fits, checked in
  # tests/test_linear_gaussian_experiment.py.
  _, x = setup
  with pytest.raises(ValueError, match='per_point'):
    am.fit_by_elbo(x, 3, 'pathwise', jax.random.PRNGKey(7), 'global', 2)
