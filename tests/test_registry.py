"""Tests for vae.registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae import distributions as dists
from vae.estimators import registry


def test_every_estimator_runs_under_jit_with_the_common_signature():
  key = jax.random.PRNGKey(0)
  for name in registry.names('expectation', stateless=True):
    info = registry.lookup(name)
    if 'continuous' not in info.latents:
      params, builder, f = jnp.array([0.2, -0.3]), dists.Bernoulli, lambda b: jnp.sum(b**2)
    else:
      params = {'loc': jnp.array([0.2, -0.3]), 'log_scale': jnp.zeros(2)}
      builder = lambda p: dists.Normal(p['loc'], p['log_scale'])
      f = lambda z: jnp.sum(z**2)
    g = jax.jit(registry.get(name), static_argnums=(0, 2, 4))(
        f, params, builder, key, max(info.min_samples, 2))
    assert jax.tree_util.tree_structure(g) == jax.tree_util.tree_structure(params)
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(g))


def test_flags_are_consistent():
  assert not registry.ESTIMATORS['gumbel_softmax'].unbiased
  assert not registry.ESTIMATORS['straight_through'].unbiased
  assert registry.ESTIMATORS['score_rloo'].min_samples == 2
  continuous = registry.names(latents='continuous')
  discrete = registry.names(latents='discrete')
  assert 'pathwise' in continuous and 'pathwise' not in discrete
  assert 'disarm' in discrete and 'score' in discrete


def test_unknown_name():
  with pytest.raises(ValueError, match='choose from'):
    registry.get('nope')
