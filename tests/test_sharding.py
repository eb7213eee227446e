"""Tests for vae.sharding: sharded steps equal single-device ones (4 devices).

`--xla_force_host_platform_device_count` only acts before JAX starts, so the
multi-device check runs in a subprocess that compares the sharded results
with single-device results computed in the same subprocess.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from vae import sharding

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = textwrap.dedent("""
    import json
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from vae import sharding
    from vae.models import image_vae

    assert jax.device_count() == 4, jax.devices()
    model = image_vae.burda_vae(latent_dim=3, hidden_sizes=(8,), data_dim=16)
    params = model.init(jax.random.PRNGKey(0))
    x = (np.random.default_rng(0).random((8, 16)) < 0.3).astype(np.float32)
    opt = optax.adam(1e-2)
    mesh = sharding.make_mesh()
    out = {'mesh': dict(mesh.shape)}

    def maxdiff(a, b):
      d = jax.tree.map(lambda u, v: float(jnp.max(jnp.abs(u - v))), a, b)
      return max(jax.tree.leaves(d))

    def num_shards(a):
      return len({s.device for s in a.addressable_shards})

    # One train step, twice.
    step = sharding.train_step_fn(model, opt)
    single = sharding.jit_train_step(step, None, donate=False)
    sharded = sharding.jit_train_step(step, mesh, donate=False)
    p1, o1 = params, opt.init(params)
    p4, o4 = sharding.replicate((params, opt.init(params)), mesh)
    xs = sharding.shard_batch(x, mesh)
    out['batch_shard_shapes'] = [list(s.data.shape)
                                 for s in xs.addressable_shards]
    losses = []
    for t in range(2):
      key = jax.random.PRNGKey(10 + t)
      p1, o1, l1 = single(p1, o1, x, key)
      p4, o4, l4 = sharded(p4, o4, xs, key)
      losses.append([float(l1), float(l4)])
    out['step_losses'] = losses
    out['step_param_maxdiff'] = maxdiff(p1, p4)
    out['step_param_devices'] = num_shards(jax.tree.leaves(p4)[0])
    leaf = jax.tree.leaves(p4)[0]
    out['step_param_replicated'] = leaf.sharding.is_fully_replicated

    # A fused multi-step scan over [S, B, D] batches, split along axis 1.
    multi = sharding.multi_step_fn(step)
    xb = np.stack([x, x[::-1]])
    a = sharding.jit_train_step(multi, None, 1, donate=False)(
        params, opt.init(params), xb, jax.random.PRNGKey(3))
    b = sharding.jit_train_step(multi, mesh, 1, donate=False)(
        *sharding.replicate((params, opt.init(params)), mesh),
        sharding.shard_batch(xb, mesh, 1), jax.random.PRNGKey(3))
    out['multi_loss_maxdiff'] = maxdiff(a[2], b[2])
    out['multi_param_maxdiff'] = maxdiff(a[0], b[0])

    # Gradient moments with the draw axis split over the devices.
    keys = sharding.draw_keys(jax.random.PRNGKey(5), 16, 8)
    m1 = sharding.jit_gradient_moments(sharding.gradient_moments_fn(model))(
        params, x, keys)
    fn4 = sharding.gradient_moments_fn(model, mesh=mesh)
    m4 = sharding.jit_gradient_moments(fn4, mesh)(params, x, keys)
    out['moments_rel_maxdiff'] = max(
        float(jnp.max(jnp.abs(m1[g][k] - m4[g][k])) /
              jnp.max(jnp.abs(m1[g][k])))
        for g in sharding.GROUPS for k in ('mean', 'variance'))
    out['moments_num_draws'] = float(m4['num_draws'])
    hlo = jax.jit(fn4, in_shardings=(
        sharding.replicated_sharding(mesh),) * 2 + (
            sharding.data_sharding(mesh, 1),)).lower(
                params, x, keys).compile().as_text()
    out['moments_hlo_has_all_reduce'] = 'all-reduce' in hlo

    try:
      sharding.shard_batch(x[:6], mesh)
      out['indivisible_raises'] = False
    except ValueError:
      out['indivisible_raises'] = True
    print('RESULT ' + json.dumps(out))
