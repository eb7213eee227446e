"""Data-parallel training and moments on 4 CPU-simulated devices.

`--xla_force_host_platform_device_count` acts only before JAX starts, so
each check runs a script in a subprocess and reads one JSON line back.

Tolerances (float32, unit roundoff u = 2^-24 ≈ 6e-8): the mesh changes only
the order in which XLA sums the per-example terms of a batch (a sum over 4
partial sums instead of one); a recursive sum of n terms is exact to n·u
relative to Σ|terms| (Higham, Accuracy and Stability, §4.2), so with the
n ≤ 784 pixels x 20 examples of these bounds a relative 2e-4 (≈ 3 000 u,
above √n·u and well above the ~1e-7 observed) bounds rounding while a
changed step (another batch, other noise: O(1) apart) exceeds it by 10^4.
Parameters move by at most the Adam step lr = 1e-3 per step; 1e-4 (a tenth
of one step) separates rounding (~1e-7 observed) from a different step.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from vae import moments
from vae import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOUND_RTOL, PARAM_ATOL = 2e-4, 1e-4


def run_script(script: str, devices: int = 4) -> dict:
  """Runs `script` with `devices` simulated CPU devices; its RESULT line."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO)
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_force_host_platform_'
                      f'device_count={devices}').strip()
  proc = subprocess.run([sys.executable, '-c', textwrap.dedent(script)],
                        env=env, capture_output=True, text=True, timeout=600,
                        cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [ln for ln in proc.stdout.splitlines()
          if ln.startswith('RESULT ')][-1]
  return json.loads(line[len('RESULT '):])


_TRAIN_SCRIPT = '''
    import dataclasses, json, tempfile
    import jax, numpy as np
    from vae import data, optim, train
    from vae.models import image_vae
    assert jax.device_count() == 4, jax.devices()
    model = image_vae.make(image_vae.ModelConfig(hidden_sizes=(16,),
                                                 latent_dim=3))
    rng = np.random.default_rng(0)
    grey = rng.uniform(0, 1, (200, 784)).astype(np.float32) * 0.6
    fixed = data.Dataset('mnist', (grey > 0.3).astype(np.float32),
                         grey[:20] > 0.3, (grey[:20] > 0.3).astype(
                             np.float32), 'fixed')
    dynamic = data.Dataset('mnist', grey, grey[:20], grey[:20], 'dynamic')
    train.NOISE_AHEAD_STEPS = 1  # The pathwise noise drawn before the scan.
    cases = {
        'pathwise': (fixed, train.TrainConfig(batch_size=20, epochs=2)),
        'score_baseline': (dynamic, train.TrainConfig(
            objective='elbo', estimator='score_moving_average',
            num_samples=2, warmup_steps=5, batch_size=20, epochs=2)),
    }
    opt = optim.OptimizerConfig()
    quiet = lambda _: None

    def fit(dataset, config, devices, folder=None, **kw):
      config = dataclasses.replace(config, devices=devices)
      with tempfile.TemporaryDirectory() as tmp:
        return train.train(model, dataset, opt, config, 0, folder or tmp,
                           log=quiet, **kw)

    def leaves(result):
      return [np.asarray(x, np.float64)
              for x in jax.tree.leaves(result.state.params)]

    def compare(a, b):
      rows = {r['epoch']: r for r in a.history}  # The same epochs.
      bounds = [(rows[s['epoch']][k], s[k]) for s in b.history
                for k in ('train_bound', 'test_bound')]
      return {
          'bound_rel': max(abs(u - v) / abs(u) for u, v in bounds),
          'param_abs': max(float(np.max(np.abs(u - v)))
                           for u, v in zip(leaves(a), leaves(b))),
          'epochs': [len(a.history), len(b.history)]}

    out = {}
    init = model.init(jax.random.fold_in(jax.random.PRNGKey(0), 0),
                      fixed.train.mean(0))
    for name, (dataset, config) in cases.items():
      one, four = fit(dataset, config, 1), fit(dataset, config, 4)
      out[name] = compare(one, four)
      out[name]['moved'] = max(float(np.max(np.abs(u - np.asarray(v))))
                               for u, v in zip(leaves(one),
                                               jax.tree.leaves(init)))
      out[name]['one_device'] = len(jax.tree.leaves(
          four.state.params)[0].devices())
    # Resume: one epoch on 1 device, the second on 4 (and 4 then 4).
    dataset, config = cases['pathwise']
    whole = fit(dataset, config, 1)
    for first, second in ((1, 4), (4, 4)):
      with tempfile.TemporaryDirectory() as folder:
        fit(dataset, config, first, folder, stop_after_epochs=1)
        resumed = fit(dataset, config, second, folder)
      key = f'resume_{first}_{second}'
      out[key] = compare(whole, resumed)
      out[key]['resumed_from'] = resumed.resumed_from
      out[key]['epochs_run'] = len(resumed.history)
    # The epoch is split over the devices: its program all-reduces.
    _, epoch, mesh = train._compiled(
        model, opt, dataclasses.replace(cases['pathwise'][1], devices=4,
                                        epochs=1), 0, 0, 10, (200, 784),
        False)
    out['mesh'] = dict(mesh.shape)
    out['all_reduce'] = 'all-reduce' in epoch.as_text()
    errors = {}
    for devices, batch in ((8, 24), (0, 10), (3, 20)):
      try:
        train.check_devices(train.TrainConfig(batch_size=batch,
                                              devices=devices))
      except ValueError as e:
        errors[f'{devices}_{batch}'] = str(e)
    out['errors'] = errors
    print('RESULT ' + json.dumps(out))
'''


@pytest.fixture(scope='module')
def four_devices():
  return run_script(_TRAIN_SCRIPT)


@pytest.mark.parametrize('case', ['pathwise', 'score_baseline'])
def test_four_devices_train_as_one(four_devices, case):
  """2 epochs with devices=4 equal devices=1 up to float32 rounding."""
  out = four_devices[case]
  assert out['epochs'] == [2, 2]
  assert out['bound_rel'] < BOUND_RTOL, out
  assert out['param_abs'] < PARAM_ATOL, out
  assert out['moved'] > 100 * PARAM_ATOL  # Training changed the parameters.
  assert out['one_device'] == 1  # The caller gets the state on one device.


@pytest.mark.parametrize('first,second', [(1, 4), (4, 4)])
def test_resume_on_four_devices(four_devices, first, second):
  """A run checkpointed after epoch 1 on `first` devices and resumed on
  `second` ends where an uninterrupted 1-device run ends."""
  out = four_devices[f'resume_{first}_{second}']
  assert out['resumed_from'] == 10 and out['epochs_run'] == 1
  assert out['bound_rel'] < BOUND_RTOL, out
  assert out['param_abs'] < PARAM_ATOL, out


def test_the_epoch_is_split_over_the_mesh(four_devices):
  assert four_devices['mesh'] == {'data': 4}
  assert four_devices['all_reduce']


def test_device_errors_are_one_line(four_devices):
  errors = four_devices['errors']
  assert errors['8_24'] == ('devices=8: only 4 cpu device(s) are '
                            'available.')
  assert errors['0_10'] == ('batch_size: 10 is not divisible by the 4 '
                            'devices (devices=0).')
  assert 'not divisible' in errors['3_20']  # The config refuses it first.


def test_config_refuses_a_batch_the_devices_do_not_divide():
  with pytest.raises(ValueError, match='batch_size: 30 is not divisible by '
                     'devices=4'):
    train.TrainConfig(batch_size=30, devices=4)
  assert train.check_devices(train.TrainConfig(devices=1)) == 1


def test_one_device_has_no_mesh():
  assert moments.data_mesh(1) is None
  with pytest.raises(ValueError, match='is not divisible by the 4 devices'):
    moments.default_chunk(10, 1, multiple_of=4)
  assert moments.default_chunk(16, 1, max_chunk=50, multiple_of=4) == 16
  assert moments.default_chunk(48, 10**6, 2**20, multiple_of=4) == 4  # >= 4.


_GAUSSIAN_GRADIENTS_SCRIPT = '''
    import dataclasses, json, tempfile
    import jax
    from experiments import gaussian_gradients as gg
    from experiments.common import runner
    assert jax.device_count() == 4
    base = gg.Config(costs=('square',), square_ks=(0.0, 2.0),
                     sample_counts=(1, 4), estimators=('score', 'pathwise'),
                     num_draws=NUM_DRAWS)
    out = {}
    for n in (1, 4):
      with tempfile.TemporaryDirectory() as folder:
        out[n] = runner.run_point('gaussian_gradients', dataclasses.replace(
            base, devices=n), 0, folder)
    keys = ('cost', 'k', 'estimator', 'param', 'num_samples')
    diff = {'mean': 0.0, 'variance': 0.0, 'same_rows': True}
    for a, b in zip(out[1], out[4]):
      diff['same_rows'] &= [a[k] for k in keys] == [b[k] for k in keys]
      sd = a['variance']**0.5
      diff['mean'] = max(diff['mean'], abs(a['mean'] - b['mean']) / sd)
      diff['variance'] = max(diff['variance'], abs(
          a['variance'] - b['variance']) / a['variance'])
    diff['rows'] = [len(out[1]), len(out[4])]
    print('RESULT ' + json.dumps(diff))
'''


def test_gaussian_gradients_on_four_devices_equal_one():
  """The variance experiment with --devices=4 (the draws split over a mesh)
  gives the moments of --devices=1: the same D draws, summed in another
  order, so each moment differs by at most D·u relative (float32 sums of
  D terms; the mean relative to the draws' sd)."""
  num_draws = 400
  out = run_script(_GAUSSIAN_GRADIENTS_SCRIPT.replace('NUM_DRAWS',
                                                      str(num_draws)))
  assert out['same_rows'] and out['rows'] == [16, 16]
  tolerance = num_draws * 2.0**-24
  assert out['mean'] < tolerance, out
  assert out['variance'] < tolerance, out
