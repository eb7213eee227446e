"""Smoke tests of the benchmarks at tiny sizes (structure, not speed)."""

import importlib.util
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from benchmarks import common
from benchmarks import gradient_variance
from benchmarks import importance_sampling
from benchmarks import train_throughput
from vae.models import image_vae

HAS_NUMPYRO = importlib.util.find_spec('numpyro') is not None


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
  assert common.train_flops_per_example() == 3 * (433_600 + 413_600)
  assert importance_sampling.flops(10_000, 5_000) == pytest.approx(
      10_000 * (433_600 + 5_000 * 413_600))


def test_timing_helpers():
  calls = []
  t = common.time_fn(lambda: calls.append(1) or jnp.ones(3), repeats=2)
  assert len(calls) == 3 and len(t.times) == 2 and t.compile_s >= 0
  assert t.min <= t.median
  ts = common.time_interleaved({'a': lambda: jnp.ones(2),
                                'b': lambda: jnp.zeros(2)}, rounds=2)
  assert set(ts) == {'a', 'b'} and all(len(v.times) == 2 for v in ts.values())
  assert all(len(v.cpu_times) == 2 and v.cpu_median >= 0
             for v in ts.values())
  peak = common.matmul_peak(64, repeats=1)
  assert peak['gflops'] > 0 and peak['gflops_best'] >= peak['gflops']
  assert peak['gflops_per_cpu_s'] > 0


def test_reporter_prints_one_line_per_result_and_saves(tmp_path):
  stream = io.StringIO()
  rep = common.Reporter('bench', str(tmp_path / 'r.json'), stream=stream)
  rep.result('case', speed=1.5, ok=True)
  rep.save()
  assert stream.getvalue().startswith('bench/case: speed=1.5 ok=True ')
  saved = json.loads((tmp_path / 'r.json').read_text())
  assert saved['results'][0]['case'] == 'case'
  assert saved['machine']['cores'] >= 1 and 'load_avg' in saved['machine']


def test_batch_elbo_loss_equals_the_library_loss(tiny):
  model, x = tiny
  params = model.init(jax.random.PRNGKey(0))
  key = jax.random.PRNGKey(1)
  ours = jax.jit(jax.value_and_grad(lambda p: train_throughput.batch_elbo_loss(
      model, p, x, key)))(params)
  lib = jax.jit(jax.value_and_grad(lambda p: -image_vae.batch_surrogate(
      model, p, x, key, 'elbo', 'pathwise', 1)))(params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-5), ours, lib)


def test_fused_and_plain_loops_train_the_same(tiny):
  """One epoch fused (scan) and plain (Python loop) give the same params."""
  model, x = tiny
  opt = optax.adam(1e-2)
  p0 = model.init(jax.random.PRNGKey(0))
  fused = train_throughput.fused_epoch_fn(model, opt, batch_size=8)
  pf, _, losses = fused(p0, opt.init(p0), jnp.asarray(x), 0, 0,
                        jax.random.PRNGKey(1))
  assert losses.shape == (5,)
  p0 = model.init(jax.random.PRNGKey(0))
  step = train_throughput.plain_step_fn(model, opt)
  pp, o = p0, opt.init(p0)
  key = jax.random.fold_in(jax.random.PRNGKey(1), 0)
  from vae import data as data_lib  # pylint: disable=g-import-not-at-top
  for t, batch in enumerate(data_lib.batch_iterator(x, 8, 0, 0)):
    pp, o, _ = step(pp, o, batch, key, t)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-5), pf, pp)


