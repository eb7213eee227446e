"""Small distributions as pytrees: Normal, MultivariateNormal, Bernoulli,
Categorical, relaxations.

Every distribution is *elementwise* over its parameters' shape (its "batch
shape"), except Categorical and RelaxedCategorical whose last parameter axis is
the event (the classes) and MultivariateNormal whose last axis is the event (a
D-vector). `log_prob` returns one value per element (per categorical variable,
per D-vector); sum it yourself over the axes that form one sample.
`event_log_prob(x)` (Normal, Bernoulli, MultivariateNormal) is the log density
of the last axis as one vector: one value per D-vector for every family.
All computations are in logits / log-scales (log_sigmoid, softplus, logsumexp):
no log(0), no 0 * inf.
"""

import functools
import math
from typing import Any, Callable, Sequence

import jax
from jax import custom_derivatives
import jax.numpy as jnp
import numpy as np

from vae import types

Array = types.Array
PRNGKey = types.PRNGKey

_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


def _is_concrete(x) -> bool:
  """True for a concrete numeric value (not a tracer, not a placeholder)."""
  if isinstance(x, jax.core.Tracer):
    return False
  return isinstance(x, (jax.Array, np.ndarray, np.generic, float, int))


def _check_finite_positive(name: str, value) -> None:
  """Raises ValueError for a concrete non-positive or non-finite value."""
  if _is_concrete(value):
    v = np.asarray(value)
    if v.size and not np.all(np.isfinite(v) & (v > 0)):
      raise ValueError(f'{name} must be finite and > 0, got {v.min()!r} '
                       f'(min over {v.size} values).')


def _check_finite(name: str, value) -> None:
  if _is_concrete(value):
    v = np.asarray(value)
    if v.size and not np.all(np.isfinite(v)):
      raise ValueError(f'{name} must be finite; got non-finite values.')


def _shape(sample_shape: Sequence[int] | int) -> tuple[int, ...]:
  if isinstance(sample_shape, int):
    sample_shape = (sample_shape,)
  sample_shape = tuple(int(s) for s in sample_shape)
  if any(s < 1 for s in sample_shape):
    raise ValueError(f'sample_shape entries must be >= 1, got {sample_shape}.')
  return sample_shape


@types.pytree_dataclass
class Normal:
  """Diagonal Gaussian N(loc, exp(log_scale)^2), elementwise.

  Attributes:
    loc: the means μ.
    log_scale: log σ, broadcastable against `loc`.
  """
  loc: Array
  log_scale: Array

  def __post_init__(self):
    _check_finite('Normal.loc', self.loc)
    _check_finite('Normal.log_scale', self.log_scale)
    if not (_is_concrete(self.loc) or isinstance(self.loc, jax.core.Tracer)):
      return  # A pytree placeholder (e.g. inside tree_util), not values.
    try:
      jnp.broadcast_shapes(jnp.shape(self.loc), jnp.shape(self.log_scale))
    except ValueError as e:
      raise ValueError(
          f'Normal: loc shape {jnp.shape(self.loc)} and log_scale shape '
          f'{jnp.shape(self.log_scale)} do not broadcast.') from e

  @classmethod
  def from_scale(cls, loc: Array, scale: Array) -> 'Normal':
    """N(loc, scale^2); `scale` must be > 0 (checked when concrete)."""
    _check_finite_positive('Normal scale', scale)
    return cls(loc=loc, log_scale=jnp.log(scale))

  @property
  def scale(self) -> Array:
    return jnp.exp(self.log_scale)

  @property
  def shape(self) -> tuple[int, ...]:
    return jnp.broadcast_shapes(jnp.shape(self.loc), jnp.shape(self.log_scale))

  def mean(self) -> Array:
    return jnp.broadcast_to(self.loc, self.shape)

  def variance(self) -> Array:
    return jnp.broadcast_to(jnp.exp(2.0 * self.log_scale), self.shape)

  def sample(self, key: PRNGKey, sample_shape=()) -> Array:
    """Reparameterized sample z = μ + σ ε, ε ~ N(0, I) (differentiable)."""
    eps = jax.random.normal(key, _shape(sample_shape) + self.shape,
                            dtype=jnp.result_type(self.loc, float))
    return self.loc + self.scale * eps

  def log_prob(self, x: Array) -> Array:
    """log N(x; μ, σ²) = -½((x-μ)/σ)² - log σ - ½ log 2π, elementwise."""
    z = (x - self.loc) * jnp.exp(-self.log_scale)
    return -0.5 * z**2 - self.log_scale - _HALF_LOG_TWO_PI

  def event_log_prob(self, x: Array) -> Array:
    """log N(x; μ, diag σ²) of the last axis as one vector: Σ_d log_prob."""
    return jnp.sum(self.log_prob(x), axis=-1)

  def entropy(self) -> Array:
    """H = ½ log(2πe) + log σ, elementwise."""
    return jnp.broadcast_to(0.5 + _HALF_LOG_TWO_PI + self.log_scale,
                            self.shape)


