"""Tests for vae.discrete_gradients: unbiased ones are, biased ones are not."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import stat_checks
from vae import distributions as dists
from vae.estimators import discrete
from vae.estimators import core

LOGITS = jnp.array([0.3, -1.0, 2.0])


def cost(b):
  """Non-separable in the bits, smooth on [0, 1]^3."""
  return (jnp.sum(b) - 1.2)**2


def exact_gradient(logits):
  """∇ Σ_b q(b) f(b) by enumerating all 2^3 states."""
  def expectation(l):
    p = jax.nn.sigmoid(l)
    total = 0.0
    for bits in itertools.product([0.0, 1.0], repeat=logits.shape[0]):
      b = jnp.array(bits)
      total += jnp.prod(jnp.where(b == 1, p, 1 - p)) * cost(b)
    return total
  return jax.grad(expectation)(logits)


def draws(fn, num_samples, num_draws=40000, seed=0, **kw):
  keys = jax.random.split(jax.random.PRNGKey(seed), num_draws)
  return np.asarray(jax.jit(jax.vmap(
      lambda k: fn(cost, LOGITS, dists.Bernoulli, k, num_samples, **kw)))(keys))


@pytest.mark.parametrize('fn,n', [(discrete.disarm, 1),
                                  (core.score_function, 1),
                                  (core.leave_one_out, 3)])
def test_unbiased_estimators_for_bernoulli(fn, n):
  stat_checks.assert_mean_close(draws(fn, n), exact_gradient(LOGITS))


def test_disarm_has_lower_variance_than_rloo_at_equal_evaluations():
  disarm = draws(discrete.disarm, 1)   # 2 evaluations of f
  rloo = draws(core.leave_one_out, 2)      # 2 evaluations of f
  assert np.all(disarm.var(0) < rloo.var(0))


def test_gumbel_softmax_is_biased_and_its_bias_shrinks_with_temperature():
  want = np.asarray(exact_gradient(LOGITS))
  biases = []
  for tau in (1.0, 0.5, 0.2):
    g = draws(discrete.gumbel_softmax, 1, temperature=tau)
    bias = np.linalg.norm(g.mean(0) - want)
    se = np.linalg.norm(g.std(0) / np.sqrt(g.shape[0]))
    assert bias > 5 * se, (tau, bias, se)
    biases.append(bias)
  assert biases[0] > biases[1] > biases[2], biases


def test_straight_through_is_biased():
  g = draws(discrete.straight_through, 1, temperature=1.0)
  err = np.abs(g.mean(0) - np.asarray(exact_gradient(LOGITS)))
  se = g.std(0) / np.sqrt(g.shape[0])
  assert np.max(err / se) > 10


def test_straight_through_value_uses_exact_discrete_samples():
  key = jax.random.PRNGKey(0)
  v = discrete.straight_through_surrogate(
      lambda b: jnp.sum(b * (1 - b)), LOGITS, dists.Bernoulli, key, 64)
  assert abs(v) < 1e-6  # b(1-b) = 0 for binary b; relaxed y gives ~0.1.


def test_categorical_relaxations_and_score_function():
  logits = jnp.array([0.5, -0.2, 1.0])
  values = jnp.array([1.0, -2.0, 0.5])
  probs = jax.nn.softmax(logits)
  # d/dl Σ_c p_c v_c = p ⊙ (v - p·v)
  want = probs * (values - probs @ values)
  keys = jax.random.split(jax.random.PRNGKey(1), 40000)
  score = jax.jit(jax.vmap(lambda k: core.score_function(
      lambda c: values[c], logits, dists.Categorical, k, 2)))(keys)
  stat_checks.assert_mean_close(score, want)
  relaxed = jax.jit(jax.vmap(lambda k: discrete.gumbel_softmax(
      lambda y: y @ values, logits, dists.Categorical, k, 2,
      temperature=0.1)))(keys)
  assert relaxed.shape == (40000, 3)
  assert np.all(np.isfinite(relaxed))


def test_errors():
  key = jax.random.PRNGKey(0)
  with pytest.raises(TypeError, match='Bernoulli'):
    discrete.disarm(cost, {'mu': 0.0, 'sigma': 1.0},
                              lambda p: dists.Normal.from_scale(p['mu'], p['sigma']),
                              key, 1)
  with pytest.raises(ValueError, match='temperature'):
    discrete.gumbel_softmax(cost, LOGITS, dists.Bernoulli, key, 1,
                                      temperature=-1.0)
  with pytest.raises(ValueError, match='num_samples'):
    discrete.disarm(cost, LOGITS, dists.Bernoulli, key, 0)
