"""Tests for `vae.networks`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae.models import networks


def _num_params(variables) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(variables))


def _shapes(module, x_dim):
  """Parameter shapes, without running (or compiling) the initialisers."""
  return jax.eval_shape(module.init, jax.random.PRNGKey(0),
                        jnp.zeros((1, x_dim)))['params']


def _random_params(module, x_dim, seed=0):
  """Random variables for `module` (like `init`, but nothing to compile)."""
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda s: rng.normal(scale=0.1, size=s.shape).astype(np.float32),
      {'params': _shapes(module, x_dim)})


@pytest.fixture(scope='module')
def burda():
  enc, dec = networks.MLPEncoder(), networks.MLPDecoder()
  return enc, dec, networks.init_vae_params(jax.random.PRNGKey(0), enc, dec)


def test_burda_parameter_counts(burda):
  _, _, params = burda
  # 784-200-200 tanh trunk, then two 200->50 heads (loc, log_scale).
  enc_count = (784 * 200 + 200) + (200 * 200 + 200) + 2 * (200 * 50 + 50)
  # 50-200-200 tanh trunk, then 200->784 logits.
  dec_count = (50 * 200 + 200) + (200 * 200 + 200) + (200 * 784 + 784)
  assert _num_params(params['encoder']) == enc_count == 217_300
  assert _num_params(params['decoder']) == dec_count == 207_984


def test_burda_output_shapes(burda):
  enc, dec, params = burda
  x = jax.random.uniform(jax.random.PRNGKey(1), (3, 5, 784))
  loc, log_scale = jax.jit(enc.apply)(params['encoder'], x)
  assert loc.shape == log_scale.shape == (3, 5, 50)
  assert not np.allclose(loc, log_scale)  # Two separate heads.
  logits = jax.jit(dec.apply)(params['decoder'], loc)
  assert logits.shape == (3, 5, 784) and logits.dtype == jnp.float32


def test_layer_shapes():
  p = _shapes(networks.MLPEncoder(hidden_sizes=(30, 20), latent_dim=4), 10)
  assert p['trunk']['hidden_0']['kernel'].shape == (10, 30)
  assert p['trunk']['hidden_1']['kernel'].shape == (30, 20)
  assert p['loc']['kernel'].shape == p['log_scale']['kernel'].shape == (20, 4)
  p = _shapes(networks.BernoulliEncoder(hidden_sizes=(), latent_dim=7), 784)
  assert _num_params(p) == 784 * 7 + 7  # A single logistic layer.
  p = _shapes(networks.BernoulliEncoder(), 784)  # 784-200-200-200.
  assert _num_params(p) == 784 * 200 + 200 + 2 * (200 * 200 + 200)
  p = _shapes(networks.MLPDecoder(hidden_sizes=(11,), output_dim=9), 3)
  assert p['logits']['kernel'].shape == (11, 9)


def test_bernoulli_latents_and_jit_vmap_grad():
  enc = networks.BernoulliEncoder(hidden_sizes=(16,), latent_dim=7)
  dec = networks.MLPDecoder(hidden_sizes=(16,), output_dim=784)
  params = {'encoder': _random_params(enc, 784),
            'decoder': _random_params(dec, 7)}
  x = np.random.default_rng(1).uniform(size=(6, 784)) > 0.5

  @jax.jit
  def forward(params, x):
    logits = enc.apply(params['encoder'], x)  # Bool input is accepted.
    per_example = jax.vmap(enc.apply, in_axes=(None, 0))(
        params['encoder'], x.astype(jnp.float32))
    z = jax.random.bernoulli(jax.random.PRNGKey(2), jax.nn.sigmoid(logits))
    return (logits, per_example, dec.apply(params['decoder'], z),
            dec.apply(params['decoder'], z.astype(jnp.float32)))

  logits, per_example, out_bool, out_float = forward(params, x)
  assert logits.shape == (6, 7) and out_bool.shape == (6, 784)
  np.testing.assert_allclose(logits, per_example, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out_bool, out_float)

  def loss(p):
    return jnp.sum(dec.apply(p['decoder'], jnp.tanh(
        enc.apply(p['encoder'], x))) ** 2)

  grads = jax.jit(jax.grad(loss))(params)
  leaves = jax.tree_util.tree_leaves(grads)
  assert all(np.all(np.isfinite(g)) and np.any(g != 0) for g in leaves)
  assert _num_params(grads) == _num_params(params)


def test_output_bias_init(burda):
  _, _, params = burda  # Default: zeros.
  np.testing.assert_array_equal(
      params['decoder']['params']['logits']['bias'], 0.0)

  mean = np.linspace(0.0, 1.0, 784)
  dec = networks.MLPDecoder(
      hidden_sizes=(8,), output_bias_init=networks.mean_logit_init(mean))
  params = jax.jit(dec.init)(jax.random.PRNGKey(0),
                             jnp.zeros((1, 3)))['params']
  bias = np.asarray(params['logits']['bias'], np.float64)
  clipped = np.clip(mean, 1e-3, 1 - 1e-3)
  np.testing.assert_allclose(bias, np.log(clipped / (1 - clipped)),
                             rtol=1e-5, atol=1e-5)
  # sigmoid(bias): the decoder's output when its last layer's weights are 0.
  np.testing.assert_allclose(1 / (1 + np.exp(-bias)), clipped, atol=1e-6)
  assert np.any(params['logits']['kernel'] != 0)  # Weights still random.
  hash(dec)  # Stays hashable, e.g. as a static argument of jax.jit.


def test_mean_logit_init_checks_shape():
  dec = networks.MLPDecoder(
      output_dim=10, output_bias_init=networks.mean_logit_init(np.ones(784)))
  with pytest.raises(ValueError, match='shape'):
    jax.eval_shape(dec.init, jax.random.PRNGKey(0), jnp.zeros((1, 3)))


@pytest.mark.parametrize('name', ['tanh', 'relu', 'elu', 'softplus'])
def test_activation_by_name(name):
  fn = networks.get_activation(name)
  x = np.linspace(-3.0, 3.0, 7, dtype=np.float32)
  expected = dict(tanh=np.tanh(x), relu=np.maximum(x, 0),
                  elu=np.where(x > 0, x, np.expm1(x)),
                  softplus=np.log1p(np.exp(x)))[name]
  np.testing.assert_allclose(fn(x), expected, rtol=1e-5, atol=1e-6)


def test_activation_is_used_in_the_network():
  enc = networks.MLPEncoder(hidden_sizes=(5,), latent_dim=2,
                            activation='relu')
  params = _random_params(enc, 3)
  x = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
  loc, _ = jax.jit(enc.apply)(params, x)
  p = params['params']
  h = np.maximum(x @ p['trunk']['hidden_0']['kernel']
                 + p['trunk']['hidden_0']['bias'], 0)
  assert np.any(h == 0) and np.any(h > 0)  # Both sides of the kink.
  np.testing.assert_allclose(loc, h @ p['loc']['kernel'] + p['loc']['bias'],
                             rtol=1e-5, atol=1e-5)


def test_unknown_activation_raises():
  with pytest.raises(ValueError, match=r"unknown activation 'tahn'.*tanh"):
    networks.get_activation('tahn')
  with pytest.raises(ValueError, match='unknown activation'):
    jax.eval_shape(networks.MLPEncoder(activation='tahn').init,
                   jax.random.PRNGKey(0), jnp.zeros((1, 784)))