def standard_normal(shape: Sequence[int], dtype=jnp.float32) -> Normal:
  """The prior N(0, I) with the given shape."""
  zeros = jnp.zeros(tuple(shape), dtype)
  return Normal(loc=zeros, log_scale=zeros)


@types.pytree_dataclass
class MultivariateNormal:
  """Full-covariance Gaussian N(μ, Σ), Σ = L Lᵀ, over the last axis (D).

  One distribution per index of the batch shape (loc's and scale_tril's
  leading axes, broadcast); the event is a D-vector, so `log_prob`,
  `entropy` and the KLs give one value per D-vector. With a diagonal L it is
  `Normal(loc, log diag L)` read as one vector: the same density summed over
  the last axis, and the same samples for the same key.

  Attributes:
    loc: μ, [..., D].
    scale_tril: L, lower triangular with a positive diagonal, [..., D, D]
      (the strictly upper part must be zero; it is not read by `log_prob`
      and `entropy` but is by `sample`).
  """
  loc: Array
  scale_tril: Array

  def __post_init__(self):
    _check_finite('MultivariateNormal.loc', self.loc)
    _check_finite('MultivariateNormal.scale_tril', self.scale_tril)
    if not (_is_concrete(self.loc) or isinstance(self.loc, jax.core.Tracer)):
      return  # A pytree placeholder (e.g. inside tree_util), not values.
    loc, tril = jnp.shape(self.loc), jnp.shape(self.scale_tril)
    if (len(loc) < 1 or len(tril) < 2 or tril[-1] != tril[-2] or
        tril[-1] != loc[-1]):
      raise ValueError(f'MultivariateNormal: loc shape {loc} must be [..., D] '
                       f'and scale_tril shape {tril} [..., D, D].')
    try:
      jnp.broadcast_shapes(loc[:-1], tril[:-2])
    except ValueError as e:
      raise ValueError(f'MultivariateNormal: batch shapes {loc[:-1]} (loc) '
                       f'and {tril[:-2]} (scale_tril) do not broadcast.') from e
    if _is_concrete(self.scale_tril):
      _check_finite_positive('MultivariateNormal.scale_tril diagonal',
                             np.diagonal(np.asarray(self.scale_tril), 0, -2,
                                         -1))

  @classmethod
  def from_covariance(cls, loc: Array,
                      covariance: Array) -> 'MultivariateNormal':
    """N(loc, Σ) with L = cholesky(Σ); Σ [..., D, D] positive definite."""
    return cls(loc=loc, scale_tril=jnp.linalg.cholesky(covariance))

  @classmethod
  def from_normal(cls, normal: Normal) -> 'MultivariateNormal':
    """The diagonal Normal(μ, log σ) as one vector: L = diag(σ), last axis."""
    scale = jnp.broadcast_to(normal.scale, normal.shape)
    return cls(loc=normal.mean(), scale_tril=_diag_embed(scale))

  @classmethod
  def from_unconstrained(cls, loc: Array, log_diag: Array,
                         lower: Array | None = None) -> 'MultivariateNormal':
    """L = diag(exp(s)) + strictly-lower(A), from unconstrained parameters.

    Every (μ, s, A) gives a valid L, so the three can be optimized freely;
    the entries of `lower` on and above the diagonal are ignored (zero
    gradient). `lower=None` is the diagonal family (A = 0).

    Args:
      loc: μ, [..., D].
      log_diag: s = log diag L, [..., D].
      lower: A, [..., D, D], or None.

    Returns:
      N(μ, L Lᵀ).
    """
    tril = _diag_embed(jnp.exp(log_diag))
    if lower is not None:
      tril = tril + jnp.tril(lower, -1)
    return cls(loc=loc, scale_tril=tril)

  @property
  def dim(self) -> int:
    """D, the event size."""
    return jnp.shape(self.loc)[-1]

  @property
  def batch_shape(self) -> tuple[int, ...]:
    return jnp.broadcast_shapes(jnp.shape(self.loc)[:-1],
                                jnp.shape(self.scale_tril)[:-2])

  @property
  def shape(self) -> tuple[int, ...]:
    """The shape of one sample: batch shape + (D,)."""
    return self.batch_shape + (self.dim,)

  def mean(self) -> Array:
    return jnp.broadcast_to(self.loc, self.shape)

  def covariance(self) -> Array:
    """Σ = L Lᵀ, [..., D, D]."""
    tril = jnp.broadcast_to(self.scale_tril, self.shape + (self.dim,))
    return tril @ jnp.swapaxes(tril, -1, -2)

  def variance(self) -> Array:
    """diag Σ = Σ_j L_ij², [..., D]."""
    tril = jnp.broadcast_to(self.scale_tril, self.shape + (self.dim,))
    return jnp.sum(tril**2, axis=-1)

  def log_det_covariance(self) -> Array:
    """log det Σ = 2 Σ_i log L_ii, [...]."""
    diag = jnp.diagonal(self.scale_tril, axis1=-2, axis2=-1)
    return jnp.broadcast_to(2.0 * jnp.sum(jnp.log(diag), -1),
                            self.batch_shape)

  def whiten(self, x: Array) -> Array:
    """L⁻¹ (x - μ) (a triangular solve), broadcast over leading axes."""
    solve = jnp.vectorize(
        functools.partial(jax.lax.linalg.triangular_solve, lower=True,
                          transpose_a=True), signature='(n,n),(n)->(n)')
    return solve(self.scale_tril, x - self.loc)

  def sample(self, key: PRNGKey, sample_shape=()) -> Array:
    """Reparameterized z = μ + L ε, ε ~ N(0, I) [sample_shape + shape].

    ε is `jax.random.normal(key, sample_shape + batch_shape + (D,))`, as in
    `Normal.sample` and `jax.random.multivariate_normal`, so a diagonal L
    gives Normal's samples and a Cholesky factor the latter's.
    """
    eps = jax.random.normal(key, _shape(sample_shape) + self.shape,
                            dtype=jnp.result_type(self.loc, float))
    return self.loc + jnp.einsum('...ij,...j->...i', self.scale_tril, eps,
                                 precision=jax.lax.Precision.HIGHEST)

  def log_prob(self, x: Array) -> Array:
    """log N(x; μ, Σ) = -½‖L⁻¹(x-μ)‖² - Σ_i log L_ii - (D/2) log 2π.

    One value per D-vector: x [..., D] -> [...].
    """
    y = self.whiten(x)
    diag = jnp.diagonal(self.scale_tril, axis1=-2, axis2=-1)
    return (-0.5 * jnp.sum(y**2, -1) - self.dim * _HALF_LOG_TWO_PI -
            jnp.sum(jnp.log(diag), -1))

  def event_log_prob(self, x: Array) -> Array:
    """= `log_prob` (the event already is the last axis)."""
    return self.log_prob(x)

  def entropy(self) -> Array:
    """H = (D/2)(1 + log 2π) + Σ_i log L_ii, one value per D-vector."""
    return self.dim * (0.5 + _HALF_LOG_TWO_PI) + 0.5 * self.log_det_covariance()


