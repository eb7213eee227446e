"""vae.stats: thresholds, standard errors and the disagreement flags."""

import math

import numpy as np
import pytest

from vae import stats


def test_z_threshold_is_the_bonferroni_normal_quantile():
  assert abs(stats.z_threshold(1, 0.05) - 1.959964) < 1e-6
  assert abs(stats.z_threshold(10, 0.01) - 3.290527) < 1e-6
  with pytest.raises(ValueError):
    stats.z_threshold(0)


def test_variance_se_is_exact_for_normal_and_exponential_draws():
  # Normal: μ4 = 3σ⁴, Var(s²) = 2σ⁴/(n-1). Exponential(1): σ² = 1, μ4 = 9,
  # Var(s²) = (μ4 - σ⁴(n-3)/(n-1))/n; checked by simulation.
  n, sigma2 = 50, 2.5
  assert abs(stats.variance_se(sigma2, 3 * sigma2**2, n) -
             sigma2 * math.sqrt(2 / (n - 1))) < 1e-12
  rng = np.random.default_rng(0)
  s2 = rng.exponential(size=(40000, n)).var(axis=1, ddof=1)
  se = float(stats.variance_se(1.0, 9.0, n))
  assert abs(s2.std() - se) < 0.02 * se
  assert abs(s2.mean() - 1.0) < 5 * se / math.sqrt(s2.size)


def _row(mean, variance, n=1000, exact=0.0, exact_variance=1.0, m4=3.0):
  return {'mean': mean, 'variance': variance, 'num_draws': n,
          'exact_gradient': exact, 'exact_variance': exact_variance,
          'exact_m4': m4}


def test_mark_disagreements_flags_planted_errors_only():
  rng = np.random.default_rng(1)
  rows = []
  for _ in range(40):
    x = rng.normal(size=1000)
    rows.append(_row(x.mean(), x.var(ddof=1)))
  rows.append(_row(0.2, 1.0))        # mean off by 6 SE
  rows.append(_row(0.0, 1.5))        # variance off by 11 SE
  rows.append(_row(float('nan'), 1.0))
  rows.append(_row(0.0, 1.0, exact_variance=None, m4=None))  # mean only
  out = stats.mark_disagreements(rows)
  assert [r['disagrees'] for r in out[40:]] == [True, True, True, False]
  assert not any(r['disagrees'] for r in out[:40])
  assert out[-1]['variance_z'] is None and 'disagrees' not in rows[0]


def test_a_correct_run_raises_a_false_alarm_rarely():
  # 300 runs of 30 correct rows each (normal draws): at α = 0.01 at most
  # ~1% of runs should flag a row.
  rng = np.random.default_rng(2)
  alarms = 0
  for _ in range(300):
    x = rng.normal(size=(30, 400))
    rows = [_row(r.mean(), r.var(ddof=1), n=400) for r in x]
    alarms += any(r['disagrees'] for r in stats.mark_disagreements(rows))
  assert alarms <= 9, alarms
