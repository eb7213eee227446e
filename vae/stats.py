"""Does a measured mean or variance agree with its exact value?

For n independent draws with exact mean μ, variance σ² and fourth central
moment μ₄, the sample mean m and the sample variance s² (ddof=1) have

    SE(m)  = σ / √n,
    SE(s²) = √((μ₄ - σ⁴ (n - 3)/(n - 1)) / n).

Score-function estimators are heavy-tailed: a variance's SE computed from
the draws themselves is itself badly estimated (at f = x², μ = -2, N = 1 the
sample variance of 2000 draws is 210 against an exact 346 while its
sample-based SE is 31), so pass the exact μ₄ (e.g. by quadrature) where it
is known.

Library code returns rows that carry their z-scores as checks (`CHECKS`:
(z, side) pairs); `mark_disagreements`, called once on all the rows of a
run, turns them into each row's `disagrees`. With k checks in the run, a
check fails beyond the Bonferroni threshold (two-sided |z| > Φ⁻¹(1 -
α/(2k)), one-sided z < -Φ⁻¹(1 - α/k) or z > Φ⁻¹(1 - α/k)), or when z is not
finite, so that a correct run raises a false alarm with probability at most
α.

A row that carries an exact-value check (z-checks or its own `disagrees`)
compares measured numbers with exact ones, so every number it holds must be
finite: a NaN or infinite value there (`nonfinite_fields`) makes the row
disagree and names the fields in `NONFINITE`; the runner then fails the
run. Rows without checks may hold non-finite values (e.g. an infinite
length scale, a z that is not claimed).
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


# How a check's z fails: 'two-sided' |z| > t, 'lower' z < -t, 'upper' z > t.
SIDES = ('two-sided', 'lower', 'upper')
# The row field holding a row's pending checks, a list of (z, side) pairs;
# `mark_disagreements` replaces it by `disagrees`.
CHECKS = 'z_checks'
# The row field naming a checked row's non-finite values ('a, b'), set by
# `mark_disagreements`; such a row disagrees and fails its run.
NONFINITE = 'non_finite'


def z_threshold(num_checks: int, alpha: float = 0.01,
                side: str = 'two-sided') -> float:
  """The Bonferroni threshold t of k checks at family-wise level α.

  t = Φ⁻¹(1 - α/(2k)) for two-sided checks (|z| > t), t = Φ⁻¹(1 - α/k) for
  one-sided ones (z < -t or z > t): each check of a correct run fails with
  probability α/k, so some check fails with probability at most α.
  """
  if num_checks < 1 or not 0 < alpha < 1 or side not in SIDES:
    raise ValueError(f'need num_checks >= 1, alpha in (0, 1) and side in '
                     f'{SIDES}, got {num_checks}, {alpha}, {side!r}.')
  tails = 2 if side == 'two-sided' else 1
  return float(-special.ndtri(alpha / (tails * num_checks)))


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


def moment_checks(records, exact_key: str = 'exact_gradient') -> list[dict]:
  """Records with `mean_z`, `variance_z` and their two-sided checks added.

  Each record holds `mean`, `variance` (over `num_draws` draws), the exact
  mean under `exact_key` and, where known, `exact_variance` and `exact_m4`
  (the draws' exact 4th central moment). The mean is checked with
  z = (m - μ)/√(σ²/n) (σ² exact where known, else measured), the variance
  with z = (s² - σ²)/SE(s²) (`variance_z`, only where σ² is known); both go
  to `CHECKS` for `mark_disagreements`.

  Returns:
    New dicts (the inputs are not modified).
  """
  out = []
  for r in records:
    known = r.get('exact_variance') is not None
    var = r['exact_variance'] if known else r['variance']
    z: dict[str, float | None] = {'mean_z': float(mean_z(
        r['mean'], r[exact_key], math.sqrt(var), r['num_draws']))}
    z['variance_z'] = float(variance_z(
        r['variance'], r['exact_variance'], r['exact_m4'], r['num_draws'],
        r[exact_key])) if known else None
    zs = [z['mean_z']] + ([z['variance_z']] if known else [])
    out.append({**r, **z, CHECKS: [(v, 'two-sided') for v in zs]})
  return out


def _fails(z: float, side: str, threshold: float) -> bool:
  """Non-finite z, or z beyond `threshold` on the checked side(s)."""
  if not math.isfinite(z):
    return True
  return {'two-sided': abs(z) > threshold, 'lower': z < -threshold,
          'upper': z > threshold}[side]


def nonfinite_fields(row: dict) -> list[str]:
  """The fields of `row` whose value is a number (or array) with a NaN or inf.

  None, bools, ints, text and the pending `CHECKS` are not numbers here.
  """
  bad = []
  for key, value in row.items():
    if key == CHECKS or value is None or isinstance(value, (bool, int, str)):
      continue
    try:
      array = np.asarray(value, np.float64)
    except (TypeError, ValueError):
      continue
    if not np.all(np.isfinite(array)):
      bad.append(key)
  return bad


def mark_disagreements(records, alpha: float = 0.01) -> list[dict]:
  """The one disagreement marker: rows' checks (`CHECKS`) -> `disagrees`.

  Call it once on all the rows of a run. With k = the number of (z, side)
  checks over all `records`, a check fails when z is not finite or

    two-sided: |z| > Φ⁻¹(1 - α/(2k)),
    lower:      z  < -Φ⁻¹(1 - α/k),
    upper:      z  >  Φ⁻¹(1 - α/k)

  (`z_threshold`), so that a run whose every exact value is right flags a
  row with probability at most α (Bonferroni). A row with checks gets
  `disagrees` = some check fails, or'd with a `disagrees` it already holds
  (a deterministic tolerance check); its `CHECKS` field is removed. A row
  with an empty check list gets no `disagrees` of its own. A row that then
  has `disagrees` and holds a non-finite number (`nonfinite_fields`) gets
  `disagrees` True and `NONFINITE` naming those fields. Other rows are
  copied as they are.

  Returns:
    New dicts (the inputs are not modified).
  """
  checks = [c for r in records for c in r.get(CHECKS, ())]
  for _, side in checks:
    if side not in SIDES:
      raise ValueError(f'check side {side!r} is not one of {SIDES}.')
  k = max(len(checks), 1)
  thresholds = {s: z_threshold(k, alpha, s) for s in SIDES}
  out = []
  for r in records:
    r = dict(r)
    zs = r.pop(CHECKS, ())
    if zs:
      r['disagrees'] = bool(r.get('disagrees', False)) or any(
          _fails(float(z), s, thresholds[s]) for z, s in zs)
    if 'disagrees' in r and (bad := nonfinite_fields(r)):
      r['disagrees'], r[NONFINITE] = True, ', '.join(bad)
    out.append(r)
  return out


def paired_difference(a, b) -> tuple[float, float]:
  """Mean and SE of a − b over the same N items (e.g. two models' log p̂ on
  the same test images):

    d̄ = (1/N) Σ_n (a_n − b_n),   SE(d̄) = sd(a − b) / √N   (sd with ddof 1).

  Paired: what both share per item (how hard image n is) cancels, so the SE
  is that of the difference, not √(SE(ā)² + SE(b̄)²).
  """
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  if d.ndim != 1 or len(d) < 2:
    raise ValueError(f'paired_difference needs two equal 1-D arrays of at '
                     f'least 2 items; got shapes {np.shape(a)}, '
                     f'{np.shape(b)}.')
  return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))


def seed_spread(values) -> tuple[float, float]:
  """Mean and sd (ddof 1) of one number over S seeds: x̄ = (1/S) Σ_s x_s,
  sd = √(Σ_s (x_s − x̄)² / (S − 1)); sd is NaN for one seed."""
  x = np.asarray(values, np.float64)
  if x.ndim != 1 or not len(x):
    raise ValueError(f'seed_spread needs a 1-D array of at least one value; '
                     f'got shape {x.shape}.')
  return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else math.nan
