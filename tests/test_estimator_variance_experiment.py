"""End-to-end: experiments/estimator_variance.py, its files and determinism."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--num_train=64', '--hidden_sizes=8', '--latent_dim=2',
        '--batch_size=8', '--eval_batch_size=4', '--eval_steps=0,2',
        '--objectives=elbo', '--elbo_estimators=pathwise,score_moving_average',
        '--num_samples=2', '--num_draws=10', '--reference_draws=10',
        '--compile_threads=1']


def _start(args, out):
  env = dict(os.environ, PYTHONPATH=REPO)
  return subprocess.Popen(
      [sys.executable, '-m', 'experiments.estimator_variance',
       f'--output_dir={out}', *args], cwd=REPO, env=env, text=True,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc):
  stdout, stderr = proc.communicate(timeout=300)
  return proc.returncode, stdout, stderr


def test_writes_files_and_is_deterministic(tmp_path):
  a, b = tmp_path / 'a', tmp_path / 'b'
  procs = [_start(TINY, out) for out in (a, b)]  # In parallel.
  done = [_finish(p) for p in procs]
  for rc, _, stderr in done:
    assert rc == 0, stderr[-3000:]
  for name in ('results.json', 'results.csv', 'config.json', 'timings.json',
               'variance_snr_vs_step.png', 'variance_snr_vs_num_samples.png'):
    assert (a / name).exists(), name
  assert (a / 'results.json').read_bytes() == (b / 'results.json').read_bytes()
  records = json.loads((a / 'results.json').read_text())
  assert len(records) == 2 * 2 * 2  # estimators x groups x steps.
  assert {r['group'] for r in records} == {'encoder', 'decoder'}
  assert {r['step'] for r in records} == {0, 2}
  for r in records:
    assert r['objective'] == 'elbo' and r['num_samples'] == 2
    assert r['num_draws'] == 10 and r['total_variance'] > 0
    assert -1 <= r['cosine_to_reference'] <= 1
    assert (r['baseline'] is None) == (r['estimator'] != 'score_moving_average')
    assert 'seconds' not in json.dumps(r)
  timings = json.loads((a / 'timings.json').read_text())
  assert timings['draws'] and timings['compile']
  assert all(t['seconds_per_draw'] > 0 for t in timings['draws'])
  stdout = done[0][1]
  assert 'enc_var' in stdout and 'ms/draw' in stdout


def test_bad_flags_are_clear_errors(tmp_path):
  cases = [
      (['--iwae_estimators=score_rloo'],
       "estimator 'score_rloo' does not apply to objective 'iwae'"),
      (['--num_samples=0'], '--num_samples: values must be >= 1'),
      (['--objectives=elbo,nope'], "unknown objective 'nope'"),
  ]
  procs = [(_start(args, tmp_path / str(i)), want, i)
           for i, (args, want) in enumerate(cases)]
  for proc, want, i in procs:
    rc, _, stderr = _finish(proc)
    assert rc != 0
    assert want in stderr, stderr[-2000:]
    assert not (tmp_path / str(i)).exists()
