"""Tests for vae.models.image_vae on a VAE small enough to integrate exactly."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae import kl as kl_lib
from vae.estimators import registry
from vae.models import image_vae


@pytest.fixture(scope='module')
def tiny():
  """A 1-D latent VAE on 12-pixel data: log p(x) by quadrature over z."""
  model = image_vae.burda_vae(latent_dim=1, hidden_sizes=(8,), data_dim=12)
  params = model.init(jax.random.PRNGKey(0))
  x = (jax.random.uniform(jax.random.PRNGKey(1), (4, 12)) < 0.3).astype(
      jnp.float32)
  return model, params, x


@functools.partial(jax.jit, static_argnums=0)
def exact_log_px(model, params, x):
  """log ∫ p(x|z) N(z; 0, 1) dz on a dense grid (trapezoid, |z| <= 10)."""
  z = jnp.linspace(-10.0, 10.0, 20001)[:, None]
  log_lik = jax.vmap(lambda xi: model.log_likelihood_fn(params, xi)(z))(x)
  log_prior = -0.5 * z[:, 0]**2 - 0.5 * jnp.log(2 * jnp.pi)
  dz = z[1, 0] - z[0, 0]
  return jax.nn.logsumexp(log_lik + log_prior, axis=-1) + jnp.log(dz)


@functools.partial(jax.jit, static_argnums=(0, 3))
def standard_error(model, params, x, k):
  """Delta-method SE of log p̂ with K samples: sqrt(Σ_k w̃_k² - 1/K)."""
  lw = jax.vmap(lambda xi: image_vae.log_weights(
      model, params, xi, jax.random.PRNGKey(9), k))(x)
  w = jax.nn.softmax(lw, axis=-1)
  return jnp.sqrt(jnp.maximum(jnp.sum(w**2, -1) - 1.0 / k, 0.0))


def test_importance_sampling_converges_to_the_exact_log_likelihood(tiny):
  model, params, x = tiny
  exact = exact_log_px(model, params, x)
  est = image_vae.importance_log_likelihood(model, params, x,
                                            jax.random.PRNGKey(2), 4000, 500)
  se = standard_error(model, params, x, 4000)
  assert np.all(np.abs(est - exact) < 5 * se + 1e-4), (est, exact, se)
  assert np.all(se < 0.05)  # The check is tight enough to catch real errors.
  # Chunk size changes only which random numbers are used: both converge.
  one_chunk = image_vae.importance_log_likelihood(
      model, params, x, jax.random.PRNGKey(2), 4000, 4000)
  assert np.all(np.abs(one_chunk - est) < 5 * np.sqrt(2) * se + 1e-4)
  with pytest.raises(ValueError, match='multiple'):
    image_vae.importance_log_likelihood(model, params, x,
                                        jax.random.PRNGKey(4), 1000, 300)


def test_bounds_are_ordered(tiny):
  """E[ELBO] < E[IWAE_5] < E[IWAE_50] < log p(x), over 2000 draws."""
  model, params, x = tiny

  @jax.jit
  def bounds(params):
    keys = jax.random.split(jax.random.PRNGKey(3), 2000)
    return [jnp.mean(jax.vmap(lambda key: image_vae.batch_surrogate(
        model, params, x, key, objective, 'pathwise', k))(keys))
            for objective, k in (('elbo', 1), ('iwae', 5), ('iwae', 50))]

  elbo, iwae5, iwae50 = bounds(params)
  assert elbo < iwae5 < iwae50 < float(jnp.mean(exact_log_px(model, params,
                                                             x)))


def test_each_surrogate_branch_gives_gradients_for_both_networks(tiny):
  """Every branch of `surrogate_objective` on the model: the analytic-KL
  ELBO, the Monte Carlo KL integrand, STL, and each IWAE surrogate (the
  E_q[f] estimators themselves are checked against exact gradients in
  the registry tests)."""
  model, params, x = tiny
  cases = [('elbo', 'pathwise'), ('elbo', 'score'),
           ('elbo_mc_kl', 'pathwise'), ('elbo_mc_kl', 'score_rloo'),
           ('elbo_mc_kl', 'stl')] + [
               ('iwae', est) for est in registry.names('iwae', 'continuous')]

  @jax.jit  # One program for all the cases: one compilation.
  def values_and_grads(params):
    return [jax.value_and_grad(image_vae.batch_surrogate, argnums=1)(
        model, params, x, jax.random.PRNGKey(5), objective, est, 3, 1.0, 0.0)
            for objective, est in cases]

  for case, (value, grads) in zip(cases, values_and_grads(params)):
    assert np.isfinite(value), case
    for group in ('encoder', 'decoder'):
      leaves = jax.tree_util.tree_leaves(grads[group])
      assert all(np.all(np.isfinite(l)) for l in leaves), (case, group)
      assert sum(float(jnp.sum(l**2)) for l in leaves) > 0, (case, group)


def test_model_config_builds_the_burda_architecture():
  config = image_vae.ModelConfig()
  model = image_vae.make(config)
  assert model == image_vae.burda_vae()  # Hashable, equal: one compile.
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  count = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))
  assert count == config.num_params() == 217_300 + 207_984
  small = image_vae.ModelConfig(hidden_sizes=(8, 3), latent_dim=2)
  shapes = jax.eval_shape(image_vae.make(small, 12).init,
                          jax.random.PRNGKey(0))
  assert sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes)) == (
      small.num_params(12))
  for kwargs, message in [(dict(latent_dim=10**8), 'latent_dim: must be <='),
                          (dict(hidden_sizes=(200, 0)), 'hidden_sizes'),
                          (dict(activation='tahn'), 'activation')]:
    with pytest.raises(ValueError, match=message):
      image_vae.ModelConfig(**kwargs)


def test_init_params_sets_the_output_bias_to_the_mean_logit(tiny):
  model, _, x = tiny
  key = jax.random.PRNGKey(7)
  mean = np.linspace(0.0, 1.0, 12)
  params = image_vae.init_params(model, key, mean)
  p = np.clip(mean, 1e-3, 1 - 1e-3)
  np.testing.assert_allclose(params['decoder']['params']['logits']['bias'],
                             np.log(p / (1 - p)), rtol=1e-5)
  plain = image_vae.init_params(model, key)
  for path in (('encoder',), ('decoder', 'params', 'trunk')):
    a, b = params, plain
    for part in path:
      a, b = a[part], b[part]
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(u, v)


def test_batch_objective_cost_is_the_score_function_cost(tiny):
  """f̄ = S̄ + β KL for 'elbo' and f̄ = S̄ for 'elbo_mc_kl'; same S̄."""
  model, params, x = tiny
  key, b = jax.random.PRNGKey(8), jnp.float32(-3.0)

  @jax.jit
  def values(params):
    kl = jnp.mean(jnp.sum(kl_lib.kl_divergence(
        model.posterior(params, x), model.prior()), -1))
    return kl, [(image_vae.batch_objective(
        model, params, x, key, objective, 'score_moving_average', 2, 0.5, b),
                 image_vae.batch_surrogate(
        model, params, x, key, objective, 'score_moving_average', 2, 0.5, b))
                for objective in ('elbo', 'elbo_mc_kl')]

  kl, (((elbo, cost), elbo_alone), ((mc, mc_cost), mc_alone)) = values(
      params)
  assert float(elbo) == pytest.approx(float(elbo_alone), rel=1e-6)
  assert float(mc) == pytest.approx(float(mc_alone), rel=1e-6)
  assert float(cost) == pytest.approx(float(elbo + 0.5 * kl), rel=1e-5)
  assert float(mc_cost) == pytest.approx(float(mc), rel=1e-6)
