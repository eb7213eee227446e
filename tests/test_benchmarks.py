"""The benchmarks at tiny sizes (structure and agreement, not speed)."""

import io
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from benchmarks import common
from benchmarks import iaf_inversion
from benchmarks import importance_sampling
from benchmarks import moments as moments_benchmark
from benchmarks import train_throughput
from vae import evaluate
from vae import importance
from vae import moments
from vae import optim
from vae import train
from vae.models import image_vae

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def tiny():
  """A small VAE on 32-pixel binary data."""
  model = image_vae.burda_vae(latent_dim=3, hidden_sizes=(8,), data_dim=32)
  x = (np.random.default_rng(0).random((40, 32)) < 0.3).astype(np.float32)
  return model, x


def quiet():
  return common.Reporter('test', stream=io.StringIO())


def test_flop_counts_are_the_issue_formulas():
  assert common.encoder_flops() == 2 * (784 * 200 + 200 * 200 + 200 * 100)
  assert common.decoder_flops() == 2 * (50 * 200 + 200 * 200 + 200 * 784)
  # Forward, weight and input gradients; no input gradient of the data.
  assert common.train_flops_per_example() == (
      3 * (433_600 + 413_600) - 2 * 784 * 200)
  assert importance_sampling.flops(10_000, 5_000) == pytest.approx(
      10_000 * (433_600 + 5_000 * 413_600))
  assert common.arch(common.burda_model()) == dict(
      data_dim=784, hidden=(200, 200), latent=50)


def test_timing_helpers_and_ratios():
  calls = []
  t = common.time_fn(lambda: calls.append(1) or jnp.ones(3), repeats=2)
  assert len(calls) == 3 and len(t.times) == 2 and t.compile_s >= 0
  assert t.min <= t.median
  ts = common.time_interleaved({'a': lambda: jnp.ones(2),
                                'b': lambda: jnp.zeros(2)}, rounds=2)
  assert set(ts) == {'a', 'b'} and all(len(v.cpu_times) == 2
                                       for v in ts.values())
  peak = common.matmul_peak(64, repeats=1)
  assert peak['gflops'] > 0 and peak['gflops_best'] >= peak['gflops']
  # 2 GFLOP at a 1 GFLOP/s peak is a 2 s bound; 3 s is 1.5× of it.
  r = common.ratios(common.Timing((3.0, 4.0, 3.0), cpu_times=(6.0,)), 2e9,
                    {'gflops': 1.0, 'gflops_best': 2.0,
                     'gflops_per_cpu_s': 0.5})
  assert r['flop_bound_s'] == 2.0 and r['ratio_to_bound'] == 1.5
  assert r['ratio_to_bound_best'] == 3.0 and r['ratio_to_bound_cpu'] == 1.5


def test_reporter_prints_one_line_per_result_and_saves(tmp_path):
  stream = io.StringIO()
  rep = common.Reporter('bench', str(tmp_path / 'r.json'), stream=stream)
  rep.result('case', speed=1.5, ok=True)
  rep.save()
  assert stream.getvalue().startswith('bench/case: speed=1.5 ok=True ')
  saved = json.loads((tmp_path / 'r.json').read_text())
  assert saved['results'][0]['case'] == 'case'
  assert saved['machine']['cores'] >= 1 and 'load_avg' in saved['machine']


def test_per_example_loss_equals_the_library_loss(tiny):
  model, x = tiny
  params = model.init(jax.random.PRNGKey(0))
  key, b = jax.random.PRNGKey(1), jnp.float32(0.0)
  grad = lambda loss: jax.value_and_grad(lambda p: loss(p, x, key, b)[0])(
      params)
  ours, lib = jax.jit(lambda: (
      grad(train_throughput.per_example_loss(model)),
      grad(train_throughput.surrogate_loss(model))))()
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-4,
                                                       atol=1e-5), ours, lib)


def test_fit_mesh_epoch_and_plain_loops_train_the_same(tiny):
  """One epoch: `optim.fit`, per-batch steps; the trainer's epoch with and
  without a (one-device) mesh.

  The mesh has one device here, so this checks the mesh program's
  arithmetic, not a split across devices (tests/test_devices.py does that
  on 4 simulated devices).
  """
  model, x = tiny
  opt = optax.adam(1e-2)
  state = lambda: optim.init_state(model.init(jax.random.PRNGKey(0)), opt)
  key = jax.random.PRNGKey(1)
  fused, _ = train_throughput.fit_fn(model, opt, 8, 0)(state(), x, 0, key)
  plain = train_throughput.plain_runner(model, opt, x, 8)()
  jax.tree.map(lambda u, v: np.testing.assert_allclose(
      u, v, rtol=1e-4, atol=1e-5), fused.params, plain)
  config = train.TrainConfig(batch_size=8)
  one, _ = train.make_epoch(model, opt, config, 0, False)(state(), x, 0)
  mesh = moments.make_mesh(jax.devices()[:1])
  meshed, _ = train.make_epoch(model, opt, config, 0, False, mesh)(
      *train.replicate((state(), x), mesh), 0)
  jax.tree.map(lambda u, v: np.testing.assert_allclose(
      u, v, rtol=1e-5, atol=1e-6), one.params, meshed.params)
  moved = jax.tree.map(lambda u, v: float(np.max(np.abs(u - v))),
                       one.params, state().params)
  assert max(jax.tree.leaves(moved)) > 1e-3