def _diag_embed(diag: Array) -> Array:
  """[..., D] -> [..., D, D] with `diag` on the diagonal, zeros elsewhere."""
  return diag[..., :, None] * jnp.eye(diag.shape[-1], dtype=diag.dtype)


@types.pytree_dataclass
class Bernoulli:
  """Bernoulli(σ(logits)), elementwise, values in {0, 1}.

  Attributes:
    logits: log p/(1-p).
  """
  logits: Array

  def __post_init__(self):
    _check_finite('Bernoulli.logits', self.logits)

  @property
  def probs(self) -> Array:
    return jax.nn.sigmoid(self.logits)

  @property
  def shape(self) -> tuple[int, ...]:
    return jnp.shape(self.logits)

  def mean(self) -> Array:
    return self.probs

  def sample(self, key: PRNGKey, sample_shape=()) -> Array:
    """b = 1[u < σ(logits)], u ~ U(0,1) (as floats; not differentiable)."""
    u = jax.random.uniform(key, _shape(sample_shape) + self.shape)
    return (u < self.probs).astype(jnp.result_type(self.logits, float))

  def log_prob(self, x: Array) -> Array:
    """log p(x) = x log σ(l) + (1-x) log σ(-l) = x·l - softplus(l)."""
    return x * self.logits - jax.nn.softplus(self.logits)

  def event_log_prob(self, x: Array) -> Array:
    """log p(x) of the last axis as one binary vector: Σ_d log_prob
    (`bernoulli_log_likelihood`: one exp and one log1p per element)."""
    return bernoulli_log_likelihood(x, self.logits)

  def entropy(self) -> Array:
    """H = softplus(l) - σ(l)·l."""
    return jax.nn.softplus(self.logits) - self.probs * self.logits


class _ClassesLast:
  """Shape properties of a distribution whose `logits` hold the classes on
  the last axis (one categorical variable per leading index)."""
  logits: Array

  @property
  def num_classes(self) -> int:
    """Classes on the last axis."""
    return jnp.shape(self.logits)[-1]

  @property
  def shape(self) -> tuple[int, ...]:
    """One categorical variable (or simplex) per leading index."""
    return jnp.shape(self.logits)[:-1]


@types.pytree_dataclass
class Categorical(_ClassesLast):
  """Categorical(softmax(logits)) over the last axis; samples are indices.

  Attributes:
    logits: unnormalised log-probabilities, classes on the last axis.
  """
  logits: Array

  def __post_init__(self):
    _check_finite('Categorical.logits', self.logits)
    if jnp.ndim(self.logits) < 1:
      raise ValueError('Categorical.logits needs a class axis (ndim >= 1).')

  @property
  def log_probs(self) -> Array:
    return jax.nn.log_softmax(self.logits, axis=-1)

  @property
  def probs(self) -> Array:
    return jax.nn.softmax(self.logits, axis=-1)

  def sample(self, key: PRNGKey, sample_shape=()) -> Array:
    """Class indices drawn with the Gumbel-max trick."""
    shape = _shape(sample_shape) + self.shape
    return jax.random.categorical(key, self.logits, axis=-1, shape=shape)

  def log_prob(self, x: Array) -> Array:
    """log softmax(logits)[x] for integer class indices x."""
    x = jnp.asarray(x).astype(jnp.int32)
    log_p = jnp.broadcast_to(self.log_probs, x.shape + (self.num_classes,))
    return jnp.take_along_axis(log_p, x[..., None], axis=-1)[..., 0]

  def entropy(self) -> Array:
    """H = -Σ_c p_c log p_c."""
    return -jnp.sum(self.probs * self.log_probs, axis=-1)


