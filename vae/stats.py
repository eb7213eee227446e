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
