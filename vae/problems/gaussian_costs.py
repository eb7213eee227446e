"""Gaussian expectations E_{N(μ, σ²)}[f(x; k)] with known answers.

The test bed of Mohamed, Rosca, Figurnov & Mnih (2020, sec. 3, Figs. 2-3):
scalar costs f(x; k) under a scalar Gaussian q = N(μ, σ²), in families
indexed by k,

    square   (x - k)²         bump     exp(-k x²)       cos   cos(k x)
    exp      exp(k x)         sigmoid  1 / (1 + exp(-k x)),

their gradients ∂/∂μ, ∂/∂σ of E_q[f] (closed form, or quadrature for
sigmoid), and the exact mean, variance and fourth central moment of ONE
sample of each gradient estimator, by quadrature over the estimator's own
random numbers (ε ~ N(0, 1); the Weibull W; the coupled Maxwell pair
(M, U·M)). The quadrature is composite 16-point Gauss-Legendre on panels no
wider than a third of the cost's length scale in ε, so its error (~1e-12
relative) is far below any sampling error. The estimate of a whole grid of
(k, μ, σ) points in one jittable call is `grid_gradients`.
"""

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vae import comparison
from vae import distributions as dists
from vae import moments
from vae import types
from vae.estimators import registry

SQRT_2PI = math.sqrt(2.0 * math.pi)
PARAMS = ('mu', 'sigma')
# Estimators whose one-sample moments `single_sample_moments` knows.
EXACT_MOMENTS = ('pathwise', 'score', 'score_mean_baseline',
                 'score_optimal_baseline', 'score_delta', 'measure_valued')
_GL_X, _GL_W = np.polynomial.legendre.leggauss(16)
_TAIL = 13.0  # Quadrature range in ε beyond the cost's growth: φ(13) ~ 1e-37.


@dataclasses.dataclass(frozen=True)
class CostFamily:
  """A family f(x; k) of scalar costs with derivatives and closed forms.

  Attributes:
    name: the name in settings and results.
    label: the formula, for plots.
    fn: (x, k) -> f as jnp (what the estimators evaluate).
    d0: (x, k) -> f as numpy (quadrature).
    d1: (x, k) -> ∂f/∂x as numpy.
    d2: (x, k) -> ∂²f/∂x² as numpy.
    moments: (k, μ, σ) -> (E f, ∂E/∂μ, ∂E/∂σ) in closed form, or None.
    length: (k, σ) -> the length scale of f(μ + σε) in ε (inf: none).
    growth: (k, σ) -> a in f = O(e^{a|ε|}) (0: polynomial or bounded).
    log_k: plot k on a log axis.
  """
  name: str
  label: str
  fn: Callable
  d0: Callable
  d1: Callable
  d2: Callable
  moments: Callable | None
  length: Callable
  growth: Callable
  log_k: bool


def _square_moments(k, m, s):
  return (m - k)**2 + s**2, 2 * (m - k), 2 * s + 0 * k


def _bump_moments(k, m, s):
  # E exp(-k x²) = a^{-1/2} exp(-k μ²/a), a = 1 + 2kσ².
  a = 1 + 2 * k * s**2
  e = np.exp(-k * m**2 / a) / np.sqrt(a)
  return e, e * (-2 * k * m / a), e * (-2 * k * s / a +
                                       4 * k**2 * m**2 * s / a**2)


def _cos_moments(k, m, s):
  damp = np.exp(-0.5 * (k * s)**2)
  return (np.cos(k * m) * damp, -k * np.sin(k * m) * damp,
          -k**2 * s * np.cos(k * m) * damp)


def _exp_moments(k, m, s):
  e = np.exp(k * m + 0.5 * (k * s)**2)
  return e, k * e, k**2 * s * e


def _np_sigmoid(x):
  return 0.5 * (1.0 + np.tanh(0.5 * x))


def _sigmoid_d2(x, k):
  p = _np_sigmoid(k * x)
  return k**2 * p * (1 - p) * (1 - 2 * p)