def _check_temperature(temperature) -> None:
  _check_finite_positive('temperature', temperature)


@types.pytree_dataclass
class RelaxedBernoulli:
  """Binary Concrete / relaxed Bernoulli (Maddison et al. 2017), elementwise.

  y = σ((logits + log u - log(1-u)) / τ), u ~ U(0, 1); as τ -> 0 the samples
  become Bernoulli(σ(logits)). Sampling is reparameterized.

  Attributes:
    logits: the logits of the Bernoulli being relaxed.
    temperature: τ > 0.
  """
  logits: Array
  temperature: Array

  def __post_init__(self):
    _check_finite('RelaxedBernoulli.logits', self.logits)
    _check_temperature(self.temperature)

  @property
  def shape(self) -> tuple[int, ...]:
    return jnp.shape(self.logits)

  def sample_logits(self, key: PRNGKey, sample_shape=()) -> Array:
    """The pre-sigmoid relaxed logit (logits + L) / τ, L = log u - log(1-u).

    u is uniform on the open lattice {(j + ½) ε}, ε the float spacing
    below 1, so L is symmetric and bounded (|L| ≤ 16.6 in float32) with no
    atom (a uniform floored at the smallest float put mass 2⁻²³ at -87).
    """
    shape = _shape(sample_shape) + self.shape
    dtype = jnp.result_type(self.logits, float)
    u = jax.random.uniform(key, shape, dtype) + 0.5 * jnp.finfo(dtype).eps
    noise = jnp.log(u) - jnp.log1p(-u)
    return (self.logits + noise) / self.temperature

  def sample(self, key: PRNGKey, sample_shape=()) -> Array:
    return jax.nn.sigmoid(self.sample_logits(key, sample_shape))

  def log_prob(self, y: Array) -> Array:
    """Binary Concrete density of y in (0, 1).

    log p(y) = log τ + a - (τ+1)(log y + log(1-y))
               - 2 log(exp(a) y^{-τ} + (1-y)^{-τ}),  a the logits.
    """
    tau, a = self.temperature, self.logits
    log_y, log_1my = jnp.log(y), jnp.log1p(-y)
    return (jnp.log(tau) + a - (tau + 1.0) * (log_y + log_1my) -
            2.0 * jnp.logaddexp(a - tau * log_y, -tau * log_1my))


@types.pytree_dataclass
class RelaxedCategorical(_ClassesLast):
  """Concrete / Gumbel-softmax distribution over the simplex (last axis).

  y = softmax((logits + g) / τ), g ~ Gumbel(0, 1) i.i.d.; reparameterized.

  Attributes:
    logits: logits of the Categorical being relaxed (classes last).
    temperature: τ > 0.
  """
  logits: Array
  temperature: Array

  def __post_init__(self):
    _check_finite('RelaxedCategorical.logits', self.logits)
    _check_temperature(self.temperature)

  def sample(self, key: PRNGKey, sample_shape=()) -> Array:
    shape = _shape(sample_shape) + jnp.shape(self.logits)
    g = jax.random.gumbel(key, shape, dtype=jnp.result_type(self.logits, float))
    return jax.nn.softmax((self.logits + g) / self.temperature, axis=-1)

  def log_prob(self, y: Array) -> Array:
    """Concrete density (Maddison et al. 2017, eq. 6) of y on the simplex.

    log p(y) = log Γ(n) + (n-1) log τ + Σ_c (l_c - (τ+1) log y_c)
               - n logsumexp_c(l_c - τ log y_c).
    """
    n = self.num_classes
    tau = self.temperature
    log_y = jnp.log(y)
    lse = jax.scipy.special.logsumexp(self.logits - tau * log_y, axis=-1)
    return (jax.scipy.special.gammaln(n) + (n - 1) * jnp.log(tau) +
            jnp.sum(self.logits - (tau + 1.0) * log_y, axis=-1) - n * lse)


def check_same_shape(a: Array, b: Array, what: str) -> None:
  """Raises a ValueError naming `what` when two arrays differ in shape."""
  if jnp.shape(a) != jnp.shape(b):
    raise ValueError(f'{what}: shapes {jnp.shape(a)} and {jnp.shape(b)} '
                     'differ.')


