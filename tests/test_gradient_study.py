"""The gaussian_gradients numbers agree with theory (vae.gradient_study)."""

import numpy as np
import pytest

from vae import gradient_study

MUS = [-2.0, 0.0, 1.5]


@pytest.fixture(scope='module')
def x2_records():
  return gradient_study.gaussian_cost_records(
      ['x^2'], ['pathwise', 'score', 'score_mean_baseline', 'score_rloo',
                'score_delta', 'measure_valued'],
      MUS, [1.0], [10], num_draws=4000, seed=0)


def _by(records, **kw):
  return [r for r in records if all(r[k] == v for k, v in kw.items())]


def test_x_squared_variances_match_closed_forms(x2_records):
  checked = 0
  for r in x2_records:
    if r['variance_ratio'] is None:
      continue
    err = abs(r['variance'] - r['exact_variance'])
    assert err < 5 * r['variance_std_error'], r
    checked += 1
  # pathwise, score, mean baseline and MVD for 2 params at 3 μ, less MVD's
  # ∂/∂μ at μ = 0, whose variance is exactly 0 (f symmetric): no ratio.
  assert checked == 4 * 2 * len(MUS) - 1


def test_unbiased_estimators_have_small_z_scores(x2_records):
  for r in x2_records:
    assert abs(r['z_score']) < 5, r


def test_pathwise_beats_score_at_every_mu(x2_records):
  for param in ('mu', 'sigma'):
    for mu in MUS:
      pw, = _by(x2_records, estimator='pathwise', param=param, mu=mu)
      sc, = _by(x2_records, estimator='score', param=param, mu=mu)
      assert pw['variance'] < sc['variance']
      assert pw['exact_variance'] < sc['exact_variance']


def test_control_variates_reduce_score_function_variance(x2_records):
  for param in ('mu', 'sigma'):
    for mu in MUS:
      sc, = _by(x2_records, estimator='score', param=param, mu=mu)
      r, = _by(x2_records, estimator='score_delta', param=param, mu=mu)
      assert r['variance'] < sc['variance'], r
      r, = _by(x2_records, estimator='score_rloo', param=param, mu=mu)
      assert r['variance'] < sc['variance'], r
      if mu != 0.0:  # b = f(μ) = 0 at μ = 0: the same estimator as plain score.
        r, = _by(x2_records, estimator='score_mean_baseline', param=param, mu=mu)
        assert r['variance'] < sc['variance'], r


def test_linear_gaussian_elbo_gradients_are_unbiased():
  records = gradient_study.linear_gaussian_records(
      ['pathwise', 'score_rloo', 'measure_valued'], [3], num_draws=3000, seed=1)
  assert len(records) == 3 * 4  # 2 latent dims × (loc, log_scale)
  for r in records:
    assert abs(r['z_score']) < 5, r


def test_records_have_the_required_fields(x2_records):
  required = {'cost', 'estimator', 'param', 'mu', 'sigma', 'num_samples',
              'num_draws', 'mean', 'variance', 'exact_gradient',
              'exact_variance'}
  for r in x2_records:
    assert required <= set(r)
    assert r['param'] in ('mu', 'sigma')
  summary = gradient_study.summary_rows(x2_records)
  assert len(summary) == 6 * 2


def test_bad_arguments():
  with pytest.raises(ValueError, match='num_draws'):
    gradient_study.gaussian_cost_records(['x^2'], ['pathwise'], [0.0], [1.0],
                                         [1], 1, 0)
  with pytest.raises(ValueError, match='sigma'):
    gradient_study.gaussian_cost_records(['x^2'], ['pathwise'], [0.0], [-1.0],
                                         [1], 10, 0)
