"""Error bars over seeds from a sweep (experiments/common/seeds.py)."""

import json
import math
import os
import re
import subprocess
import sys

from experiments.common import launch
from experiments.common import seeds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_over_seeds_gives_mean_sd_n_of_what_varies():
  rows = [{'seed': s, 'lr': lr, 'row': 0, 'name': 'a', 'k': 5,
           'value': lr * s, 'nan': float('nan') if s == 0 else 1.0 * s}
          for lr in (1, 2) for s in (0, 1, 2)]
  summary = seeds.over_seeds(rows, ['lr', 'seed'])
  assert len(summary) == 2
  one = summary[1]
  assert one['lr'] == 2 and one['name'] == 'a' and one['k'] == 5
  assert one['n'] == 3 and one['value_mean'] == 2.0
  assert math.isclose(one['value_sd'], 2.0)
  assert one['nan_mean'] == 1.5 and one['nan_n'] == 2  # NaN left out.
  assert 'k_mean' not in one and 'seed' not in one
  text = seeds.table(summary, ['lr', 'seed'])
  assert '2 ± 2' in text and '1.5 ± 0.71' in text


def test_a_seed_sweep_writes_and_prints_mean_sd_n(tmp_path):
  # In a subprocess: submitit's local executor closes the test's stdio.
  out = tmp_path / 'sweep'
  proc = subprocess.run(
      [sys.executable, 'launch.py', '--experiment=tests.seeded_experiment',
       '--nocompilation_cache', f'--output_dir={out}', '--parallel=2',
       '--sweep=scale=1,2', '--sweep=seed=0,1,2'], cwd=ROOT,
      capture_output=True, text=True, timeout=300, check=False)
  stdout = proc.stdout
  assert proc.returncode == 0, proc.stderr[-2000:]
  # A line per point with its elapsed time and the ETA of the rest.
  assert re.search(r'\[1/6\] scale=\S+: ok \(\d\d:\d\d elapsed, ETA '
                   r'\d\d:\d\d\)', stdout), stdout
  assert re.search(r'\[6/6\] scale=\S+: ok \(\d\d:\d\d elapsed\)', stdout)
  with open(os.path.join(out, 'sweep_results.json')) as f:
    assert len(json.load(f)) == 12  # The per-point rows, as before.
  with open(os.path.join(out, launch.SEEDS_RESULTS + '.json')) as f:
    summary = json.load(f)
  got = [(r['scale'], r['name'], r['n'], r['value_mean'], r['value_sd'])
         for r in summary]
  assert got == [(1.0, 'a', 3, 1.0, 1.0), (1.0, 'b', 3, 2.0, 1.0),
                 (2.0, 'a', 3, 2.0, 2.0), (2.0, 'b', 3, 4.0, 2.0)]
  assert summary[1]['exact'] == 2.0 and 'exact_mean' not in summary[1]
  assert 'over seeds' in stdout and '4 ± 2' in stdout
  assert os.path.exists(os.path.join(out, launch.SEEDS_RESULTS + '.csv'))