__all__ = [
    'Normal', 'standard_normal', 'MultivariateNormal', 'Bernoulli',
    'Categorical', 'RelaxedBernoulli', 'RelaxedCategorical',
    'check_same_shape', 'bernoulli_log_likelihood', 'Mixture',
    'InverseAutoregressiveFlow', 'AutoregressiveBernoulli'
]


@jax.custom_jvp
def bernoulli_log_likelihood(x: Array, logits: Array) -> Array:
  """log p(x|l) = Σ_j x_j l_j - max(l_j, 0) - log1p(exp(-|l_j|)) (last axis).

  = Σ_j x_j l_j - softplus(l_j), for pixels x_j in [0, 1]. Its derivatives
  are ∂/∂l_j = x_j - σ(l_j) and ∂/∂x_j = l_j (a custom JVP that reuses
  exp(-|l_j|) for σ(l_j); forward and reverse mode, any order).
  """
  return _bernoulli_terms(x, logits)[0]


def _bernoulli_terms(x, logits):
  e = jnp.exp(-jnp.abs(logits))
  value = jnp.sum(x * logits - jnp.maximum(logits, 0.0) - jnp.log1p(e),
                  axis=-1)
  sigmoid = jnp.where(logits >= 0, 1.0, e) / (1.0 + e)
  return value, sigmoid


def _bernoulli_log_likelihood_jvp(primals, tangents):
  x, logits = primals
  dx, dlogits = tangents
  value, sigmoid = _bernoulli_terms(x, logits)
  terms = []  # No work for a zero tangent (e.g. of the data x).
  if not _is_zero(dlogits):
    terms.append((x - sigmoid) * dlogits)
  if not _is_zero(dx):
    terms.append(logits * dx)
  return value, (jnp.sum(sum(terms), axis=-1) if terms else
                 jnp.zeros_like(value))


def _is_zero(tangent) -> bool:
  return isinstance(tangent, custom_derivatives.SymbolicZero)


bernoulli_log_likelihood.defjvp(_bernoulli_log_likelihood_jvp,
                                symbolic_zeros=True)


# Flexible families (issue 18): mixtures, an inverse autoregressive flow, an
# autoregressive Bernoulli. Each has `event_log_prob` over the last axis.


def _event_log_prob(dist, x: Array) -> Array:
  """log p(x) of vectors x [..., n] (the distribution's own event_log_prob,
  else Σ of its elementwise log_prob over the last axis)."""
  own = getattr(dist, 'event_log_prob', None)
  return own(x) if own is not None else jnp.sum(dist.log_prob(x), -1)


def _mixture_log_weights(logits: Array) -> Array:
  """log π_k = logits_k - logsumexp(logits) (normalized mixture weights)."""
  return jax.nn.log_softmax(logits, axis=-1)


@types.pytree_dataclass
class Mixture:
  """p(z) = Σ_k π_k p_k(z), π = softmax(logits), over vectors z [..., D].

  The components are one distribution pytree with batch shape [..., K, D]
  (e.g. `Normal` loc [K, D]: a mixture of diagonal Gaussians; or an
  encoder's q at K pseudo-inputs: the VampPrior). Sampling draws the
  component index (not reparameterized: for priors and proposals).

  Attributes:
    logits: unnormalized log π, [..., K].
    components: the K components, batch shape [..., K, D].
  """
  logits: Array
  components: Any

  @property
  def shape(self) -> tuple[int, ...]:
    """The shape of one sample: batch shape + (D,)."""
    comp = tuple(self.components.mean().shape)
    return comp[:-2] + comp[-1:]

  def mean(self) -> Array:
    """E[z] = Σ_k π_k E_k[z] (each component's `mean()`)."""
    w = jnp.exp(_mixture_log_weights(self.logits))
    return jnp.sum(w[..., None] * self.components.mean(), -2)

  def sample(self, key: PRNGKey, sample_shape=()) -> Array:
    """k ~ Cat(π), z ~ p_k: every component is drawn, one is kept."""
    k1, k2 = jax.random.split(key)
    shape = _shape(sample_shape)
    all_z = self.components.sample(k2, shape)  # [S, ..., K, D].
    logits = jnp.broadcast_to(self.logits, all_z.shape[:-1])
    idx = jax.random.categorical(k1, logits, axis=-1)  # [S, ...].
    return jnp.take_along_axis(all_z, idx[..., None, None], -2)[..., 0, :]

  def component_log_probs(self, x: Array) -> Array:
    """log π_k + log p_k(x), [..., K], for x [..., D]."""
    return (_mixture_log_weights(self.logits) +
            _event_log_prob(self.components, x[..., None, :]))

  def event_log_prob(self, x: Array) -> Array:
    """log p(x) = logsumexp_k (log π_k + log p_k(x)), one per D-vector."""
    return jax.nn.logsumexp(self.component_log_probs(x), -1)

  def log_prob(self, x: Array) -> Array:
    """= `event_log_prob` (the event is the last axis)."""
    return self.event_log_prob(x)


def _dense(x: Array, w: Array, b: Array | None = None) -> Array:
  """x W (+ b) for x [..., m], W [..., m, n] (batch axes broadcast)."""
  y = jnp.matmul(x[..., None, :], w,
                 precision=jax.lax.Precision.HIGHEST)[..., 0, :]
  return y if b is None else y + b


