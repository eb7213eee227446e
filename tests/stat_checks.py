"""Statistical assertions with tolerances derived from the sample count."""

import numpy as np

# Number of standard errors allowed. With fixed seeds a correct estimator
# passes deterministically; a wrong one (e.g. a sign or a factor error) misses
# by far more than this many standard errors at our sample counts.
NUM_SE = 5.0


def assert_mean_close(samples, expected, num_se: float = NUM_SE, axis=0):
  """|mean(samples) - expected| <= num_se * std(samples)/sqrt(n), elementwise."""
  samples = np.asarray(samples, np.float64)
  n = samples.shape[axis]
  mean = samples.mean(axis)
  se = samples.std(axis, ddof=1) / np.sqrt(n)
  err = np.abs(mean - np.asarray(expected))
  # Guard against a zero SE (exact estimators): allow rounding error.
  tol = num_se * se + 1e-6 * (1 + np.abs(expected))
  assert np.all(err <= tol), (
      f'mean {mean} vs expected {expected}: error {err} > {num_se} SE {se}')


def variance_and_se(samples, axis=0):
  """Sample variance and its standard error sqrt((m4 - s^4)/n)."""
  x = np.asarray(samples, np.float64)
  n = x.shape[axis]
  centered = x - x.mean(axis, keepdims=True)
  var = (centered**2).sum(axis) / (n - 1)
  m4 = (centered**4).mean(axis)
  se = np.sqrt(np.maximum(m4 - var**2, 0.0) / n)
  return var, se


def assert_variance_close(samples, expected_variance, num_se: float = NUM_SE,
                          axis=0):
  """Sample variance within num_se standard errors of the closed form."""
  var, se = variance_and_se(samples, axis)
  err = np.abs(var - np.asarray(expected_variance))
  assert np.all(err <= num_se * se + 1e-9), (
      f'variance {var} vs closed form {expected_variance}: error {err} > '
      f'{num_se} SE {se}')