def test_train_throughput_benchmark(tiny):
  model, x = tiny
  # fused_batch_loss and numpyro_scan only recombine the parts tested here
  # (and compiling them would double the test's time).
  cases = ('fused', 'plain', 'numpyro') if HAS_NUMPYRO else ('fused', 'plain')
  out = train_throughput.benchmark(x, batch_size=8, cases=cases, rounds=1,
                                   model=model, peak_n=64, reporter=quiet())
  for case in cases:
    assert out[case]['examples_per_s'] > 0 and out[case]['gflops'] > 0
    assert out[case]['peak_fraction'] > 0 and out[case]['steps'] == 5
    assert out[case]['peak_fraction_cpu'] > 0
  for case in cases[1:]:
    assert out[case]['fused_speedup'] > 0
  assert out['fused']['step_fn'] == 'vae.training.make_train_epoch'
  assert out['plain']['step_fn'] == 'jit(vae.training.make_train_step)'
  verdict = train_throughput.targets(out, 'fused')
  assert verdict['peak_fraction'] > 0
  if HAS_NUMPYRO:
    assert verdict['vs_numpyro'] > 0
    assert isinstance(verdict['met_1.5x_numpyro'], bool)


def test_train_throughput_rejects_unknown_cases(tiny):
  with pytest.raises(ValueError, match='unknown cases'):
    train_throughput.benchmark(tiny[1], cases=('nope',), model=tiny[0],
                               reporter=quiet())


def test_gradient_variance_benchmark(tiny):
  model, x = tiny
  out = gradient_variance.benchmark(x[:8], num_draws=6, chunk=3, rounds=1,
                                    model=model, reporter=quiet())
  assert out['loop']['estimates_per_s'] > 0
  for case in ('vmapped', 'scan'):
    v = out[case]
    assert v['speedup'] > 0 and v['speedup_cpu'] > 0
    assert v['estimates_per_s'] > 0
    assert v['max_rel_diff_total_variance'] < 1e-3
    assert v['total_variance_encoder'] > 0 and v['total_variance_decoder'] > 0


def test_importance_sampling_plain_equals_chunked_with_one_chunk(tiny):
  model, x = tiny
  params = model.init(jax.random.PRNGKey(0))
  key = jax.random.PRNGKey(3)
  a = importance_sampling.plain_log_likelihood(model, params, x[:4], key, 16)
  b = image_vae.importance_log_likelihood(model, params, x[:4], key, 16, 16)
  np.testing.assert_allclose(a, b, rtol=1e-5)


def test_importance_sampling_benchmark(tiny):
  model, x = tiny
  out = importance_sampling.benchmark(x[:8], num_samples=8, batch=4, chunk=4,
                                      plain_batch=2, rounds=1, model=model,
                                      peak_n=64, reporter=quiet())
  for case in importance_sampling.CASES:
    rec = out[case]
    assert rec['seconds'] > 0 and rec['flop_bound_s'] > 0
    assert rec['ratio_to_bound_cpu'] > 0
    assert rec['ratio_to_bound'] > 0 and np.isfinite(
        rec['mean_log_likelihood'])


def test_gradient_variance_main_on_synthetic_data(tmp_path, capsys):
  path = tmp_path / 'gv.json'
  assert gradient_variance.main([
      '--dataset=synthetic', '--num_draws=4', '--chunk=2', '--batch_size=4',
      '--repeats=1', '--hidden_sizes=8', '--latent_dim=3', '--cases=scan,loop',
      f'--output={path}']) == 0
  lines = capsys.readouterr().out.splitlines()
  assert any(l.startswith('gradient_variance/scan: ') for l in lines)
  assert any(l.startswith('gradient_variance/targets[scan]: ') for l in lines)
  assert json.loads(path.read_text())['results'][0]['num_draws'] == 4


def test_importance_sampling_main_on_synthetic_data(capsys):
  assert importance_sampling.main([
      '--dataset=synthetic', '--num_images=4', '--num_samples=4', '--batch=2',
      '--chunk=2', '--plain_batch=2', '--repeats=1', '--peak_n=64',
      '--hidden_sizes=8', '--latent_dim=3']) == 0
  out = capsys.readouterr().out
  assert 'importance_sampling/chunked: ' in out
  assert 'importance_sampling/targets[plain]: ' in out
