"""vae.problems.gaussian_costs: closed forms and quadrature moments, checked
against independent computations (Gauss-Hermite, finite differences) and
moments derived by hand."""

import dataclasses
import math

import jax
import numpy as np
import pytest

from vae.estimators import registry
from vae.problems import gaussian_costs as gc

SQRT_2PI = math.sqrt(2 * math.pi)


def _hermite_expectation(family, k, mu, sigma):
  """E[f] by 120-node Gauss-Hermite (independent of the library's rules)."""
  nodes, weights = np.polynomial.hermite_e.hermegauss(120)
  return np.sum(weights * family.d0(mu + sigma * nodes, k)) / SQRT_2PI


@pytest.mark.parametrize('name,k', [('square', -1.5), ('bump', 2.0),
                                    ('cos', 1.7), ('exp', 0.8),
                                    ('sigmoid', 1.3)])
def test_expectations_and_gradients_match_hermite_and_differences(name, k):
  fam = gc.FAMILIES[name]
  mu, sigma, h = 0.7, 1.1, 1e-5
  e = lambda m, s: _hermite_expectation(fam, k, m, s)
  assert abs(gc.expectation(fam, k, mu, sigma) - e(mu, sigma)) < 1e-9
  fd = {'mu': (e(mu + h, sigma) - e(mu - h, sigma)) / (2 * h),
        'sigma': (e(mu, sigma + h) - e(mu, sigma - h)) / (2 * h)}
  for p in gc.PARAMS:
    assert abs(gc.exact_gradient(fam, p, k, mu, sigma) - fd[p]) < 1e-6, p
  # f' and f'' against central differences of f.
  x = np.linspace(-2, 2, 9)
  np.testing.assert_allclose(fam.d1(x, k), (fam.d0(x + h, k) - fam.d0(
      x - h, k)) / (2 * h), atol=1e-5)
  np.testing.assert_allclose(fam.d2(x, k), (fam.d1(x + h, k) - fam.d1(
      x - h, k)) / (2 * h), atol=1e-4)


@pytest.mark.parametrize('mu,k', [(-2.0, 0.0), (1.0, 1.0), (1.5, -0.5)])
def test_square_moments_match_hand_derivations(mu, k):
  # f = (x - k)², x = μ + σε, c = μ - k; one-sample estimates g:
  #   pathwise ∂μ = 2(c + σε): var 4σ², m4 48σ⁴
  #   pathwise ∂σ = 2(c + σε)ε: var 4c² + 8σ²
  #   score ∂μ = (c + σε)² ε/σ: var c⁴/σ² + 14c² + 15σ²
  #   score ∂σ = (c + σε)²(ε² - 1)/σ: var 2c⁴/σ² + 60c² + 74σ²
  #   measure-valued ∂μ = 4cσW/(σ√2π): var 16c²(2 - π/2)/(2π)
  #   coupled measure-valued ∂σ = 2cM(1 - U) + σM²(1 - U²): var 4c² + 4σ²
  #   optimal baselines b*_μ = c² + 3σ², b*_σ = c² + 5σ², delta method: 0
  sigma = 0.9
  c, fam = mu - k, gc.FAMILIES['square']
  want = {
      ('pathwise', 'mu'): 4 * sigma**2,
      ('pathwise', 'sigma'): 4 * c**2 + 8 * sigma**2,
      ('score', 'mu'): c**4 / sigma**2 + 14 * c**2 + 15 * sigma**2,
      ('score', 'sigma'): 2 * c**4 / sigma**2 + 60 * c**2 + 74 * sigma**2,
      ('measure_valued', 'mu'): 16 * c**2 * (2 - math.pi / 2) / (2 * math.pi),
      ('measure_valued', 'sigma'): 4 * c**2 + 4 * sigma**2,
      ('score_delta', 'mu'): 0.0, ('score_delta', 'sigma'): 0.0,
  }
  for (est, p), var in want.items():
    got = gc.single_sample_moments(fam, est, p, k, mu, sigma)
    assert abs(got['variance'] - var) < 1e-8 * (1 + var), (est, p, got, var)
    assert abs(got['mean'] - gc.exact_gradient(fam, p, k, mu, sigma)) < 1e-9
  assert abs(gc.single_sample_moments(fam, 'pathwise', 'mu', k, mu, sigma)[
      'm4'] - 48 * sigma**4) < 1e-8
  assert abs(gc.optimal_baseline(fam, 'mu', k, mu, sigma) -
             (c**2 + 3 * sigma**2)) < 1e-9
  assert abs(gc.optimal_baseline(fam, 'sigma', k, mu, sigma) -
             (c**2 + 5 * sigma**2)) < 1e-9