_inverse = lambda k, s: 1.0 / np.maximum(np.abs(k) * s, 1e-300)
FAMILIES = {f.name: f for f in [
    CostFamily('square', '(x-k)^2', lambda x, k: (x - k)**2,
               lambda x, k: (x - k)**2, lambda x, k: 2 * (x - k),
               lambda x, k: 2.0 + 0 * x, _square_moments,
               lambda k, s: np.inf, lambda k, s: 0.0, False),
    CostFamily('bump', 'exp(-kx^2)', lambda x, k: jnp.exp(-k * x**2),
               lambda x, k: np.exp(-k * x**2),
               lambda x, k: -2 * k * x * np.exp(-k * x**2),
               lambda x, k: (4 * k**2 * x**2 - 2 * k) * np.exp(-k * x**2),
               _bump_moments,
               lambda k, s: 1.0 / np.maximum(np.sqrt(np.abs(k)) * s, 1e-300),
               lambda k, s: 0.0, True),
    CostFamily('cos', 'cos(kx)', lambda x, k: jnp.cos(k * x),
               lambda x, k: np.cos(k * x), lambda x, k: -k * np.sin(k * x),
               lambda x, k: -k**2 * np.cos(k * x), _cos_moments, _inverse,
               lambda k, s: 0.0, True),
    CostFamily('exp', 'exp(kx)', lambda x, k: jnp.exp(k * x),
               lambda x, k: np.exp(k * x), lambda x, k: k * np.exp(k * x),
               lambda x, k: k**2 * np.exp(k * x), _exp_moments, _inverse,
               lambda k, s: np.abs(k) * s, False),
    CostFamily('sigmoid', 'sigmoid(kx)', lambda x, k: jax.nn.sigmoid(k * x),
               lambda x, k: _np_sigmoid(k * x),
               lambda x, k: k * _np_sigmoid(k * x) * _np_sigmoid(-k * x),
               _sigmoid_d2, None, _inverse, lambda k, s: 0.0, False),
]}


# --------------------------------------------------------------------------
# Quadrature rules for the estimators' random numbers (nodes, weights).


def _panels(lo: float, hi: float, width: float):
  """Composite 16-point Gauss-Legendre nodes and weights on [lo, hi]."""
  n = max(1, math.ceil((hi - lo) / width))
  edges = np.linspace(lo, hi, n + 1)
  half = 0.5 * np.diff(edges)[:, None]
  mid = 0.5 * (edges[1:] + edges[:-1])[:, None]
  return (mid + half * _GL_X).ravel(), (half * _GL_W).ravel()


def _rule(name: str, family: CostFamily, k: float, sigma: float):
  """Nodes and weights for E over the random numbers of one estimator.

  'normal': (ε, w), ε ~ N(0, 1). 'weibull': (W, w), W ~ Rayleigh(1).
  'maxwell': (M, ε = U·M, w), M ~ double-sided Maxwell, U ~ U(0, 1): the
  joint density |m| φ(m) on {0 < ε/m < 1}, written with m = ±(t + r),
  ε = ±t, t, r ≥ 0, so the integrand is smooth on a product of panel rules.
  """
  tail = _TAIL + 4.0 * float(family.growth(k, sigma))
  width = min(1.0, 3.0 * float(family.length(k, sigma)))
  phi = lambda x: np.exp(-0.5 * x * x) / SQRT_2PI
  if name == 'normal':
    e, w = _panels(-tail, tail, width)
    return e, w * phi(e)
  r, wr = _panels(0.0, tail, width)
  if name == 'weibull':
    return r, wr * r * np.exp(-0.5 * r * r)
  t, wt = r[:, None], wr[:, None]
  m = t + r
  w = (wt * wr * m * phi(m)).ravel()
  t = np.broadcast_to(t, m.shape).ravel()
  m = m.ravel()
  return (np.concatenate([m, -m]), np.concatenate([t, -t]),
          np.concatenate([w, w]))


def optimal_baseline(family: CostFamily, param: str, k: float, mu: float,
                     sigma: float) -> float:
  """b*_θ = E[f s_θ²] / E[s_θ²]: the constant minimising Var[(f - b) s_θ].

  s_μ = ε/σ, s_σ = (ε² - 1)/σ for x = μ + σε, so E[s_μ²] = 1/σ²,
  E[s_σ²] = 2/σ² (the σ² cancels). By quadrature.
  """
  e, w = _rule('normal', family, k, sigma)
  s2, norm = (e * e, 1.0) if param == 'mu' else ((e * e - 1)**2, 2.0)
  return float(np.sum(w * family.d0(mu + sigma * e, k) * s2) / norm)