def test_train_throughput_benchmark(tiny):
  model, x = tiny
  out = train_throughput.benchmark(x, batch_size=8,
                                   cases=('fused', 'matmuls'), rounds=1,
                                   model=model, peak_n=64, reporter=quiet())
  rec = out['fused']
  assert rec['examples_per_s'] > 0 and rec['gflops'] > 0
  assert rec['peak_fraction'] > 0 and rec['steps'] == 5
  assert train_throughput.targets(out)['fused_vs_matmuls'] > 0
  with pytest.raises(ValueError, match='unknown cases'):
    train_throughput.benchmark(x, cases=('nope',), model=model,
                               reporter=quiet())


def test_plain_scan_peer_maximizes_the_same_elbo(tiny):
  """The hand-written peer's loss is the negated pathwise ELBO: after two
  epochs from the same start its mean test ELBO is within a few nats of
  the library trainer's (both improve on the initial one)."""
  model, x = tiny
  opt = optax.adam(1e-2)
  params = model.init(jax.random.PRNGKey(0))
  epoch = train_throughput.plain_scan_epoch(model, opt, 8, 0)
  state = (params, opt.init(params))
  for e in range(2):
    state = epoch(*state, jnp.asarray(x), jnp.int32(e), jax.random.PRNGKey(1))
  bound = lambda p: evaluate.mean_bound(model, p, x, jax.random.PRNGKey(2),
                                        'elbo', 20)
  assert bound(state[0]) > bound(params) + 1.0


def test_train_throughput_targets_on_known_figures():
  rec = lambda s, cpu, **kw: dict(epoch_s=s, epoch_cpu_s=cpu, **kw)
  out = {'fused': rec(1.0, 2.0, peak_fraction=0.7, peak_fraction_best=0.8,
                      peak_fraction_cpu=0.6),
         'numpyro_scan': rec(1.5, 2.0), 'numpyro': rec(1.1, 3.0),
         'plain': rec(2.0, 4.0)}
  v = train_throughput.targets(out)
  assert v['vs_numpyro_scan'] == 1.5 and v['met_1.2x_numpyro_scan']
  assert v['vs_numpyro_scan_cpu'] == 1.0
  assert v['best_peer'] == 'numpyro' and v['vs_best_peer'] == 1.1
  assert v['met_0.65_peak'] and v['peak_fraction_cpu'] == 0.6
  out['fused']['peak_fraction'] = 0.5
  assert not train_throughput.targets(out)['met_0.65_peak']
  out['fused']['examples_per_s_best'] = 100.0
  out['plain_scan'] = rec(0.95, 2.5, examples_per_s_best=110.0)
  v = train_throughput.targets(out)
  assert v['vs_plain_scan'] == pytest.approx(0.95)
  assert not v['met_1.0x_plain_scan'] and v['best_peer'] == 'plain_scan'
  assert v['vs_plain_scan_best'] == pytest.approx(100 / 110)


def test_moments_benchmark_cases_agree(tiny):
  model, x = tiny
  out = moments_benchmark.benchmark(x[:8], num_draws=6, chunk=3, rounds=1,
                                    model=model, peak_n=64, reporter=quiet())
  for case in moments_benchmark.CASES:
    rec = out[case]
    assert rec['draws_per_s'] > 0 and rec['ratio_to_bound'] > 0
    assert rec['total_variance_encoder'] > 0
  for case in ('scan', 'vmapped'):  # Same keys: same moments as the loop.
    assert out[case]['rel_diff_total_variance'] < 1e-4
    assert out[case]['compile_s'] > 0 and out[case]['vs_loop'] > 0
  verdict = moments_benchmark.targets(out)
  assert verdict['judged'] in ('scan', 'vmapped')
  assert isinstance(verdict['met_within_1.5x_bound'], bool)


