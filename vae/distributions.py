"""Small distributions as pytrees: Normal, Bernoulli, Categorical, relaxations.

Every distribution is *elementwise* over its parameters' shape (its "batch
shape"), except Categorical and RelaxedCategorical whose last parameter axis is
the event (the classes). `log_prob` returns one value per element (per
categorical variable); sum it yourself over the axes that form one sample.
All computations are in logits / log-scales (log_sigmoid, softplus, logsumexp):
no log(0), no 0 * inf.
"""

import math
from typing import Sequence

import jax
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

  def entropy(self) -> Array:
    """H = ½ log(2πe) + log σ, elementwise."""
    return jnp.broadcast_to(0.5 + _HALF_LOG_TWO_PI + self.log_scale,
                            self.shape)


def standard_normal(shape: Sequence[int], dtype=jnp.float32) -> Normal:
  """The prior N(0, I) with the given shape."""
  zeros = jnp.zeros(tuple(shape), dtype)
  return Normal(loc=zeros, log_scale=zeros)


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

  def entropy(self) -> Array:
    """H = softplus(l) - σ(l)·l."""
    return jax.nn.softplus(self.logits) - self.probs * self.logits


@types.pytree_dataclass
class Categorical:
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

  @property
  def num_classes(self) -> int:
    return jnp.shape(self.logits)[-1]

  @property
  def shape(self) -> tuple[int, ...]:
    return jnp.shape(self.logits)[:-1]

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

    log p(y) = log τ + l - (τ+1)(log y + log(1-y))
               - 2 log(exp(l) y^{-τ} + (1-y)^{-τ}).
    """
    tau, l = self.temperature, self.logits
    log_y, log_1my = jnp.log(y), jnp.log1p(-y)
    return (jnp.log(tau) + l - (tau + 1.0) * (log_y + log_1my) -
            2.0 * jnp.logaddexp(l - tau * log_y, -tau * log_1my))


@types.pytree_dataclass
class RelaxedCategorical:
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

  num_classes = Categorical.num_classes  # classes on the last axis
  shape = Categorical.shape  # one simplex per categorical variable

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
    'Normal', 'standard_normal', 'Bernoulli', 'Categorical',
    'RelaxedBernoulli', 'RelaxedCategorical', 'check_same_shape'
]
