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
  out = stats.mark_disagreements(stats.moment_checks(rows))
  assert [r['disagrees'] for r in out[40:]] == [True, True, True, False]
  assert not any(r['disagrees'] for r in out[:40])
  assert out[-1]['variance_z'] is None and 'disagrees' not in rows[0]
  assert not any(stats.CHECKS in r for r in out)


def test_a_correct_run_raises_a_false_alarm_rarely():
  # 300 runs of 30 correct rows each (normal draws): at α = 0.01 at most
  # ~1% of runs should flag a row.
  rng = np.random.default_rng(2)
  alarms = 0
  for _ in range(300):
    x = rng.normal(size=(30, 400))
    rows = [_row(r.mean(), r.var(ddof=1), n=400) for r in x]
    alarms += any(r['disagrees'] for r in stats.mark_disagreements(
        stats.moment_checks(rows)))
  assert alarms <= 9, alarms


def test_one_sided_threshold_is_the_bonferroni_normal_quantile():
  # P(Z > t) = α/k one-sided, P(|Z| > t) = α/k two-sided.
  for side in ('lower', 'upper'):
    assert abs(stats.z_threshold(1, 0.05, side) - 1.644854) < 1e-6
    assert abs(stats.z_threshold(10, 0.02, side) - 2.878162) < 1e-6
  assert stats.z_threshold(7, 0.01) == stats.z_threshold(7, 0.01,
                                                         'two-sided')
  with pytest.raises(ValueError):
    stats.z_threshold(1, 0.01, 'left')


def _checked(*checks, **fields):
  return {**fields, stats.CHECKS: list(checks)}


@pytest.mark.parametrize('side', stats.SIDES)
def test_null_z_family_wise_false_alarm_rate_is_alpha(side):
  # Runs of k = 30 checks, z ~ N(0, 1) (every exact value right): some row
  # disagrees with probability 1 - (1 - α/k)^k ≤ α (independent checks,
  # one-sided or two-sided alike); measured over 4000 runs, it lies within
  # 3 binomial standard errors of that rate (so also ≤ α + 3 SE). Half the
  # rows hold one check, half two.
  runs, alpha, rows = 4000, 0.05, 20
  sizes = [2] * (rows // 2) + [1] * (rows // 2)  # Checks per row.
  k = sum(sizes)
  rng = np.random.default_rng(3)
  alarms = 0
  for zs in rng.normal(size=(runs, k)):
    run = [_checked(*[(float(v), side) for v in row])
           for row in np.split(zs, np.cumsum(sizes)[:-1])]
    alarms += any(r['disagrees'] for r in stats.mark_disagreements(
        run, alpha))
  rate, exact = alarms / runs, 1 - (1 - alpha / k)**k
  se = math.sqrt(exact * (1 - exact) / runs)
  assert exact <= alpha
  assert abs(rate - exact) < 3 * se, (rate, exact, se)


def test_non_finite_z_disagrees_on_every_side():
  for side in stats.SIDES:
    for z in (float('nan'), float('inf'), -float('inf')):
      assert stats.mark_disagreements([_checked((z, side))])[0]['disagrees']


def test_one_sided_checks_ignore_the_other_tail():
  rows = [_checked((-10.0, 'lower')), _checked((10.0, 'lower')),
          _checked((10.0, 'upper')), _checked((-10.0, 'upper')),
          _checked((10.0, 'two-sided')), _checked((-10.0, 'two-sided'))]
  assert [r['disagrees'] for r in stats.mark_disagreements(rows)] == [
      True, False, True, False, True, True]


def test_bonferroni_count_is_over_all_rows_of_the_call():
  # z = 3 fails one check alone (t = 2.58 at α = 0.01) but not among 100
  # (t = Φ⁻¹(1 - 0.01/202) = 3.89): the count is every check of the run.
  alone = stats.mark_disagreements([_checked((3.0, 'two-sided'))])
  assert alone[0]['disagrees']
  run = [_checked((3.0, 'two-sided'))] + [
      _checked((0.0, 'two-sided'), (0.0, 'lower')) for _ in range(50)]
  assert not any(r['disagrees'] for r in stats.mark_disagreements(run))


def test_rows_without_checks_and_tolerance_verdicts_are_kept():
  rows = [{'a': 1}, {'disagrees': True}, _checked((0.0, 'upper'),
                                                  disagrees=True),
          _checked(), _checked((0.0, 'upper'), disagrees=False)]
  out = stats.mark_disagreements(rows)
  assert out[:2] == rows[:2] and out[0] is not rows[0]
  assert out[2]['disagrees'] and not out[4]['disagrees']
  assert 'disagrees' not in out[3] and stats.CHECKS not in out[3]
  assert stats.CHECKS in rows[2]  # Inputs unchanged.
  with pytest.raises(ValueError):
    stats.mark_disagreements([_checked((0.0, 'left'))])


def test_paired_difference_has_the_se_of_the_difference_alone():
  # a_n = c_n + e_n, b_n = c_n + δ + e'_n with c shared (sd 10) and e, e'
  # independent (sd 1): Δ̄ estimates -δ with SE √2/√N, not 10√2/√N.
  rng = np.random.default_rng(2)
  n, reps, delta = 400, 500, 0.3
  exact_se = math.sqrt(2 / n)
  means, ses = [], []
  for _ in range(reps):
    c = 10 * rng.standard_normal(n)
    m, se = stats.paired_difference(c + rng.standard_normal(n),
                                    c + delta + rng.standard_normal(n))
    means.append(m)
    ses.append(se)
  means = np.asarray(means)
  assert abs(means.mean() + delta) < 4 * exact_se / math.sqrt(reps)
  # The sd of Δ̄ over replications and the mean reported SE are both the
  # exact SE (the sd's relative SE is 1/√(2·reps) = 3%).
  assert abs(means.std(ddof=1) / exact_se - 1) < 4 / math.sqrt(2 * reps)
  assert abs(np.mean(ses) / exact_se - 1) < 0.01
  with pytest.raises(ValueError, match='two equal 1-D arrays'):
    stats.paired_difference([1.0], [2.0])


def test_seed_spread():
  assert stats.seed_spread([1.0, 2.0, 6.0]) == (3.0, math.sqrt(7.0))
  mean, sd = stats.seed_spread([4.0])
  assert mean == 4.0 and math.isnan(sd)
  with pytest.raises(ValueError):
    stats.seed_spread([])
