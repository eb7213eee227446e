"""Statistical checks with tolerances from standard errors, and exact problems.

Draws go through `vae.moments.moments` (one jitted program per check). A
mean is checked with z = (m - exact)/SE, SE = s/√D; a check that could not
tell a wrong answer from a right one is itself an error (`max_band`).

Exact problems for the registry walk (`tests/test_registry.py`):
  * Gaussian costs f(x; k) under N(μ, σ²): closed forms (`gaussian_costs`);
  * Bernoulli and Categorical q with a non-linear cost: exact enumeration;
  * IWAE_K of a 1-D linear-Gaussian model: Gauss-Hermite quadrature of the
    expected bound, differentiated by central finite differences;
  * IWAE_K with Bernoulli or Categorical q: enumeration of all K-tuples.
"""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from vae import distributions as dists
from vae import moments
from vae import stats
from vae.estimators import core
from vae.problems import gaussian_costs as gc

# Number of standard errors allowed by the checks without a Bonferroni count.
# With fixed seeds a correct estimator passes deterministically; a wrong one
# (a sign or a factor error) misses by far more at our sample counts.
NUM_SE = 5.0


def draw_moments(estimate, num_draws: int, seed: int = 0, order: int = 2):
  """`vae.moments.moments` of `estimate(key)` over D draws, as numpy.

  Chunks of ≤ 100 draws: a chunk's float32 sum errs by ~c·6e-8 relative,
  and merged chunk statistics keep the mean within 1e-6 of exact.
  """
  chunk = moments.default_chunk(num_draws, 1, max_chunk=100)
  run = jax.jit(lambda key: moments.moments(estimate, key, num_draws, chunk,
                                            order=order))
  return jax.tree.map(np.asarray, run(jax.random.PRNGKey(seed)))


def z_scores(mean, variance, num_draws: int, expected):
  """(m - exact) / SE with SE = √(s²/D), floored at float32 rounding."""
  return stats.mean_z(mean, np.asarray(expected, np.float64),
                      np.sqrt(np.asarray(variance, np.float64)), num_draws)


def assert_mean_close(samples, expected, num_se: float = NUM_SE, axis=0,
                      max_band: float | None = None):
  """|mean(samples) - expected| ≤ num_se SE, elementwise.

  With `max_band`, also asserts num_se·SE ≤ max_band·max|expected|: the
  check can tell a wrong answer (off by that fraction of the gradient's
  scale) from the right one.
  """
  samples = np.asarray(samples, np.float64)
  n = samples.shape[axis]
  mean = samples.mean(axis)
  se = samples.std(axis, ddof=1) / np.sqrt(n)
  expected = np.asarray(expected, np.float64)
  err = np.abs(mean - expected)
  tol = num_se * se + 1e-6 * (1 + np.abs(expected))
  assert np.all(err <= tol), (
      f'mean {mean} vs expected {expected}: error {err} > {num_se} SE {se}')
  if max_band is not None:
    scale = np.max(np.abs(expected))
    assert np.all(num_se * se <= max_band * scale), (
        f'band {num_se * se} is wider than {max_band} x {scale}')


def assert_variance_close(samples, expected_variance, expected_m4=None,
                          num_se: float = NUM_SE, axis=0):
  """Sample variance within num_se SE of the exact one.

  SE(s²) from the exact 4th central moment where given (heavy tails), else
  from the sample's.
  """
  x = np.moveaxis(np.asarray(samples, np.float64), axis, 0)
  n = x.shape[0]
  centered = x - x.mean(0)
  var = (centered**2).sum(0) / (n - 1)
  m4 = (centered**4).mean(0) if expected_m4 is None else expected_m4
  se = stats.variance_se(expected_variance, m4, n)
  err = np.abs(var - np.asarray(expected_variance))
  assert np.all(err <= num_se * se + 1e-9), (
      f'variance {var} vs exact {expected_variance}: error {err} > '
      f'{num_se} SE {se}')


# --------------------------------------------------------------------------
# Gaussian costs: x², exp(x), cos(x) under N(0.6, 0.8²).

GAUSSIAN_COSTS = (('square', 0.0), ('exp', 1.0), ('cos', 1.0))
MU, SIGMA = 0.6, 0.8


def gaussian_points(baseline: float = 0.0):
  """The grid of `gaussian_costs.grid_gradients` for GAUSSIAN_COSTS."""
  n = len(GAUSSIAN_COSTS)
  return {'k': jnp.array([k for _, k in GAUSSIAN_COSTS]),
          'mu': jnp.full(n, MU), 'sigma': jnp.full(n, SIGMA),
          'family': jnp.arange(n), 'b_mu': jnp.full(n, baseline),
          'b_sigma': jnp.full(n, baseline)}