def _affine_log_det(gate: Array) -> Array:
  """log |det ∂y/∂x| = Σ_i log σ(g_i) of one IAF step (last axis)."""
  return jnp.sum(jax.nn.log_sigmoid(gate), -1)


def _activation(name: str) -> Callable[[Array], Array]:
  return {'elu': jax.nn.elu, 'tanh': jnp.tanh, 'relu': jax.nn.relu}[name]


def _iaf_shift_gate(activation: str, step: tuple[Array, ...],
                    x: Array) -> tuple[Array, Array]:
  """(m, g) of one IAF step (c, W, A, a, G, g₀) at x: h = act(x W + c),
  m = h A + a, g = h G + g₀."""
  context, w_in, w_shift, b_shift, w_gate, b_gate = step
  h = _activation(activation)(_dense(x, w_in, context))
  return _dense(h, w_shift, b_shift), _dense(h, w_gate, b_gate)


def _iaf_step(activation: str, step: tuple[Array, ...],
              x: Array) -> tuple[Array, Array]:
  """(F(x), g): F(x) = s ⊙ x + (1 - s) ⊙ m, s = σ(g), one IAF step
  (unreversed), and its gate g (log det ∂F/∂x = Σ_i log σ(g_i))."""
  shift, gate = _iaf_shift_gate(activation, step, x)
  s = jax.nn.sigmoid(gate)
  return s * x + (1.0 - s) * shift, gate


def _fixed_point(update: Callable[[Array], Array], start: Array,
                 max_passes: int) -> Array:
  """x ← update(x) from `start` until a pass moves no entry by more than
  16 ε (1 + |x|) (ε the dtype's spacing at 1), or `max_passes` passes."""
  tol = 16.0 * jnp.finfo(start.dtype).eps

  def cond(carry):
    i, _, moved = carry
    return (i < max_passes) & moved

  def body(carry):
    i, x, _ = carry
    new = update(x)
    return i + 1, new, jnp.any(jnp.abs(new - x) > tol * (1.0 + jnp.abs(x)))

  return jax.lax.while_loop(cond, body, (0, start, jnp.array(True)))[1]


# The inversion's iterates stay in [-IAF_RANGE, IAF_RANGE]: before an
# iterate is exact (pass n fixes x_1..x_n only) its coordinates can be far
# off, drive a gate to σ(g) = 0 in float32, and an inf there becomes NaN in
# the masked matmul (0 · inf), also when the exact inverse is moderate. A
# clipped iterate is finite, so the passes stay exact (`_invert_step`).
IAF_RANGE = 1e6
# 1/σ(g) = 1 + e^{-g} with e^{-g} capped at e^80 (finite in float32): this
# changes x_i = m_i + (y_i - m_i)/s_i only where σ(g_i) < σ(-80) ≈ 2e-35,
# i.e. where |x_i| ≥ IAF_RANGE unless |y_i - m_i| < 2e-29.
_GATE_FLOOR = -80.0


def _reciprocal_gate(gate: Array) -> Array:
  """1/σ(g) = 1 + e^{-g}, with g floored at _GATE_FLOOR (finite)."""
  return 1.0 + jnp.exp(-jnp.maximum(gate, _GATE_FLOOR))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _invert_step(activation: str, step: tuple[Array, ...], y: Array) -> Array:
  """x = F⁻¹(y) of one IAF step (`_iaf_step`), by the passes

    x ← clip(m(x) + (y - m(x)) / s(x), ±IAF_RANGE),  from x = y

  (F(x) = y ⇔ x = (y - (1 - s) ⊙ m) / s = m + (y - m) / s). m_i, s_i depend
  on x_{<i} only, so pass n makes x_1..x_n exact: D passes solve it exactly,
  and the loop stops earlier once a pass changes nothing beyond rounding
  (`_fixed_point`). The clip keeps the iterates finite, so this holds while
  the exact x is inside the range; where it is not, the first coordinate
  outside ends at ±IAF_RANGE exactly (`InverseAutoregressiveFlow.inverse`
  reports it). Gradients (`_invert_step_bwd`) by the implicit function
  theorem at F(x) = y, not through the passes.
  """
  def update(x):
    shift, gate = _iaf_shift_gate(activation, step, x)
    return jnp.clip(shift + (y - shift) * _reciprocal_gate(gate),
                    -IAF_RANGE, IAF_RANGE)

  return _fixed_point(update, y, y.shape[-1])


def _invert_step_fwd(activation, step, y):
  x = _invert_step(activation, step, y)
  return x, (step, x)