def test_importance_sampling_plain_equals_chunked_with_one_chunk(tiny):
  model, x = tiny
  params = model.init(jax.random.PRNGKey(0))
  key = jax.random.PRNGKey(3)
  a = importance_sampling.plain_log_likelihood(model, params, x[:4], key, 16)
  b = importance.importance_batch(model, params, x[:4], key, num_samples=16,
                                 chunk_size=16)['log_px']
  np.testing.assert_allclose(a, b, rtol=1e-5)


def test_importance_sampling_benchmark(tiny):
  model, x = tiny
  out = importance_sampling.benchmark(x[:8], num_samples=8, batch=4, chunk=4,
                                      plain_batch=2, eval_batch=4,
                                      eval_chunk=4, rounds=1, model=model,
                                      peak_n=64, reporter=quiet())
  for case in importance_sampling.CASES:
    rec = out[case]
    assert rec['seconds'] > 0 and rec['flop_bound_s'] > 0
    assert rec['ratio_to_bound'] > 0 and np.isfinite(
        rec['mean_log_likelihood'])
  verdict = importance_sampling.targets(out)
  assert verdict['vs_best_peer_plain'] > 0
  assert isinstance(verdict['met_within_1.5x_bound_evaluate'], bool)


def test_iaf_inversion_benchmark_cases_give_the_same_gradients(tiny):
  """Early-stopped inversion with implicit gradients and the 50-pass loop
  differentiated through: one training step's gradients agree."""
  _, x = tiny
  out = iaf_inversion.benchmark(x[:8], batch=4, components=3, rounds=1,
                                peak_n=64, reporter=quiet())
  assert out['fixed']['ratio_to_bound'] > 0
  assert out['targets']['met_gradients_agree'], out['targets']
  assert out['targets']['speedup_vs_fixed'] > 0


def test_main_prints_the_targets(tmp_path, capsys):
  path = tmp_path / 'm.json'
  assert moments_benchmark.main([
      '--dataset=synthetic', '--num_draws=4', '--batch_size=4',
      '--repeats=1', '--hidden_sizes=8', '--latent_dim=3', '--peak_n=64',
      '--cases=scan', f'--output={path}']) == 0
  lines = capsys.readouterr().out.splitlines()
  assert any(ln.startswith('moments/scan: ') for ln in lines)
  assert any(ln.startswith('moments/targets: judged=scan') for ln in lines)
  assert json.loads(path.read_text())['results'][1]['num_draws'] == 4


def test_burda_training_trains_within_its_budget_and_evaluates(capsys):
  from benchmarks import burda_training  # pylint: disable=g-import-not-at-top
  assert burda_training.main([
      '--dataset=synthetic', '--k=1', '--budget_s=1', '--num_train=40',
      '--batch_size=20', '--hidden_sizes=8', '--latent_dim=2',
      '--num_eval=10', '--eval_k=10', '--eval_batch=10',
      '--eval_chunk=10']) == 0
  line = [ln for ln in capsys.readouterr().out.splitlines()
          if ln.startswith('burda_training/vae_k1: ')][0]
  fields = dict(f.split('=', 1) for f in line.split(': ', 1)[1].split())
  assert int(fields['passes']) >= 1 and fields['passes_total'] == '3280'
  assert float(fields['test_nll']) > 0


def test_the_gpu_path_reads_the_cache_without_tensorflow(tmp_path):
  # A fresh interpreter (the GPU machine has no TensorFlow): import the
  # training benchmark and read binarized MNIST from a numpy cache.
  code = (
      'import sys; import numpy as np; from benchmarks import burda_training; '
      'from vae import data; x = np.zeros((4, 784), np.uint8); '
      f"data._write_cache('{tmp_path}/binarized_mnist.npz', 'binarized_mnist', "
      "dict(train=x, validation=x, test=x)); "
      f"ds = data.load_dataset('binarized_mnist', cache_dir='{tmp_path}'); "
      'assert ds.train.shape == (4, 784); '
      "print(sorted(m for m in sys.modules if m.split('.')[0] in "
      "('tensorflow', 'tensorflow_datasets')))")
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, check=True, cwd=ROOT).stdout
  assert out.strip().splitlines()[-1] == '[]'


def test_missing_data_stops_in_one_line(tmp_path, monkeypatch):
  monkeypatch.delenv('VAE_DATA_CACHE', raising=False)
  monkeypatch.delenv('VAE_MANUAL_DIR', raising=False)
  args = common.make_parser('doc', ('a',)).parse_args(
      ['--tfds_data_dir', str(tmp_path)])
  with pytest.raises(SystemExit) as e:
    common.load_images(args, 'train', 5)
  message = str(e.value)
  assert message.startswith('binarized_mnist not found') and '\n' not in message
  assert message.endswith('(or --dataset=synthetic, --allow_synthetic)')