GAUSSIAN_FAMILIES = tuple(gc.FAMILIES[name] for name, _ in GAUSSIAN_COSTS)


def gaussian_exact():
  """{'mu': [3], 'sigma': [3]} exact gradients (closed forms)."""
  return {p: np.array([gc.exact_gradient(gc.FAMILIES[name], p, k, MU, SIGMA)
                       for name, k in GAUSSIAN_COSTS]) for p in gc.PARAMS}


# --------------------------------------------------------------------------
# Discrete q: exact enumeration.

BERNOULLI_LOGITS = np.array([0.3, -1.0, 2.0])
CATEGORICAL_LOGITS = np.array([[0.5, -0.2, 1.0], [0.0, 0.8, -0.5]])
_VALUES = np.array([[1.0, -2.0, 0.5], [0.3, 0.9, -1.1]])


def bernoulli_cost(b):
  """f(b) = (Σ b - 1.2)²: non-separable, smooth on [0, 1]^3."""
  return (jnp.sum(b) - 1.2)**2


def categorical_cost(z):
  """f = (Σ_v V[v, z_v] - 0.3)² for indices z, or the same in one-hot z."""
  one_hot = z if jnp.ndim(z) == 2 else jax.nn.one_hot(z, 3)
  return (jnp.sum(one_hot * _VALUES) - 0.3)**2


def bernoulli_exact(logits=BERNOULLI_LOGITS, cost=bernoulli_cost):
  """∇_l Σ_b q(b) f(b) = Σ_b q(b) f(b) (b - σ(l)), over all 2^d states."""
  p = 1 / (1 + np.exp(-logits))
  grad = np.zeros_like(p)
  for bits in itertools.product([0.0, 1.0], repeat=len(p)):
    b = np.array(bits)
    grad += np.prod(np.where(b == 1, p, 1 - p)) * float(cost(b)) * (b - p)
  return grad


def categorical_exact(logits=CATEGORICAL_LOGITS, cost=categorical_cost):
  """∇_l Σ_c q(c) f(c) = Σ_c q(c) f(c) (onehot(c) - p), over all states."""
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  grad = np.zeros_like(p)
  for c in itertools.product(range(p.shape[1]), repeat=p.shape[0]):
    one_hot = np.eye(p.shape[1])[list(c)]
    q = np.prod(p[np.arange(p.shape[0]), list(c)])
    grad += q * float(cost(np.array(c))) * (one_hot - p)
  return grad


# --------------------------------------------------------------------------
# IWAE_K: 1-D linear-Gaussian model, p(z) = N(0, 1), p(x|z) = N(x; az+b, s²).

LG = {'a': 1.5, 'b': 0.3, 's': 0.8, 'x': 1.2}
LG_Q = (0.2, math.log(0.7))  # q = N(loc, exp(log_scale)²): not the posterior
IWAE_K = 3


def lg_log_joint(beta: float, a=LG['a']):
  """z -> log p(x|z) + β log p(z) (the `log_joint` of the IWAE surrogates).

  `a` (the decoder weight) may be traced, for decoder gradients.
  """
  b, s, x = LG['b'], LG['s'], LG['x']
  def log_joint(z):
    return (-0.5 * ((x - a * z - b) / s)**2 - math.log(s) -
            0.5 * math.log(2 * math.pi) +
            beta * (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)))
  return log_joint


def lg_expected_bound(loc: float, log_scale: float, beta: float,
                      k: int = IWAE_K, nodes: int = 24,
                      a: float = LG['a']) -> float:
  """E[log (1/K) Σ_k w_k], w = p(x|z)p(z)^β/q(z)^β, by K-dim Gauss-Hermite."""
  e, w = np.polynomial.hermite_e.hermegauss(nodes)
  w = w / math.sqrt(2 * math.pi)
  grids = np.meshgrid(*[e] * k, indexing='ij')
  weight = functools.reduce(np.multiply, np.meshgrid(*[w] * k, indexing='ij'))
  log_joint = lg_log_joint(beta, a)
  log_w = [log_joint(loc + math.exp(log_scale) * g) - beta * (
      -0.5 * g**2 - log_scale - 0.5 * math.log(2 * math.pi)) for g in grids]
  stacked = np.stack(log_w)
  top = stacked.max(0)
  lme = top + np.log(np.mean(np.exp(stacked - top), axis=0))
  return float(np.sum(weight * lme))