def _invert_step_bwd(activation, residuals, v):
  """With J = ∂F/∂x at x = F⁻¹(y) (lower triangular, diagonal s):
  ȳ = J⁻ᵀ v and step̄ = -(∂F/∂step)ᵀ J⁻ᵀ v. w = J⁻ᵀ v by the passes
  w ← (v - (Jᵀw - s ⊙ w)) / s (Jᵀ w - s ⊙ w is strictly upper triangular
  in w: exact after D passes, stopped as in the forward solve; 1/s as in
  the forward solve, so v = 0 gives w = 0 at any x)."""
  step, x = residuals
  gate = _iaf_shift_gate(activation, step, x)[1]
  s, inv_s = jax.nn.sigmoid(gate), _reciprocal_gate(gate)
  _, vjp_x = jax.vjp(lambda a: _iaf_step(activation, step, a)[0], x)
  update = lambda w: (v - (vjp_x(w)[0] - s * w)) * inv_s
  w = _fixed_point(update, v * inv_s, x.shape[-1])
  _, vjp_step = jax.vjp(lambda p: _iaf_step(activation, p, x)[0], step)
  step_bar = jax.tree.map(jnp.negative, vjp_step(w)[0])
  return step_bar, w


_invert_step.defvjp(_invert_step_fwd, _invert_step_bwd)


@types.pytree_dataclass
class InverseAutoregressiveFlow:
  """q(z) of an inverse autoregressive flow (Kingma et al. 2016) on a Gaussian.

    z_0 = μ + σ ⊙ u, u ~ N(0, I);  for t = 1..T (then the order reversed):
    h = a(z_{t-1} W_t + c_t),  m = h A_t + a_t,  s_t = σ(h G_t + g_t),
    z_t = s_t ⊙ z_{t-1} + (1 - s_t) ⊙ m
    log q(z_T) = log N(z_0; μ, σ²) - Σ_t Σ_i log s_{t,i}

  with W_t, A_t, G_t masked (MADE) so that m_i, s_i depend on z_{t-1,<i}
  only: the Jacobian of each step is triangular with diagonal s_t. Sampling
  is one pass per step (reparameterized). `event_log_prob` takes any z:
  each step is inverted by fixed-point passes x ← m(x) + (y - m(x)) / s(x),
  which fix one more coordinate per pass (exact after D) and stop early
  once a pass changes nothing beyond rounding (`_invert_step`; about 10
  passes on a trained IAF), with gradients by the implicit function
  theorem; so log q is also available at stopped parameters (STL). Where an
  inverse leaves ±IAF_RANGE, log q is -inf (`event_log_prob`). Every array
  has the batch axes in front (shared weights are broadcast), so the pytree
  vmaps and expands.

  Attributes:
    loc: μ, [..., D].
    log_scale: log σ, [..., D].
    context: c_t (the encoder's per-example hidden bias), [..., T, H].
    w_in: masked W_t, [..., T, D, H].
    w_shift: masked A_t, [..., T, H, D].
    b_shift: a_t, [..., T, D].
    w_gate: masked G_t, [..., T, H, D].
    b_gate: g_t, [..., T, D].
    activation: a ('elu', 'tanh' or 'relu'; static).
  """
  loc: Array
  log_scale: Array
  context: Array
  w_in: Array
  w_shift: Array
  b_shift: Array
  w_gate: Array
  b_gate: Array
  activation: str = types.static_field(default='elu')

  @property
  def num_steps(self) -> int:
    return jnp.shape(self.w_in)[-3]

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(jnp.shape(self.loc))

  def _step(self, t: int) -> tuple[Array, ...]:
    """Step t's (c_t, W_t, A_t, a_t, G_t, g_t)."""
    return (self.context[..., t, :], self.w_in[..., t, :, :],
            self.w_shift[..., t, :, :], self.b_shift[..., t, :],
            self.w_gate[..., t, :, :], self.b_gate[..., t, :])

  def _shift_gate(self, t: int, x: Array) -> tuple[Array, Array]:
    return _iaf_shift_gate(self.activation, self._step(t), x)

  def forward(self, z0: Array) -> tuple[Array, Array]:
    """(z_T, Σ_t log det ∂z_t/∂z_{t-1}) from z_0 [..., D]: one pass per step."""
    z, log_det = z0, jnp.zeros(())
    for t in range(self.num_steps):
      z, gate = _iaf_step(self.activation, self._step(t), z)
      z = z[..., ::-1]
      log_det = log_det + _affine_log_det(gate)
    return z, log_det

  def inverse(self, z: Array) -> tuple[Array, Array]:
    """(z_0, Σ_t log det ∂z_t/∂z_{t-1}) from z_T: each step inverted by
    fixed-point passes (`_invert_step`: at most D, exact where the inverse
    of every step stays inside ±IAF_RANGE; see `inverse_inside`)."""
    return self.inverse_inside(z)[:2]

  def inverse_inside(self, z: Array) -> tuple[Array, Array, Array]:
    """(z_0, Σ_t log det, inside): `inverse` and, per D-vector, whether
    every step's inverse has all |x_i| < IAF_RANGE (else z_0 is clipped
    there and is not f⁻¹(z))."""
    log_det = jnp.zeros(())
    z = jnp.broadcast_to(z, jnp.broadcast_shapes(z.shape, self.shape))
    inside = jnp.ones(z.shape[:-1], bool)
    for t in reversed(range(self.num_steps)):
      z = _invert_step(self.activation, self._step(t), z[..., ::-1])
      inside &= jnp.all(jnp.abs(z) < IAF_RANGE, -1)
      log_det = log_det + _affine_log_det(self._shift_gate(t, z)[1])
    return z, log_det, inside

  def base(self) -> Normal:
    """The Gaussian N(μ, σ²) under the flow."""
    return Normal(self.loc, self.log_scale)

  def mean(self) -> Array:
    """The flow's image of μ (the location of q; E_q[z] has no closed
    form), [..., D]."""
    return self.forward(jnp.broadcast_to(self.loc, self.shape))[0]

  def sample(self, key: PRNGKey, sample_shape=()) -> Array:
    """Reparameterized z_T = flow(μ + σ u), u ~ N(0, I)."""
    return self.forward(self.base().sample(key, sample_shape))[0]

  def sample_and_log_prob(self, key: PRNGKey,
                          sample_shape=()) -> tuple[Array, Array]:
    """(z_T, log q(z_T)) in one pass per step (no inversion)."""
    z0 = self.base().sample(key, sample_shape)
    z, log_det = self.forward(z0)
    return z, self.base().event_log_prob(z0) - log_det

  def event_log_prob(self, z: Array) -> Array:
    """log q(z) = log N(f⁻¹(z); μ, σ²) - Σ_t log det, one per D-vector;
    -inf where an inverse leaves ±IAF_RANGE (`inverse_inside`), a density
    treated as 0 (for a mixture component: log p(z) and the bounds that use
    it can only be lower), with gradient 0 there."""
    z0, log_det, inside = self.inverse_inside(z)
    return jnp.where(inside, self.base().event_log_prob(z0) - log_det,
                     -jnp.inf)

  def log_prob(self, z: Array) -> Array:
    """= `event_log_prob` (the event is the last axis)."""
    return self.event_log_prob(z)


