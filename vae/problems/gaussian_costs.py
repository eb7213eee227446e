"""Gaussian expectations E_{N(μ, σ²)}[f(x)] with known answers.

The test bed of Mohamed et al. (2020, sec. 3): scalar costs under a scalar
Gaussian, their expectations and gradients in closed form, and the exact
variance of each single-sample gradient estimator computed by adaptive
quadrature (`scipy.integrate.quad`, absolute error ~1e-10), so that an
experiment can print the measured variance beside the true one.
"""

import dataclasses
import math
from typing import Callable

import jax.numpy as jnp
import numpy as np
from scipy import integrate

SQRT_2PI = math.sqrt(2.0 * math.pi)
# Quadrature range in units of σ: the Gaussian tail beyond 30 is < 1e-190.
_LIMIT = 30.0


@dataclasses.dataclass(frozen=True)
class GaussianCost:
  """A scalar cost f with its derivative, for E_{N(μ,σ²)}[f(x)].

  Attributes:
    name: the name used in results ('x^2', 'exp', 'cos', 'sigmoid').
    fn: f as a jnp function (used by the estimators).
    np_fn: f as a numpy function (used by quadrature).
    np_grad: f' as a numpy function.
    expectation: (μ, σ) -> E[f] in closed form, or None.
    grad_mu: (μ, σ) -> ∂E/∂μ in closed form, or None.
    grad_sigma: (μ, σ) -> ∂E/∂σ in closed form, or None.
  """
  name: str
  fn: Callable
  np_fn: Callable
  np_grad: Callable
  expectation: Callable | None = None
  grad_mu: Callable | None = None
  grad_sigma: Callable | None = None


def _np_sigmoid(x):
  return 0.5 * (1.0 + np.tanh(0.5 * x))


COSTS = {
    'x^2': GaussianCost(
        'x^2', lambda x: x**2, lambda x: x**2, lambda x: 2 * x,
        expectation=lambda m, s: m**2 + s**2,
        grad_mu=lambda m, s: 2 * m,
        grad_sigma=lambda m, s: 2 * s),
    'exp': GaussianCost(
        'exp', jnp.exp, np.exp, np.exp,
        expectation=lambda m, s: math.exp(m + s**2 / 2),
        grad_mu=lambda m, s: math.exp(m + s**2 / 2),
        grad_sigma=lambda m, s: s * math.exp(m + s**2 / 2)),
    'cos': GaussianCost(
        'cos', jnp.cos, np.cos, lambda x: -np.sin(x),
        expectation=lambda m, s: math.cos(m) * math.exp(-s**2 / 2),
        grad_mu=lambda m, s: -math.sin(m) * math.exp(-s**2 / 2),
        grad_sigma=lambda m, s: -s * math.cos(m) * math.exp(-s**2 / 2)),
    # Bounded, no closed form: reference values come from quadrature.
    'sigmoid': GaussianCost(
        'sigmoid', lambda x: 1.0 / (1.0 + jnp.exp(-x)), _np_sigmoid,
        lambda x: _np_sigmoid(x) * (1 - _np_sigmoid(x))),
}


def cost_index(name: str) -> int:
  """A stable integer id of a cost (for deriving PRNG keys)."""
  return list(COSTS).index(name)


def _normal_expectation(g: Callable[[float], float]) -> float:
  """E_{ε~N(0,1)}[g(ε)] by adaptive quadrature."""
  val, _ = integrate.quad(lambda e: g(e) * math.exp(-0.5 * e * e) / SQRT_2PI,
                          -_LIMIT, _LIMIT, epsabs=1e-12, epsrel=1e-12,
                          limit=200)
  return val


def _rayleigh_expectation(g: Callable[[float], float]) -> float:
  """E_{W~Rayleigh(1)}[g(W)], density w exp(-w²/2) on w > 0."""
  val, _ = integrate.quad(lambda w: g(w) * w * math.exp(-0.5 * w * w), 0,
                          _LIMIT, epsabs=1e-12, epsrel=1e-12, limit=200)
  return val