def lg_exact_gradient(beta: float, k: int = IWAE_K, q=LG_Q,
                      h: float = 1e-4) -> np.ndarray:
  """(∂/∂loc, ∂/∂log_scale, ∂/∂a) of `lg_expected_bound` (central diff.)."""
  m, log_s = q
  f = lambda dm, dl, da: lg_expected_bound(m + dm, log_s + dl, beta, k,
                                           a=LG['a'] + da)
  return np.array([(f(h, 0, 0) - f(-h, 0, 0)) / (2 * h),
                   (f(0, h, 0) - f(0, -h, 0)) / (2 * h),
                   (f(0, 0, h) - f(0, 0, -h)) / (2 * h)])


def lg_posterior():
  """The exact posterior N(m, v) of z given x, as (loc, log_scale)."""
  a, b, s, x = LG['a'], LG['b'], LG['s'], LG['x']
  precision = 1 + a * a / (s * s)
  return a * (x - b) / (s * s) / precision, -0.5 * math.log(precision)


def lg_q(q=LG_Q):
  """q = N(loc, exp(log_scale)²) as a `Normal` of scalars."""
  return dists.Normal(jnp.asarray(q[0]), jnp.asarray(q[1]))


# IWAE_K with discrete q: log p̃(z) = T[z] + β log prior(z), enumerated.
_BERNOULLI_TABLE = (np.array([0.4, -1.3]), np.array([-0.2, 0.7]))
_CATEGORICAL_TABLE = np.array([0.3, -1.0, 0.8])


def discrete_iwae_problem(family: str, beta):
  """(q logits, log_joint(z), exact ∇_logits E[log (1/K) Σ w_k] by enumeration).

  Bernoulli: 2 independent bits, prior Bern(σ(0.5)), log p(x|b) =
  Σ_i (b_i T1_i + (1 - b_i) T0_i). Categorical: one variable, 3 classes,
  uniform prior, log p(x|c) = T[c]. With F = log (1/K) Σ_k w_k over a
  K-tuple of states z (probability Π_k q(z_k)) and s_k = ∂ log q(z_k)/∂l,
    ∇_l E[F] = Σ_z Π q(z_k) (F Σ_k s_k - β Σ_k w̃_k s_k).
  `beta` may be traced (log_joint); the exact gradient needs a number.
  """
  if family == 'bernoulli':
    logits = np.array([0.6, -0.4])
    p = 1 / (1 + np.exp(-logits))
    states = [np.array(s) for s in itertools.product([0.0, 1.0], repeat=2)]
    q = [np.prod(np.where(z == 1, p, 1 - p)) for z in states]
    score = [z - p for z in states]
    log_prior = [np.sum(z * 0.5 - np.log1p(np.exp(0.5))) for z in states]
    lik = [np.sum(np.where(z == 1, *_BERNOULLI_TABLE[::-1])) for z in states]
    log_joint = lambda b: jnp.sum(b * _BERNOULLI_TABLE[1] + (1 - b) * (
        _BERNOULLI_TABLE[0])) + beta * jnp.sum(b * 0.5 - jax.nn.softplus(0.5))
  else:
    logits = np.array([0.2, -0.5, 0.9])
    p = np.exp(logits) / np.exp(logits).sum()
    states = list(range(3))
    q, score = list(p), [np.eye(3)[c] - p for c in states]
    log_prior, lik = [-math.log(3.0)] * 3, list(_CATEGORICAL_TABLE)
    log_joint = lambda c: jnp.asarray(_CATEGORICAL_TABLE)[c] - beta * (
        math.log(3.0))
  if isinstance(beta, jax.core.Tracer):
    return logits, log_joint, None
  exact = np.zeros_like(p)
  for combo in itertools.product(range(len(states)), repeat=IWAE_K):
    lw = np.array([lik[i] + beta * (log_prior[i] - math.log(q[i]))
                   for i in combo])
    f = np.log(np.mean(np.exp(lw)))
    w = np.exp(lw - lw.max()) / np.sum(np.exp(lw - lw.max()))
    s = np.array([score[i] for i in combo])
    exact += np.prod([q[i] for i in combo]) * (
        f * s.sum(0) - beta * (w[:, None] * s).sum(0))
  return logits, log_joint, exact


def iwae_gradient(surrogate, log_joint, params, builder, key, k, beta):
  """∇_params of an IWAE surrogate (`core.gradient_from_surrogate`)."""
  return core.gradient_from_surrogate(surrogate)(log_joint, params, builder,
                                                 key, k, beta=beta)