""")


@pytest.fixture(scope='module')
def four_devices():
  env = dict(os.environ)
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') +
                      ' --xla_force_host_platform_device_count=4').strip()
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONPATH'] = os.pathsep.join(
      [REPO_ROOT] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
  proc = subprocess.run([sys.executable, '-c', _SCRIPT], env=env,
                        capture_output=True, text=True, timeout=900,
                        cwd=REPO_ROOT)
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')][-1]
  return json.loads(line[len('RESULT '):])


def test_batch_is_split_over_four_devices(four_devices):
  assert four_devices['mesh'] == {'data': 4}
  assert four_devices['batch_shard_shapes'] == [[2, 16]] * 4
  assert four_devices['indivisible_raises']


def test_sharded_train_step_equals_single_device(four_devices):
  for single, sharded in four_devices['step_losses']:
    assert sharded == pytest.approx(single, rel=1e-5)
  assert four_devices['step_param_maxdiff'] < 1e-5
  assert four_devices['step_param_devices'] == 4
  assert four_devices['step_param_replicated']


def test_sharded_multi_step_equals_single_device(four_devices):
  assert four_devices['multi_loss_maxdiff'] < 1e-3
  assert four_devices['multi_param_maxdiff'] < 1e-5


def test_sharded_gradient_moments_equal_single_device(four_devices):
  assert four_devices['moments_num_draws'] == 16
  assert four_devices['moments_rel_maxdiff'] < 1e-4
  assert four_devices['moments_hlo_has_all_reduce']


@pytest.mark.parametrize('env, expected', [
    ({}, False),
    ({'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '1'}, False),
    ({'SLURM_JOB_ID': '7', 'SLURM_NTASKS': '4'}, True),
    ({'SLURM_NTASKS': '4'}, False),
    ({'JAX_COORDINATOR_ADDRESS': '10.0.0.1:1234'}, True),
    ({'OMPI_COMM_WORLD_SIZE': '2'}, True),
    ({'OMPI_COMM_WORLD_SIZE': 'x'}, False),
])
def test_cluster_env_detected(env, expected):
  assert sharding.cluster_env_detected(env) is expected


def test_maybe_initialize_distributed(monkeypatch):
  calls = []
  monkeypatch.setattr(sharding.jax.distributed, 'initialize',
                      lambda **kw: calls.append(kw))
  assert not sharding.maybe_initialize_distributed({})
  assert not calls
  assert sharding.maybe_initialize_distributed(
      {'JAX_COORDINATOR_ADDRESS': 'h:1', 'JAX_NUM_PROCESSES': '2',
       'JAX_PROCESS_ID': '1'})
  assert calls[-1] == {'coordinator_address': 'h:1', 'num_processes': 2,
                       'process_id': 1}
  assert sharding.maybe_initialize_distributed(
      {'SLURM_JOB_ID': '3', 'SLURM_NTASKS': '2'}, local_device_ids=[0])
  assert calls[-1] == {'local_device_ids': [0]}  # Slurm: JAX finds the rest.


def test_single_device_mesh_helpers():
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh(jax.devices()[:1])
  x = sharding.shard_batch(np.ones((4, 3), np.float32), mesh)
  assert x.shape == (4, 3) and x.sharding.spec == sharding.batch_spec()
  tree = sharding.replicate({'a': np.zeros(2)}, mesh)
  assert tree['a'].sharding.is_fully_replicated
  assert sharding.batch_spec(1) == sharding.P(None, 'data')
  with pytest.raises(ValueError, match='must divide'):
    sharding.draw_keys(jax.random.PRNGKey(0), 10, 3)
