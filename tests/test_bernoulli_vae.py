"""Tests for vae.bernoulli_vae against exact enumeration over the latents."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae.models import sigmoid_belief_net as sbn
from vae import kl as kl_lib

D, LATENTS = 5, 3
CONFIGS = jnp.array(list(itertools.product([0.0, 1.0], repeat=LATENTS)))


@pytest.fixture(autouse=True, scope='module')
def x64():
  with jax.enable_x64(True):
    yield


@pytest.fixture(scope='module')
def setup(x64):
  del x64
  params = sbn.init(jax.random.PRNGKey(0), D, LATENTS)
  params['prior_logits'] = jnp.array([0.3, -0.5, 0.1])
  x = jnp.array([1.0, 0.0, 1.0, 1.0, 0.0])
  return params, x


def _log_q(params, x, b):
  return jnp.sum(sbn.encode(params, x).log_prob(b), -1)


def _exact_elbo(params, x):
  """Σ_b q(b|x) log p(x|b) - KL(q ‖ p), by enumeration."""
  q = jnp.exp(jax.vmap(lambda b: _log_q(params, x, b))(CONFIGS))
  recon = jax.vmap(lambda b: sbn.log_likelihood(params, x, b))(CONFIGS)
  kl = jnp.sum(kl_lib.kl_divergence(sbn.encode(params, x), sbn.prior(params)))
  return q @ recon - kl


def _log_joint(params, x, b):
  return sbn.log_likelihood(params, x, b) + jnp.sum(sbn.prior(params).log_prob(b))


def _exact_iwae2(params, x):
  """E_{b1, b2 ~ q} log ½(w1 + w2), by enumerating the 64 pairs."""
  log_q = jax.vmap(lambda b: _log_q(params, x, b))(CONFIGS)
  log_w = jax.vmap(lambda b: _log_joint(params, x, b))(CONFIGS) - log_q
  pair = jnp.logaddexp(log_w[:, None], log_w[None, :]) - jnp.log(2.0)
  return jnp.sum(jnp.exp(log_q[:, None] + log_q[None, :]) * pair)


def _flat_encoder_grad(fn, params, x):
  grads = jax.grad(fn)(params, x)['encoder']
  return jnp.concatenate([jnp.ravel(l) for l in jax.tree_util.tree_leaves(
      grads)])


def _estimates(params, x, estimator, num_keys=20000, baseline=-3.0):
  keys = jax.random.split(jax.random.PRNGKey(1), num_keys)
  g = jax.jit(sbn.encoder_gradients, static_argnums=(3, 4))(
      params, x[None], keys, estimator, 2, baseline)
  return jnp.mean(g, 0), jnp.std(g, 0) / np.sqrt(num_keys)


def test_elbo_and_iwae_bound_the_exact_log_likelihood(setup):
  params, x = setup
  log_px = jax.nn.logsumexp(jax.vmap(lambda b: _log_joint(params, x, b))(
      CONFIGS))
  keys = jax.random.split(jax.random.PRNGKey(2), 4000)

  @jax.jit
  def bounds(params, x, keys):
    return (jnp.mean(jax.vmap(lambda k: sbn.elbo(params, x, k, 4))(keys)),
            jnp.mean(jax.vmap(lambda k: sbn.iwae(params, x, k, 20))(keys)))

  elbo, iwae = bounds(params, x, keys)
  np.testing.assert_allclose(elbo, _exact_elbo(params, x), atol=0.03)
  assert elbo < iwae < log_px + 0.01


@pytest.mark.parametrize('estimator', ['disarm', 'score_rloo', 'score_moving_average'])
def test_unbiased_estimators_match_the_exact_elbo_gradient(setup, estimator):
  params, x = setup
  exact = _flat_encoder_grad(_exact_elbo, params, x)
  mean, se = _estimates(params, x, estimator)
  z = np.abs(np.asarray(mean - exact)) / np.asarray(se)
  assert np.max(z) < 5.0, (estimator, np.max(z))


def test_vimco_matches_the_exact_iwae2_gradient(setup):
  params, x = setup
  exact = _flat_encoder_grad(_exact_iwae2, params, x)
  mean, se = _estimates(params, x, 'vimco')
  z = np.abs(np.asarray(mean - exact)) / np.asarray(se)
  assert np.max(z) < 5.0, np.max(z)


def test_relaxed_estimators_are_biased(setup):
  params, x = setup
  exact = _flat_encoder_grad(_exact_elbo, params, x)
  for estimator in ('straight_through', 'gumbel_softmax'):
    mean, se = _estimates(params, x, estimator)
    z = np.abs(np.asarray(mean - exact)) / np.asarray(se)
    assert np.max(z) > 10.0, (estimator, np.max(z))


def test_trainer_improves_the_elbo():
  rng = np.random.default_rng(0)
  protos = rng.random((3, 16)) < 0.5
  x = jnp.asarray(protos[rng.integers(0, 3, 200)] ^ (rng.random((200, 16)) <
                                                      0.05), jnp.float32)
  params = sbn.init(jax.random.PRNGKey(4), 16, 4, data_mean=jnp.mean(x, 0))
  init_state, run_steps = sbn.make_trainer(x, 'disarm', batch_size=20,
                                          learning_rate=3e-2)
  state = jax.jit(init_state)(params)
  key = jax.random.PRNGKey(5)
  elbo = jax.jit(lambda p: sbn.mean_bound(sbn.elbo, p, x, key, 8))
  before = elbo(params)
  state, values = jax.jit(run_steps)(state, jax.random.split(key, 300))
  after = elbo(state[0])
  assert np.all(np.isfinite(values))
  assert after > before + 1.0
  with pytest.raises(ValueError, match='unknown estimator'):
    sbn.example_surrogate(params, x[0], key, 'arm', 2)
