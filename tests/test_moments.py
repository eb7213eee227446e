"""vae.moments against numpy on the same draws, a closed form, 4 devices.

The mesh check runs in a subprocess: `--xla_force_host_platform_device_count`
acts only before JAX starts.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae import moments
from vae import stats

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MU, SIGMA = np.array([1.0, -2.0, 0.5]), np.array([0.5, 2.0, 3.0])
REF = np.array([[1.0, 0.0], [2.0, -1.0]], np.float32)


def estimate(key):
  """A pytree draw: {'x': N(μ, σ²) [3], 'y': [2, 2] from an exponential}."""
  kx, ky = jax.random.split(key)
  return {'x': MU + SIGMA * jax.random.normal(kx, (3,)),
          'y': jax.random.exponential(ky, (2, 2)) * jnp.arange(1.0, 5.0
                                                               ).reshape(2, 2)}


def numpy_draws(key, num_draws):
  """The same D draws, in the order `moments` takes them, as float64."""
  keys = jax.random.split(key, num_draws)
  return jax.tree.map(lambda a: np.asarray(a, np.float64),
                      jax.vmap(estimate)(keys))


@pytest.mark.parametrize('chunk', [1, 6])  # None: test_sigmoid_belief_net.
def test_moments_equal_numpy_on_the_same_draws(chunk):
  key, d = jax.random.PRNGKey(3), 24
  out = jax.jit(lambda k: moments.moments(
      estimate, k, d, chunk=chunk, order=4,
      reference={'x': jnp.ones(3), 'y': REF}))(key)
  draws = numpy_draws(key, d)
  for name, x in draws.items():
    m = x.mean(0)
    np.testing.assert_allclose(out['mean'][name], m, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out['variance'][name], x.var(0, ddof=1),
                               rtol=1e-4)
    np.testing.assert_allclose(out['m4'][name], ((x - m)**4).mean(0),
                               rtol=1e-3)
    ref = np.ones(3) if name == 'x' else REF.ravel()
    flat = x.reshape(d, -1)
    cos = flat @ ref / (np.linalg.norm(flat, axis=1) * np.linalg.norm(ref))
    np.testing.assert_allclose(out['cosine'][name], cos.mean(), rtol=1e-5)


def test_variance_agrees_with_the_closed_form():
  # x ~ N(μ, σ²): Var = σ², μ4 = 3σ⁴; 4000 draws, chunks of 100 merged.
  d = 4000
  out = jax.jit(lambda k: moments.moments(estimate, k, d, chunk=100))(
      jax.random.PRNGKey(0))
  z = stats.variance_z(out['variance']['x'], SIGMA**2, 3 * SIGMA**4, d,
                       mean=MU)
  assert np.max(np.abs(z)) < stats.z_threshold(3), z
  zm = stats.mean_z(out['mean']['x'], MU, SIGMA, d)
  assert np.max(np.abs(zm)) < stats.z_threshold(3), zm


def test_zero_reference_gives_zero_cosine_and_constants_zero_variance():
  out = moments.moments(lambda k: {'c': jnp.full((2,), 5.0)},
                        jax.random.PRNGKey(0), 6, chunk=2,
                        reference={'c': jnp.zeros(2)})
  np.testing.assert_allclose(out['variance']['c'], 0.0, atol=1e-6)
  np.testing.assert_allclose(out['mean']['c'], 5.0)
  assert float(out['cosine']['c']) == 0.0


def test_bad_arguments_raise():
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match='num_draws must be >= 2'):
    moments.moments(estimate, key, 1)
  with pytest.raises(ValueError, match='order must be 2 or 4'):
    moments.moments(estimate, key, 4, order=3)
  with pytest.raises(ValueError, match='must divide'):
    moments.moments(estimate, key, 10, chunk=3)


def test_default_chunk_is_a_divisor_within_budget():
  assert moments.default_chunk(200, 16 * 784) == 50
  assert moments.default_chunk(200, 16 * 20 * 784) == 25
  assert moments.default_chunk(7, 10) == 7
  assert moments.default_chunk(97, 16 * 20 * 784) == 1  # prime.


_MESH_SCRIPT = textwrap.dedent('''
    import json
    import jax
    import jax.numpy as jnp
    from vae import moments
    assert jax.device_count() == 4, jax.devices()
    w = jax.random.normal(jax.random.PRNGKey(1), (8, 5))

    def estimate(key):  # A gradient-like draw: matmuls of sampled inputs.
      x = jax.random.normal(key, (3, 8))
      return {'g': jnp.tanh(x @ w).sum(0), 'h': (x**2).mean()}

    mesh = moments.make_mesh()
    ref = {'g': jnp.ones(5), 'h': jnp.ones(())}
    fn = lambda k, mesh: moments.moments(estimate, k, 16, chunk=8,
                                         reference=ref, mesh=mesh)
    one = jax.jit(lambda k: fn(k, None))(jax.random.PRNGKey(5))
    four = jax.jit(lambda k: fn(k, mesh))(jax.random.PRNGKey(5))
    diff = max(float(jnp.max(jnp.abs(a - b) / (jnp.abs(a) + 1e-6)))
               for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(four)))
    hlo = jax.jit(lambda k: fn(k, mesh)).lower(
        jax.random.PRNGKey(5)).compile().as_text()
    print('RESULT ' + json.dumps({
        'mesh': dict(mesh.shape), 'rel_diff': diff,
        'all_reduce': 'all-reduce' in hlo}))
''')


def test_moments_over_a_four_device_mesh_equal_one_device():
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                      ' --xla_force_host_platform_device_count=4').strip()
  proc = subprocess.run([sys.executable, '-c', _MESH_SCRIPT], env=env,
                        capture_output=True, text=True, timeout=300,
                        cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [ln for ln in proc.stdout.splitlines()
          if ln.startswith('RESULT ')][-1]
  out = json.loads(line[len('RESULT '):])
  assert out['mesh'] == {'data': 4}
  assert out['rel_diff'] < 1e-5
  assert out['all_reduce']  # The draws were split over the devices.