def _maxwell_expectation(g: Callable[[float], float]) -> float:
  """E_{M~double-sided Maxwell(0,1)}[g(M)], density m² φ(m)."""
  return _normal_expectation(lambda m: m * m * g(m))


def exact_gradient(cost: GaussianCost, param: str, mu: float,
                   sigma: float) -> float:
  """∂/∂μ or ∂/∂σ of E_{N(μ,σ²)}[f]: closed form, or quadrature of E[f'(x)·∂x]."""
  closed = cost.grad_mu if param == 'mu' else cost.grad_sigma
  if closed is not None:
    return float(closed(mu, sigma))
  if param == 'mu':
    return _normal_expectation(lambda e: cost.np_grad(mu + sigma * e))
  return _normal_expectation(lambda e: cost.np_grad(mu + sigma * e) * e)


def single_sample_moments(cost: GaussianCost, estimator: str, param: str,
                          mu: float, sigma: float) -> tuple[float, float] | None:
  """(mean, variance) of ONE-sample gradient estimate, by quadrature.

  Known for 'pathwise', 'score', 'score_mean_baseline' (b = f(μ)),
  'score_delta' (delta-method control variate) and 'measure_valued';
  None for the others (e.g. RLOO, whose samples are not independent).
  The variance of an estimate that averages N independent samples is this
  variance / N.

  Args:
    cost: the cost.
    estimator: estimator name.
    param: 'mu' or 'sigma'.
    mu: μ.
    sigma: σ > 0.

  Returns:
    (mean, variance) or None.
  """
  f, df = cost.np_fn, cost.np_grad
  x = lambda e: mu + sigma * e
  if estimator == 'measure_valued':
    if param == 'mu':
      c = 1.0 / (sigma * SQRT_2PI)
      g = lambda w: c * (f(mu + sigma * w) - f(mu - sigma * w))
      m1 = _rayleigh_expectation(g)
      m2 = _rayleigh_expectation(lambda w: g(w)**2)
      return m1, m2 - m1**2
    # Independent Maxwell and Normal parts: variances add.
    pos_m1 = _maxwell_expectation(lambda m: f(x(m)))
    pos_m2 = _maxwell_expectation(lambda m: f(x(m))**2)
    neg_m1 = _normal_expectation(lambda e: f(x(e)))
    neg_m2 = _normal_expectation(lambda e: f(x(e))**2)
    var = (pos_m2 - pos_m1**2 + neg_m2 - neg_m1**2) / sigma**2
    return (pos_m1 - neg_m1) / sigma, var
  score = (lambda e: e / sigma) if param == 'mu' else (
      lambda e: (e * e - 1.0) / sigma)
  if estimator == 'pathwise':
    g = (lambda e: df(x(e))) if param == 'mu' else (lambda e: df(x(e)) * e)
  elif estimator == 'score':
    g = lambda e: f(x(e)) * score(e)
  elif estimator == 'score_mean_baseline':
    g = lambda e: (f(x(e)) - f(mu)) * score(e)
  elif estimator == 'score_delta':
    f0, f1 = f(mu), df(mu)
    h = 1e-4  # f'' by central differences of f' (error ~1e-8 for our costs).
    f2 = (df(mu + h) - df(mu - h)) / (2 * h)
    taylor = lambda e: f0 + f1 * sigma * e + 0.5 * f2 * (sigma * e)**2
    exact_cv_grad = f1 if param == 'mu' else f2 * sigma
    g = lambda e: (f(x(e)) - taylor(e)) * score(e) + exact_cv_grad
  else:
    return None
  m1 = _normal_expectation(g)
  m2 = _normal_expectation(lambda e: g(e)**2)
  return m1, max(m2 - m1**2, 0.0)
