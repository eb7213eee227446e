"""vae.estimators.discrete: biases shown and sized, variances compared.

(Unbiasedness of DisARM and the score-function family on Bernoulli and
Categorical q: tests/test_registry.py.)
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import stat_checks as sc
from vae import distributions as dists
from vae.estimators import discrete
from vae.estimators import registry

NUM_DRAWS = 40000
DISARM, RLOO = registry.get('disarm'), registry.get('score_rloo')
GUMBEL_SOFTMAX = registry.get('gumbel_softmax')
STRAIGHT_THROUGH = registry.get('straight_through')


def draws(fn, cost, logits, builder, num_samples, seed=0, **kw):
  keys = jax.random.split(jax.random.PRNGKey(seed), NUM_DRAWS)
  return np.asarray(jax.jit(jax.vmap(lambda k: fn(
      cost, jnp.asarray(logits, jnp.float32), builder, k, num_samples,
      **kw)))(keys))


def _bias_and_se(g, exact):
  """(‖mean - exact‖, ‖SE‖) over the coordinates."""
  g = g.reshape(g.shape[0], -1)
  return (np.linalg.norm(g.mean(0) - np.ravel(exact)),
          np.linalg.norm(g.std(0) / np.sqrt(g.shape[0])))


def test_disarm_has_lower_variance_than_rloo_at_equal_evaluations():
  disarm = draws(DISARM, sc.bernoulli_cost, sc.BERNOULLI_LOGITS,
                 dists.Bernoulli, 1)   # 2 evaluations of f
  rloo = draws(RLOO, sc.bernoulli_cost, sc.BERNOULLI_LOGITS,
               dists.Bernoulli, 2)   # 2 evaluations of f
  assert np.all(disarm.var(0) < rloo.var(0))


@pytest.mark.parametrize('family', ['bernoulli', 'categorical'])
def test_gumbel_softmax_is_biased_and_its_bias_shrinks_with_temperature(
    family):
  logits, builder, cost, exact = {
      'bernoulli': (sc.BERNOULLI_LOGITS, dists.Bernoulli, sc.bernoulli_cost,
                    sc.bernoulli_exact()),
      'categorical': (sc.CATEGORICAL_LOGITS, dists.Categorical,
                      sc.categorical_cost, sc.categorical_exact())}[family]
  biases = []
  for tau in (1.0, 0.5, 0.2):
    bias, se = _bias_and_se(draws(GUMBEL_SOFTMAX, cost, logits, builder, 1,
                                  temperature=tau), exact)
    assert bias > 5 * se, (tau, bias, se)
    biases.append((bias, se))
  for (b1, s1), (b2, s2) in zip(biases, biases[1:]):
    assert b1 - b2 > 3 * np.hypot(s1, s2), biases


def test_categorical_straight_through_value_is_unbiased_gradient_is_not():
  # Forward pass on exact one-hot samples: the value estimates E_q[f]
  # (enumeration); the gradient (through the relaxation) misses the exact
  # one by many standard errors.
  logits = sc.CATEGORICAL_LOGITS
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  expected = sum(np.prod(p[[0, 1], list(c)]) * float(sc.categorical_cost(
      np.array(c))) for c in itertools.product(range(3), repeat=2))
  keys = jax.random.split(jax.random.PRNGKey(1), NUM_DRAWS)
  values = jax.jit(jax.vmap(lambda k: discrete.straight_through_surrogate(
      sc.categorical_cost, jnp.asarray(logits, jnp.float32),
      dists.Categorical, k, 1)))(keys)
  sc.assert_mean_close(values, expected, max_band=0.05)
  g = draws(STRAIGHT_THROUGH, sc.categorical_cost, logits,
            dists.Categorical, 1)
  bias, se = _bias_and_se(g, sc.categorical_exact())
  assert bias > 10 * se, (bias, se)


def test_straight_through_value_uses_exact_discrete_samples():
  key = jax.random.PRNGKey(0)
  v = discrete.straight_through_surrogate(
      lambda b: jnp.sum(b * (1 - b)), jnp.asarray(sc.BERNOULLI_LOGITS),
      dists.Bernoulli, key, 64)
  assert abs(v) < 1e-6  # b(1-b) = 0 for binary b; relaxed y gives ~0.1.


def test_errors():
  key = jax.random.PRNGKey(0)
  logits = jnp.asarray(sc.BERNOULLI_LOGITS)
  with pytest.raises(TypeError, match='Bernoulli'):
    DISARM(sc.bernoulli_cost, {'mu': 0.0, 'sigma': 1.0},
           lambda p: dists.Normal.from_scale(p['mu'], p['sigma']), key, 1)
  with pytest.raises(ValueError, match='temperature'):
    GUMBEL_SOFTMAX(sc.bernoulli_cost, logits, dists.Bernoulli, key, 1,
                   temperature=-1.0)
  with pytest.raises(ValueError, match='num_samples'):
    DISARM(sc.bernoulli_cost, logits, dists.Bernoulli, key, 0)