def single_sample_draw(family: CostFamily, estimator: str, param: str,
                       k: float, mu: float, sigma: float):
  """ONE-sample estimate g as a function of its random numbers, and the rule.

  With x = μ + σε:
    pathwise               ∂μ: f'(x)             ∂σ: f'(x) ε
    score                  ∂μ: f(x) ε/σ          ∂σ: f(x)(ε² - 1)/σ
    score + baseline b     (f(x) - b) s_θ, b = f(μ) (score_mean_baseline)
                           or b*_θ (score_optimal_baseline)
    score_delta            (f(x) - h(x)) s_θ + ∂_θ E[h],  h the 2nd-order
                           Taylor polynomial of f at μ: ∂_μ E h = f'(μ),
                           ∂_σ E h = f''(μ) σ
    measure_valued         ∂μ: (f(μ + σW) - f(μ - σW)) / (σ√(2π))
                           ∂σ: (f(μ + σM) - f(μ + σUM)) / σ.

  Returns:
    (rule name, g: numpy function of the rule's nodes), or None for an
    estimator whose one-sample law is not this (e.g. score_rloo).
  """
  f, d1 = (lambda x: family.d0(x, k)), (lambda x: family.d1(x, k))
  if estimator == 'measure_valued':
    if param == 'mu':
      return 'weibull', lambda w: (f(mu + sigma * w) - f(mu - sigma * w)) / (
          sigma * SQRT_2PI)
    return 'maxwell', lambda m, e: (f(mu + sigma * m) -
                                    f(mu + sigma * e)) / sigma
  score = (lambda e: e / sigma) if param == 'mu' else (
      lambda e: (e * e - 1.0) / sigma)
  if estimator == 'pathwise':
    return 'normal', ((lambda e: d1(mu + sigma * e)) if param == 'mu' else
                      (lambda e: d1(mu + sigma * e) * e))
  baseline = {'score': 0.0, 'score_mean_baseline': f(mu)}
  if estimator in baseline or estimator == 'score_optimal_baseline':
    b = baseline.get(estimator)
    if b is None:
      b = optimal_baseline(family, param, k, mu, sigma)
    return 'normal', lambda e: (f(mu + sigma * e) - b) * score(e)
  if estimator == 'score_delta':
    f1, f2 = d1(mu), family.d2(mu, k)
    taylor = lambda e: f(mu) + f1 * sigma * e + 0.5 * f2 * (sigma * e)**2
    cv_grad = f1 if param == 'mu' else f2 * sigma
    return 'normal', lambda e: (f(mu + sigma * e) - taylor(e)) * score(
        e) + cv_grad
  return None


def single_sample_moments(family: CostFamily, estimator: str, param: str,
                          k: float, mu: float,
                          sigma: float) -> dict[str, float] | None:
  """Exact mean, variance and 4th central moment of ONE-sample estimates.

  m = E[g], v = E[(g - m)²], m4 = E[(g - m)⁴] by quadrature over the random
  numbers of `single_sample_draw`. An estimate averaging N independent
  samples has variance v/N and 4th central moment (m4 + 3(N-1)v²)/N³
  (`average_moments`).

  Returns:
    {'mean', 'variance', 'm4'}, or None where the law is not known here.
  """
  draw = single_sample_draw(family, estimator, param, k, mu, sigma)
  if draw is None:
    return None
  rule, g = draw
  *nodes, w = _rule(rule, family, k, sigma)
  values = g(*nodes)
  mean = float(np.sum(w * values))
  c2 = (values - mean)**2
  return {'mean': mean, 'variance': float(np.sum(w * c2)),
          'm4': float(np.sum(w * c2 * c2))}


def average_moments(one: dict[str, float], n: int) -> dict[str, float]:
  """Moments of the mean of n i.i.d. samples: v/n, (m4 + 3(n-1)v²)/n³."""
  v = one['variance']
  return {'mean': one['mean'], 'variance': v / n,
          'm4': (one['m4'] + 3 * (n - 1) * v * v) / n**3}