@types.pytree_dataclass
class AutoregressiveBernoulli:
  """p(x|z) = Π_j Bern(x_j; σ(l_j(x_{<j}, z))) over the last axis (MADE).

    h_1 = a(x W_1 + c(z)),  h_{l+1} = a(h_l W_{l+1} + b_{l+1}),
    l(x, z) = o(z) + x V + h_L W_out + b_out

  with W_1, ..., W_out masked and V strictly lower triangular, so that l_j
  depends on x_{<j} (and z) only. `event_log_prob` is one pass; `sample` is
  sequential (d passes). The z-dependent parts o(z) [..., d] and c(z)
  [..., H_1] carry the batch axes; the shared weights do not (a decoder is
  never vmapped or expanded).

  Attributes:
    z_logits: o(z), [..., d].
    z_hidden: c(z), [..., H_1] (ignored without hidden layers).
    direct: V (masked), [d, d].
    hidden: ((W_1, None), (W_2, b_2), ..., (W_out, b_out)), masked; empty:
      no hidden layers.
    activation: a (static).
  """
  z_logits: Array
  z_hidden: Array
  direct: Array
  hidden: tuple = ()
  activation: str = types.static_field(default='elu')

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(jnp.shape(self.z_logits))

  def logits(self, x: Array) -> Array:
    """l(x, z) [..., d]: l_j = log-odds of x_j given x_{<j} and z."""
    x = jnp.asarray(x, jnp.result_type(self.z_logits, float))
    out = self.z_logits + _dense(x, self.direct)
    if self.hidden:
      act = _activation(self.activation)
      h = act(_dense(x, self.hidden[0][0]) + self.z_hidden)
      for w, b in self.hidden[1:-1]:
        h = act(_dense(h, w, b))
      out = out + _dense(h, *self.hidden[-1])
    return out

  def log_prob(self, x: Array) -> Array:
    """log p(x_j | x_{<j}, z) = x_j l_j - softplus(l_j), per pixel."""
    logits = self.logits(x)
    return x * logits - jax.nn.softplus(logits)

  def event_log_prob(self, x: Array) -> Array:
    """log p(x|z) = Σ_j log p(x_j | x_{<j}, z): one pass."""
    return bernoulli_log_likelihood(x, self.logits(x))

  def sample(self, key: PRNGKey, sample_shape=()) -> Array:
    """x_j ~ Bern(σ(l_j(x_{<j}, z))) for j = 1..d in turn (d passes)."""
    shape = _shape(sample_shape) + self.shape
    u = jax.random.uniform(key, shape)

    def body(j, x):
      p = jax.nn.sigmoid(self.logits(x))
      return x.at[..., j].set((u[..., j] < p[..., j]).astype(x.dtype))

    return jax.lax.fori_loop(0, shape[-1], body, jnp.zeros(shape))

  def mean(self) -> Array:
    """Not available: the pixels' marginal probabilities have no closed form
    (E[x_j|z] sums over x_{<j})."""
    raise NotImplementedError('AutoregressiveBernoulli: E[x|z] has no closed '
                              'form; draw samples instead.')
