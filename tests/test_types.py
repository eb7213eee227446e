"""Tests for vae.types.pytree_dataclass."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from vae import types


@types.pytree_dataclass
class Pair:
  a: jax.Array
  name: str = types.static_field(default='p')


def test_leaves_and_static_fields():
  p = Pair(jnp.ones(2), name='x')
  leaves, treedef = jax.tree_util.tree_flatten(p)
  assert len(leaves) == 1
  doubled = jax.tree_util.tree_map(lambda v: 2 * v, p)
  assert doubled.name == 'x' and float(doubled.a[0]) == 2.0
  assert jax.jit(lambda q: q.a.sum())(p) == 2.0
  with pytest.raises(dataclasses.FrozenInstanceError):
    p.a = jnp.zeros(2)
