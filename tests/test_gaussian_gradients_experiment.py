"""End-to-end: the default experiment's script, its files and determinism."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ['--costs=x^2,cos', '--estimators=pathwise,score,score_rloo',
         '--mus=-1,0,1', '--num_samples=2', '--num_draws=200',
         '--problems=gaussian_cost,linear_gaussian']


def _run(args, out):
  env = dict(os.environ, PYTHONPATH=REPO)
  return subprocess.run(
      [sys.executable, '-m', 'experiments.gaussian_gradients',
       f'--output_dir={out}', *args], cwd=REPO, env=env, capture_output=True,
      text=True, timeout=300)


def test_writes_files_and_is_deterministic(tmp_path):
  a, b = tmp_path / 'a', tmp_path / 'b'
  for out in (a, b):
    proc = _run(SMALL, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
  for name in ('results.json', 'results.csv', 'config.json',
               'variance_vs_mu_N2.png'):
    assert (a / name).exists(), name
  assert (a / 'results.json').read_bytes() == (b / 'results.json').read_bytes()
  records = json.loads((a / 'results.json').read_text())
  assert {r['cost'] for r in records} == {'x^2', 'cos', 'linear_gaussian_elbo'}
  config = json.loads((a / 'config.json').read_text())
  assert config['seed'] == 0 and config['flags']['num_draws'] == 200
  assert 'max|z|' in proc.stdout  # the summary table was printed


def test_bad_estimator_is_a_clear_error(tmp_path):
  proc = _run(['--estimators=nope'], tmp_path / 'c')
  assert proc.returncode != 0
  assert "unknown or discrete-only estimator 'nope'" in proc.stderr
  assert not (tmp_path / 'c' / 'results.json').exists()