def exact_gradient(family: CostFamily, param: str, k: float, mu: float,
                   sigma: float) -> float:
  """∂/∂μ or ∂/∂σ of E_{N(μ,σ²)}[f(x; k)].

  Closed form where the family has one; else quadrature of
  ∂μ = E[f'(x)], ∂σ = E[f'(x) ε].
  """
  if family.moments is not None:
    return float(family.moments(k, mu, sigma)[1 + PARAMS.index(param)])
  e, w = _rule('normal', family, k, sigma)
  d = family.d1(mu + sigma * e, k)
  return float(np.sum(w * (d if param == 'mu' else d * e)))


def expectation(family: CostFamily, k: float, mu: float, sigma: float) -> float:
  """E_{N(μ,σ²)}[f(x; k)]: closed form, or quadrature ∫ f(μ + σε) φ(ε) dε."""
  if family.moments is not None:
    return float(family.moments(k, mu, sigma)[0])
  e, w = _rule('normal', family, k, sigma)
  return float(np.sum(w * family.d0(mu + sigma * e, k)))


# --------------------------------------------------------------------------
# Estimates on a grid of (k, μ, σ) points in one jittable call.


def _builder(p):
  return dists.Normal.from_scale(p['mu'], p['sigma'])


def mixed_cost(families) -> Callable:
  """f(x, k, i) = families[i].fn(x, k): several families as one function.

  Every family is evaluated and one is selected (`jnp.where`), so a grid
  that mixes families is one vmap (one program) rather than one per family.
  The families not selected are evaluated at k = 0 (finite everywhere):
  exp(-k x²) at another family's k = -3 overflows, and the zero cotangent
  of an unselected branch times an infinite derivative is NaN.
  """
  def fn(x, k, i):
    at = lambda j: jnp.where(i == j, k, jnp.zeros_like(k))
    out = families[0].fn(x, at(0))
    for j, fam in enumerate(families[1:], 1):
      out = jnp.where(i == j, fam.fn(x, at(j)), out)
    return out
  return fn


def grid_gradients(estimator: registry.Estimator, families, points,
                   key: types.PRNGKey, num_samples: int) -> dict:
  """One estimate of (∂/∂μ, ∂/∂σ) E_{N(μ,σ²)}[f_p(x)] at every grid point p.

  ĝ_p = estimator(f(·; k_p), (μ_p, σ_p), key, N), f = families[i_p], vmapped
  over the points with one key (common random numbers across the grid).

  Args:
    estimator: a registry entry with an E_q[f] surrogate; one with a
      caller-supplied baseline reads it from points['b_mu'], ['b_sigma'].
    families: the cost families (`mixed_cost`).
    points: arrays [P]: 'k', 'mu', 'sigma', 'family' (index into
      `families`) and, for a baseline, 'b_mu', 'b_sigma'.
    key: PRNG key.
    num_samples: N.

  Returns:
    {'mu': [P], 'sigma': [P]}.
  """
  cost = mixed_cost(families)

  def one(p):
    options = {'baseline': {'mu': p['b_mu'], 'sigma': p['b_sigma']}} if (
        estimator.state) else {}
    params = {'mu': p['mu'], 'sigma': p['sigma']}
    return jax.grad(lambda q: estimator.expectation(
        lambda x: cost(x, p['k'], p['family']), q, _builder, key,
        num_samples, **options))(params)
  return jax.vmap(one)(points)


def seconds_per_estimate(estimators, grids: dict[str, dict],
                         num_samples) -> dict[tuple[str, str, int], float]:
  """{(cost, estimator, N): seconds of one N-sample estimate of (∂/∂μ,
  ∂/∂σ)} at the first point of each cost's grid (`grid_gradients` on that
  point alone; `comparison.seconds_per_estimates`: 256 vmapped in one
  compiled call, warm, median of repeats taken in turn)."""
  calls = {}
  for name, grid in grids.items():
    point = {k: np.asarray(v[:1]) for k, v in grid.items()}
    point['family'] = np.zeros(1, np.int32)
    for e in estimators:
      for n in num_samples:
        if n >= e.min_samples:
          calls[name, e.name, n] = (
              lambda key, e=e, n=n, p=point, f=FAMILIES[name]:
              grid_gradients(e, (f,), p, key, n))
  return comparison.seconds_per_estimates(calls, jax.random.PRNGKey(0))


def grid_points(ks, mus, sigmas) -> dict[str, np.ndarray]:
  """The grid σ × μ × k (k fastest) as flat arrays 'k', 'mu', 'sigma'."""
  s, m, k = np.meshgrid(np.asarray(sigmas, float), np.asarray(mus, float),
                        np.asarray(ks, float), indexing='ij')
  return {'k': k.ravel(), 'mu': m.ravel(), 'sigma': s.ravel()}