def test_average_moments_of_n_samples():
  # Exponential(1) one-sample law: v = 1, m4 = 9; the mean of n has
  # m4 = (9 + 3(n - 1))/n³.
  got = gc.average_moments({'mean': 1.0, 'variance': 1.0, 'm4': 9.0}, 4)
  assert got == {'mean': 1.0, 'variance': 0.25, 'm4': (9 + 9) / 64}


def test_the_quadrature_resolves_the_fastest_costs():
  # cos(10x) and exp(-100x²): the panel width follows the length scale, so
  # halving it (a finer rule) changes nothing beyond 1e-10.
  for name, k in (('cos', 10.0), ('bump', 100.0)):
    fam = gc.FAMILIES[name]
    coarse = gc.single_sample_moments(fam, 'measure_valued', 'sigma', k, 1.0,
                                      1.0)
    fine_fam = dataclasses.replace(
        fam, length=lambda kk, s, f=fam: 0.5 * f.length(kk, s))
    fine = gc.single_sample_moments(fine_fam, 'measure_valued', 'sigma', k,
                                    1.0, 1.0)
    for key in coarse:
      assert abs(coarse[key] - fine[key]) < 1e-10 * (1 + abs(fine[key])), (
          name, key, coarse, fine)


def test_crossovers_are_located_where_curves_cross():
  ks = np.linspace(-2, 2, 41)
  curves = {'a': np.exp(ks), 'b': np.exp(0.5 - ks), 'c': np.full(41, 1e3)}
  (x,) = gc.crossovers(ks, curves, log_k=False)
  assert (x['lower_below'], x['lower_above']) == ('a', 'b')
  assert abs(x['k'] - 0.25) < 1e-12  # k = 0.5 - k, linear in log variance


def test_unknown_estimator_has_no_exact_moments():
  assert gc.single_sample_moments(gc.FAMILIES['cos'], 'score_rloo', 'mu', 1.0,
                                  0.0, 1.0) is None


def test_reordering_the_estimators_changes_no_estimators_draws(monkeypatch):
  # Keys derive from names (registry.name_id): the estimators compared, their
  # order and the registry's order change no estimator's result.
  fam = gc.FAMILIES['cos']
  points = gc.concatenate({'cos': gc.with_exact_gradients(
      fam, gc.with_baselines(fam, gc.grid_points((0.5, 2.0), (1.0,),
                                                 (1.0,))))})

  def measured(names):
    program = gc.moment_program([registry.lookup(e) for e in names], (fam,),
                                (1, 3), 64)
    return jax.tree.map(np.asarray, jax.jit(program)(0, points))

  names = ('score', 'score_optimal_baseline', 'pathwise', 'measure_valued',
           'score_delta')
  before = measured(names)
  monkeypatch.setattr(registry, 'ESTIMATORS',
                      dict(reversed(registry.ESTIMATORS.items())))
  after = {**measured(names[::-1]), 'alone': measured(names[1:2])}
  for e in names:
    for m in before:
      for n, got in after[m][e].items():
        for p, x in got.items():
          np.testing.assert_allclose(x, before[m][e][n][p], rtol=1e-6,
                                     err_msg=f'{m} {e} {n} {p}')
  np.testing.assert_allclose(after['alone']['mean'][names[1]]['3']['mu'],
                             before['mean'][names[1]]['3']['mu'], rtol=1e-6)
