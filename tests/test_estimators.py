"""vae.estimators.core: samplers without atoms, variances against closed forms.

(Means of every estimator against exact gradients: tests/test_registry.py.)
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps

from tests import stat_checks as sc
from vae import distributions as dists
from vae import stats
from vae.estimators import core
from vae.estimators import registry
from vae.problems import gaussian_costs as gc

PATHWISE, SCORE = registry.get('pathwise'), registry.get('score')
RLOO = registry.get('score_rloo')
MEASURE_VALUED = registry.get('measure_valued')

TAIL_DRAWS = 2**25  # 4 x 2^23: the old floored-uniform atom appears ~4 times.


def gaussian_builder(p):
  return dists.Normal.from_scale(p['mu'], p['sigma'])


def draws(estimator, function, params, builder, num_samples, seed=0,
          num_draws=20000):
  """D independent estimates, as numpy (one jitted vmap)."""
  keys = jax.random.split(jax.random.PRNGKey(seed), num_draws)
  run = jax.jit(jax.vmap(
      lambda k: estimator(function, params, builder, k, num_samples)))
  return jax.tree_util.tree_map(np.asarray, run(keys))


def _tail(sampler, threshold):
  """(max |x|, #{|x| > threshold}) over TAIL_DRAWS draws, in 8 chunks."""
  def chunk(key):
    x = jnp.abs(sampler(key, (TAIL_DRAWS // 8,)))
    return jnp.max(x), jnp.sum(x > threshold)
  top, count = jax.jit(jax.vmap(chunk))(jax.random.split(
      jax.random.PRNGKey(0), 8))
  return float(np.max(top)), int(np.sum(count))


@pytest.mark.parametrize('name,sampler,threshold,tail', [
    # Rayleigh: P(W > t) = exp(-t²/2).
    ('weibull', core.sample_weibull, 4.5, math.exp(-4.5**2 / 2)),
    # |double-sided Maxwell| = χ₃: P(|M| > t) = 2(t φ(t) + Φ(-t)).
    ('maxwell', core.sample_double_sided_maxwell, 4.0,
     2 * (4.0 * sps.norm.pdf(4.0) + sps.norm.sf(4.0))),
])
def test_samplers_extreme_quantiles(name, sampler, threshold, tail):
  top, count = _tail(sampler, threshold)
  expected = TAIL_DRAWS * tail
  # The tail count is Poisson; no draw beyond 7.5, where a draw has
  # probability < 1e-11 (the floored uniform put 2^-23 at W = 13.2).
  assert abs(count - expected) < 5 * math.sqrt(expected), (name, count,
                                                            expected)
  assert top < 7.5, (name, top)


def test_measure_valued_variance_at_the_point_that_failed():
  # exp(x), μ = σ = 1, N = 100: exact one-sample variance of ∂μ 21.5 (0.215
  # for N = 100). 2^17 estimates hold 1.3e7 Weibull draws: the old atom
  # (p = 2^-23) appears with probability 0.79 (here: yes), each time adding
  # ~1e12 / D to the variance. (The tail test above sees it with p = 0.98.)
  n, num_draws = 100, 2**17
  exact = {p: gc.average_moments(gc.single_sample_moments(
      gc.FAMILIES['exp'], 'measure_valued', p, 1.0, 1.0, 1.0), n)
           for p in gc.PARAMS}
  got = sc.draw_moments(lambda key: dict(zip(gc.PARAMS, (
      core.measure_valued_gaussian_gradients(
          jnp.exp, jnp.ones(()), jnp.ones(()), key, n)))), num_draws)
  for p in gc.PARAMS:
    z = sc.z_scores(got['mean'][p], got['variance'][p], num_draws,
                    exact[p]['mean'])
    se = stats.variance_se(exact[p]['variance'], exact[p]['m4'], num_draws)
    assert abs(z) < sc.NUM_SE, (p, got['mean'][p], exact[p])
    assert abs(got['variance'][p] - exact[p]['variance']) < sc.NUM_SE * se, (
        p, got['variance'][p], exact[p]['variance'])


@pytest.mark.parametrize('mu', [-1.5, 2.0])
def test_x_squared_variances_match_hand_derivations(mu):
  sigma, n = 0.7, 3
  params = {'mu': jnp.asarray(mu), 'sigma': jnp.asarray(sigma)}
  # One-sample variances for f(x) = x², x = μ + σε, derived by hand:
  #   pathwise ∂μ: 2x           -> 4σ²
  #   pathwise ∂σ: 2xε          -> 4μ² + 8σ²
  #   score ∂μ:    x² ε/σ       -> μ⁴/σ² + 14μ² + 15σ²
  #   score ∂σ:    x²(ε²-1)/σ   -> 2μ⁴/σ² + 60μ² + 74σ²
  closed = {
      PATHWISE: {'mu': 4 * sigma**2, 'sigma': 4 * mu**2 + 8 * sigma**2},
      SCORE: {
          'mu': mu**4 / sigma**2 + 14 * mu**2 + 15 * sigma**2,
          'sigma': 2 * mu**4 / sigma**2 + 60 * mu**2 + 74 * sigma**2},
  }
  for fn, want in closed.items():
    g = draws(fn, lambda x: x**2, params, gaussian_builder, n, seed=1)
    for p in params:
      sc.assert_variance_close(g[p], want[p] / n)


def test_score_with_per_parameter_optimal_baselines():
  # f = (x - k)², c = μ - k: b*_μ = c² + 3σ², b*_σ = c² + 5σ² (by hand), and
  # the variances of (f - b*) s_θ are those of `gaussian_costs` (quadrature).
  mu, sigma, k = 0.5, 0.9, -1.0
  fam, c = gc.FAMILIES['square'], mu - k
  b = {'mu': c**2 + 3 * sigma**2, 'sigma': c**2 + 5 * sigma**2}
  params = {'mu': jnp.asarray(mu), 'sigma': jnp.asarray(sigma)}
  g = draws(registry.get('score_optimal_baseline', baseline=b),
            lambda x: fam.fn(x, k), params, gaussian_builder, 2, seed=3)
  for p in params:
    one = gc.single_sample_moments(fam, 'score_optimal_baseline', p, k, mu,
                                   sigma)
    others = [gc.single_sample_moments(fam, e, p, k, mu, sigma)['variance']
              for e in ('score', 'score_mean_baseline')]
    sc.assert_mean_close(g[p], gc.exact_gradient(fam, p, k, mu, sigma))
    sc.assert_variance_close(g[p], one['variance'] / 2, gc.average_moments(
        one, 2)['m4'])
    assert one['variance'] < min(others), (p, one, others)


def test_measure_valued_multivariate_and_chain_rule_to_log_scale():
  # f(z) = Σ z_i² + z_0 z_1: ∂μ0 = 2μ0 + μ1, ∂μ1 = 2μ1 + μ0, ∂μ2 = 2μ2,
  # ∂σ_i = 2σ_i, and ∂/∂log σ_i = 2σ_i².
  f = lambda z: jnp.sum(z**2) + z[0] * z[1]
  mu = jnp.array([0.5, -1.0, 0.2])
  sigma = jnp.array([0.3, 1.2, 0.8])
  builder = lambda p: dists.Normal(p['loc'], p['log_scale'])
  params = {'loc': mu, 'log_scale': jnp.log(sigma)}
  want = {'loc': 2 * mu + jnp.array([mu[1], mu[0], 0.0]),
          'log_scale': 2 * sigma**2}
  g = draws(MEASURE_VALUED, f, params, builder, 4, num_draws=10000)
  for p in params:
    sc.assert_mean_close(g[p], want[p], max_band=0.1)


def test_surrogate_inside_an_outer_grad_gives_both_gradients():
  # E_{N(μ,σ²)}[(z - a)²] = (μ - a)² + σ²: d/da = -2(μ - a), d/dμ = 2(μ - a).
  mu, a = 0.4, 1.5
  def loss(theta, key):
    f = lambda z: (z - theta['a'])**2
    return core.score_function_surrogate(
        f, theta['mu'], lambda m: dists.Normal(m, jnp.log(0.5)), key, 4)
  theta = {'mu': jnp.asarray(mu), 'a': jnp.asarray(a)}
  keys = jax.random.split(jax.random.PRNGKey(2), 20000)
  g = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(theta, keys)
  sc.assert_mean_close(g['a'], -2 * (mu - a), max_band=0.05)
  sc.assert_mean_close(g['mu'], 2 * (mu - a), max_band=0.1)


def test_surrogate_values_estimate_the_expectation():
  # E cos(x) = cos(μ) exp(-σ²/2); each surrogate's value is an estimate.
  mu, sigma = 0.6, 0.8
  params = {'mu': jnp.asarray(mu), 'sigma': jnp.asarray(sigma)}
  exact = math.cos(mu) * math.exp(-sigma**2 / 2)
  for surrogate in (core.pathwise_surrogate, core.score_function_surrogate,
                    core.leave_one_out_surrogate,
                    core.measure_valued_surrogate):
    values = jax.jit(jax.vmap(lambda k: surrogate(
        jnp.cos, params, gaussian_builder, k, 4)))(
            jax.random.split(jax.random.PRNGKey(5), 20000))
    sc.assert_mean_close(values, exact, max_band=0.02)


def test_bad_arguments_raise_clear_errors():
  params = {'mu': jnp.asarray(0.0), 'sigma': jnp.asarray(1.0)}
  key = jax.random.PRNGKey(0)
  for fn in (PATHWISE, SCORE, RLOO, MEASURE_VALUED):
    with pytest.raises(ValueError, match='num_samples must be >= [12]'):
      fn(jnp.cos, params, gaussian_builder, key, 0)
  with pytest.raises(ValueError, match='num_samples must be >= 2'):
    RLOO(jnp.cos, params, gaussian_builder, key, 1)
  with pytest.raises(ValueError, match='scalar per sample'):
    SCORE(lambda z: jnp.stack([z, z]), params, gaussian_builder, key, 2)
  with pytest.raises(ValueError, match='scale'):
    PATHWISE(jnp.cos, {'mu': 0.0, 'sigma': -1.0}, gaussian_builder, key, 2)
  with pytest.raises(TypeError, match='Normal'):
    MEASURE_VALUED(jnp.sum, jnp.zeros(2), dists.Bernoulli, key, 2)