def with_baselines(family: CostFamily,
                   points: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """`points` plus 'b_mu', 'b_sigma': the optimal baselines at each point."""
  grid = list(zip(points['k'], points['mu'], points['sigma']))
  return {**points, **{f'b_{p}': np.array([optimal_baseline(family, p, *g)
                                           for g in grid]) for p in PARAMS}}


def concatenate(grids: dict[str, dict]) -> dict[str, np.ndarray]:
  """One grid from {family name: grid}, with 'family' = the name's index."""
  out = {k: np.concatenate([g[k] for g in grids.values()])
         for k in next(iter(grids.values()))}
  out['family'] = np.concatenate([np.full(len(g['k']), i, np.int32)
                                  for i, g in enumerate(grids.values())])
  return out


def with_exact_gradients(family: CostFamily, points) -> dict[str, np.ndarray]:
  """`points` plus 'g_mu', 'g_sigma': the exact gradients at each point."""
  grid = list(zip(points['k'], points['mu'], points['sigma']))
  return {**points, **{f'g_{p}': np.array([exact_gradient(family, p, *g)
                                           for g in grid]) for p in PARAMS}}


def moment_program(estimators, families, num_samples, num_draws: int,
                   chunk: int | None = None,
                   mesh: jax.sharding.Mesh | None = None) -> Callable:
  """(seed, points) -> moments of `num_draws` estimates on the whole grid.

  Draw d of estimator e is {'N': grid_gradients(e, families, points, key,
  N) - g} for each N, key = fold_in(key_d, registry.name_id(e)) (so an
  estimator's draws do not depend on which others run, or their order),
  key_d split from PRNGKey(seed): `vae.moments.moments` (order 4) of draws
  centred on g = points['g_mu'], ['g_sigma'] (the exact gradients), so that
  float32 sums over many draws lose nothing to a large mean; g is added
  back. Pure: jit it (one program for every estimator). With a `mesh`, each
  chunk's draws are split over its devices (`vae.moments.moments`).

  Returns:
    {'mean'|'variance'|'m4': {estimator: {'N': {'mu'|'sigma': [P]}}}}.
  """
  ids = {e.name: registry.name_id(e.name) for e in estimators}

  def program(seed, points):
    offset = {p: points[f'g_{p}'] for p in PARAMS}

    def estimate(key):
      return {e.name: {str(n): jax.tree.map(jnp.subtract, grid_gradients(
          e, families, points, jax.random.fold_in(key, ids[e.name]), n),
                                            offset)
                       for n in num_samples if n >= e.min_samples}
              for e in estimators}
    out = moments.moments(estimate, jax.random.PRNGKey(seed), num_draws,
                          chunk, order=4, mesh=mesh)
    out['mean'] = {e: {n: jax.tree.map(jnp.add, m, offset)
                       for n, m in by_n.items()}
                   for e, by_n in out['mean'].items()}
    return out
  return program


def exact_rows(family: CostFamily, estimator: str, points, num_samples: int):
  """Per grid point: the exact gradient (points['g_mu'], ['g_sigma'] from
  `with_exact_gradients`) and, where known, the moments of ONE N-sample
  estimate (`average_moments`), for both parameters.

  Returns:
    {param: [{'exact_gradient', 'exact_variance', 'exact_m4'}] per point}
    (variance and m4 None where `single_sample_moments` is None).
  """
  out = {}
  for param in PARAMS:
    rows = []
    for k, mu, sigma, g in zip(points['k'], points['mu'], points['sigma'],
                               points[f'g_{param}']):
      one = single_sample_moments(family, estimator, param, k, mu, sigma)
      avg = average_moments(one, num_samples) if one else {}
      rows.append({'exact_gradient': float(g),
                   'exact_variance': avg.get('variance'),
                   'exact_m4': avg.get('m4')})
    out[param] = rows
  return out


def records(grids: dict[str, dict], measured, num_samples,
            num_draws: int) -> list[dict]:
  """Flat records: measured mean and variance beside the exact values.

  Args:
    grids: {family name: grid} (`grid_points` ...), in the order of the
      'family' index of the measured points (`concatenate`).
    measured: {'mean'|'variance': {estimator: {'N': {'mu'|'sigma': [P]}}}}
      over all grids (`moment_program`).
    num_samples: the N.
    num_draws: D.

  Returns:
    One record per estimator, N, family, point and parameter: cost, k, mu,
    sigma, estimator, param, num_samples, num_draws, mean, variance,
    exact_gradient, exact_variance, exact_m4 (`exact_rows`).
  """
  out = []
  for est, by_n in measured['mean'].items():
    for n in num_samples:
      if str(n) not in by_n:
        continue
      start = 0
      for name, grid in grids.items():
        size = len(grid['k'])
        exact = exact_rows(FAMILIES[name], est, grid, n)
        for param in PARAMS:
          got = {m: measured[m][est][str(n)][param][start:start + size]
                 for m in ('mean', 'variance')}
          for i, row in enumerate(exact[param]):
            out.append({'cost': name, 'k': float(grid['k'][i]),
                        'mu': float(grid['mu'][i]),
                        'sigma': float(grid['sigma'][i]), 'estimator': est,
                        'param': param, 'num_samples': n,
                        'num_draws': num_draws,
                        'mean': float(got['mean'][i]),
                        'variance': float(got['variance'][i]), **row})
        start += size
  return out


def variance_curves(family: CostFamily, estimators, ks, mu: float,
                    sigma: float, num_samples: int) -> dict:
  """{param: {estimator: exact variance of an N-sample estimate at each k}}.

  Only estimators with known one-sample moments (EXACT_MOMENTS).
  """
  out: dict[str, dict[str, np.ndarray]] = {p: {} for p in PARAMS}
  for est in estimators:
    if est not in EXACT_MOMENTS:
      continue
    for p in PARAMS:
      variances = []
      for k in ks:
        one = single_sample_moments(family, est, p, k, mu, sigma)
        assert one is not None, (est, p)  # Known for EXACT_MOMENTS.
        variances.append(one['variance'] / num_samples)
      out[p][est] = np.array(variances)
  return out


def exact_curves(family: CostFamily, estimators, ks, mu: float,
                 sigma: float, points: int = 61):
  """Exact one-sample variance curves on a fine k grid, and their crossings.

  The fine grid spans [min ks, max ks] (log-spaced for `family.log_k` and
  k > 0) with `points` values; needs ≥ 3 distinct ks.

  Returns:
    ({'ks': fine grid, param: {estimator: [points]}},
     [{'param', 'lower_below', 'lower_above', 'k'}] (`crossovers`)).
  """
  spaced = np.geomspace if family.log_k and min(ks) > 0 else np.linspace
  fine = spaced(min(ks), max(ks), points)
  curves = {'ks': fine, **variance_curves(family, estimators, fine, mu,
                                          sigma, 1)}
  found = [{'param': p, **c} for p in PARAMS
           for c in crossovers(fine, curves[p], family.log_k)]
  return curves, found


def crossovers(ks, curves: dict[str, np.ndarray], log_k: bool) -> list[dict]:
  """Where two variance curves cross as k grows.

  For each pair (a, b), each sign change of v_a(k) - v_b(k) between grid
  neighbours, located by linear interpolation of log v_a - log v_b in k (in
  log k for `log_k`). Touching curves (equal at a grid point, no change of
  sign) are not crossings.

  Returns:
    [{'lower_below': the lower one before, 'lower_above': after, 'k': k*}]
    in order of k.
  """
  x = np.log(ks) if log_k else np.asarray(ks, float)
  names = list(curves)
  out = []
  for i, a in enumerate(names):
    for b in names[i + 1:]:
      d = np.log(np.maximum(curves[a], 1e-300)) - np.log(
          np.maximum(curves[b], 1e-300))
      nz = np.flatnonzero(np.sign(d) != 0)
      for j, j2 in zip(nz[:-1], nz[1:]):
        if np.sign(d[j]) == np.sign(d[j2]):
          continue
        t = d[j] / (d[j] - d[j2])
        k = x[j] + t * (x[j2] - x[j])
        below, above = (a, b) if d[j] < 0 else (b, a)
        out.append({'lower_below': below, 'lower_above': above,
                    'k': float(np.exp(k) if log_k else k)})
  return sorted(out, key=lambda c: c['k'])
