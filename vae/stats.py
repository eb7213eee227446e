"""Does a measured mean or variance agree with its exact value?

For n independent draws with exact mean μ, variance σ² and fourth central
moment μ₄, the sample mean m and the sample variance s² (ddof=1) have

    SE(m)  = σ / √n,
    SE(s²) = √((μ₄ - σ⁴ (n - 3)/(n - 1)) / n).

Score-function estimators are heavy-tailed: a variance's SE computed from
the draws themselves is itself badly estimated (at f = x², μ = -2, N = 1 the
sample variance of 2000 draws is 210 against an exact 346 while its
sample-based SE is 31), so pass the exact μ₄ (e.g. by quadrature) where it
is known. A run that makes k such checks flags a disagreement beyond
z = Φ⁻¹(1 - α/(2k)) standard errors (Bonferroni), so that a correct run
raises a false alarm with probability at most α.
"""

import math

import numpy as np
from scipy import special

# Relative float32 rounding allowed on top of the sampling error (estimators
# with zero variance, e.g. the delta method on a quadratic).
FLOAT_RTOL = 1e-5
# Deterministic identities among closed forms hold to this many units of
# rounding of the magnitudes involved (`rounding_tolerance`).
ROUNDING_ULPS = 1000.0


def rounding_tolerance(scale, dtype) -> np.ndarray:
  """Allowed error of a deterministic identity: ROUNDING_ULPS·ε·(1 + |scale|).

  ε is the machine epsilon of `dtype` (2.2e-16 in float64, 1.2e-7 in
  float32) and `scale` the magnitude of the terms that cancel.
  """
  return ROUNDING_ULPS * np.finfo(dtype).eps * (1.0 + np.abs(
      np.asarray(scale, np.float64)))


def z_threshold(num_checks: int, alpha: float = 0.01) -> float:
  """z = Φ⁻¹(1 - α/(2k)): the two-sided Bonferroni threshold, k checks."""
  if num_checks < 1 or not 0 < alpha < 1:
    raise ValueError(f'need num_checks >= 1 and alpha in (0, 1), got '
                     f'{num_checks}, {alpha}.')
  return float(-special.ndtri(alpha / (2 * num_checks)))


def mean_z(mean, exact, std, n: int):
  """(m - μ) / SE(m), SE(m) = std/√n floored at float32 rounding of μ."""
  se = np.asarray(std, np.float64) / math.sqrt(n)
  floor = FLOAT_RTOL * (1.0 + np.abs(exact))
  return (np.asarray(mean, np.float64) - exact) / np.maximum(se, floor)


def variance_se(variance, m4, n: int):
  """SE(s²) = √((μ₄ - σ⁴(n-3)/(n-1))/n) for n draws."""
  variance = np.asarray(variance, np.float64)
  spread = np.asarray(m4, np.float64) - variance**2 * (n - 3) / (n - 1)
  return np.sqrt(np.maximum(spread, 0.0) / n)


def variance_z(variance, exact_variance, exact_m4, n: int, mean=0.0):
  """(s² - σ²) / SE(s²) with SE from the exact σ² and μ₄.

  The floor allows float32 rounding of draws of size |mean| + σ.
  """
  se = variance_se(exact_variance, exact_m4, n)
  scale = np.abs(mean) + np.sqrt(np.maximum(exact_variance, 0.0))
  floor = FLOAT_RTOL * (1e-12 + scale)**2 + 1e-12
  return (np.asarray(variance, np.float64) - exact_variance) / np.maximum(
      se, floor)


def mark_disagreements(records, exact_key: str = 'exact_gradient',
                       alpha: float = 0.01) -> list[dict]:
  """Records with `mean_z`, `variance_z` and `disagrees` added.

  Each record holds `mean`, `variance` (over `num_draws` draws), the exact
  mean under `exact_key` and, where known, `exact_variance` and `exact_m4`
  (the draws' exact 4th central moment). The mean is checked with
  SE = √(σ²/n) (σ² exact where known, else measured), the variance with
  `variance_z`; a record disagrees when a |z| exceeds the Bonferroni
  threshold z_threshold(k, alpha) over the k checks in `records`.

  Returns:
    New dicts (the inputs are not modified).
  """
  out = []
  for r in records:
    known = r.get('exact_variance') is not None
    var = r['exact_variance'] if known else r['variance']
    z = {'mean_z': float(mean_z(r['mean'], r[exact_key], math.sqrt(var),
                                r['num_draws']))}
    z['variance_z'] = float(variance_z(
        r['variance'], r['exact_variance'], r['exact_m4'], r['num_draws'],
        r[exact_key])) if known else None
    out.append({**r, **z})
  num_checks = sum(1 + (r['variance_z'] is not None) for r in out)
  threshold = z_threshold(max(num_checks, 1), alpha)
  for r in out:
    zs = [abs(r['mean_z'])] + ([abs(r['variance_z'])]
                               if r['variance_z'] is not None else [])
    r['disagrees'] = bool(not all(np.isfinite(zs)) or max(zs) > threshold)
  return out
