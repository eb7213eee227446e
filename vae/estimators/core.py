"""Gradient estimators for d/dθ E_{q_θ(z)}[f(z)], behind one signature.

Every estimator here has the signature

    estimator(function, params, dist_builder, key, num_samples) -> grads

where `function(z) -> scalar` is the integrand for ONE sample z (it may close
over other traced parameters), `dist_builder(params)` returns a distribution
from `vae.distributions`, and `grads` (same structure as `params`) is one
estimate averaging `num_samples` samples. q(z) is the product distribution
over all elements of the sample (log q(z) = Σ log_prob(z)).

Each estimator is the gradient of a *surrogate objective* (the `*_surrogate`
functions; `gradient_from_surrogate` turns one into the estimator, and
`vae.estimators.registry.get(name)` gives it by name): a scalar whose value
is the Monte Carlo estimate of E_q[f] and whose `jax.grad` is the estimator.
Surrogates compose: put one inside a larger loss and `jax.grad` of that loss
gives the estimator's gradient for the distribution parameters and the
ordinary pathwise gradient for any parameters `function` closes over
(d/dψ E_q[f_ψ] = E_q[∇_ψ f_ψ]). All are pure functions, usable under
`jax.jit`, `jax.vmap` and `jax.grad` (`function`, `dist_builder` and
`num_samples` are static).
"""

import functools
import inspect
import math
import textwrap
from typing import Callable

import jax
import jax.numpy as jnp

from vae import distributions as dists
from vae import types

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey
CostFn = types.CostFn
DistBuilder = types.DistBuilder

sg = jax.lax.stop_gradient


def check_num_samples(num_samples: int, minimum: int = 1,
                      who: str = 'estimator') -> None:
  """Raises ValueError unless `num_samples` is an int >= `minimum`."""
  if not isinstance(num_samples, int) or isinstance(num_samples, bool):
    raise ValueError(f'{who}: num_samples must be a Python int (static), '
                     f'got {type(num_samples).__name__}.')
  if num_samples < minimum:
    raise ValueError(f'{who}: num_samples must be >= {minimum}, '
                     f'got {num_samples}.')


def sample_log_prob(dist, z: Array) -> Array:
  """log q(z) of one joint sample: Σ over all elements of dist.log_prob(z)."""
  return jnp.sum(dist.log_prob(z))


def _values_and_log_probs(function: CostFn, dist, z: Array):
  fz = jax.vmap(function)(z)
  if fz.shape != z.shape[:1]:
    raise ValueError(f'function must return a scalar per sample; got shape '
                     f'{fz.shape[1:]} per sample.')
  log_q = jax.vmap(functools.partial(sample_log_prob, dist))(z)
  return fz, log_q


def _tree_vdot(a: Params, b: Params) -> Array:
  leaves = jax.tree_util.tree_map(lambda x, y: jnp.sum(x * y), a, b)
  return jnp.asarray(sum(jax.tree_util.tree_leaves(leaves)))


def inject_gradient(value: Array, params: Params, grads: Params) -> Array:
  """A scalar equal to `value` whose gradient w.r.t. `params` is `grads`.

  surrogate = value + Σ sg(grads) · (params - sg(params)).
  """
  delta = jax.tree_util.tree_map(lambda p: p - sg(p), params)
  return value + _tree_vdot(sg(grads), delta)


def gradient_from_surrogate(surrogate: Callable[..., Array],
                            name: str | None = None,
                            about: str = '') -> Callable[..., Params]:
  """Turns a surrogate objective into an estimator with the common signature.

    estimator(function, params, dist_builder, key, num_samples) = jax.grad of
    surrogate(function, ·, dist_builder, key, num_samples) at params.

  The estimator is a function of its own: named `name` (default: the
  surrogate's name without '_surrogate'), documented by the surrogate's
  docstring with its Returns saying what the estimator returns (the
  gradient estimate, not the surrogate's value), `about` added after the
  first paragraph.
  """

  def estimator(function, params, dist_builder, key, num_samples, **kwargs):
    leaves = jax.tree_util.tree_leaves(params)
    if leaves and not any(isinstance(x, jax.core.Tracer) for x in leaves):
      dist_builder(params)  # Concrete inputs: validate them (e.g. scale > 0).
    return jax.grad(lambda p: surrogate(function, p, dist_builder, key,
                                        num_samples, **kwargs))(params)

  source = str(getattr(surrogate, '__name__', None) or getattr(
      getattr(surrogate, 'func', None), '__name__', 'surrogate'))
  estimator.__name__ = estimator.__qualname__ = (
      name or source.removesuffix('_surrogate'))
  estimator.__doc__ = estimator_doc(
      getattr(surrogate, '__doc__', None) or getattr(
          getattr(surrogate, 'func', None), '__doc__', None) or '',
      source, about)
  return estimator


def estimator_doc(surrogate_doc: str, source: str, about: str = '') -> str:
  """An estimator's docstring from its surrogate's (`gradient_from_surrogate`).

  The first line loses ', as a surrogate'; `about` follows the first
  paragraph; the Returns section becomes the estimator's.
  """
  text = inspect.cleandoc(surrogate_doc) or f'Gradient of `{source}`.'
  text = text.split('\n  Returns:')[0].split('\nReturns:')[0].rstrip()
  head, _, rest = text.partition('\n\n')
  head = head.replace(', as a surrogate', '')
  about = textwrap.fill(about, 76)
  parts = [head] + ([about] if about else []) + ([rest] if rest else [])
  returns = textwrap.fill(
      f'The gradient estimate: a pytree like `params` (jax.grad of '
      f'`{source}`, whose value is the Monte Carlo estimate of E_q[f]).', 76,
      initial_indent='  ', subsequent_indent='  ')
  return '\n\n'.join(parts) + '\n\nReturns:\n' + returns


# --------------------------------------------------------------------------
# Pathwise (reparameterization).


def pathwise_surrogate(function: CostFn, params: Params,
                       dist_builder: DistBuilder, key: PRNGKey,
                       num_samples: int) -> Array:
  """Pathwise (reparameterization) estimator, as a surrogate.

  ∇_θ E_q[f(z)] ≈ (1/N) Σ_n ∇_θ f(g(ε_n; θ)),  z = g(ε; θ), ε ~ p(ε).

  Unbiased. Requires f differentiable in z and q reparameterizable (`sample`
  differentiable in the parameters: Normal, RelaxedBernoulli,
  RelaxedCategorical).

  Args:
    function: f, maps one sample to a scalar.
    params: the distribution parameters θ (a pytree).
    dist_builder: θ -> distribution.
    key: PRNG key.
    num_samples: N ≥ 1.

  Returns:
    The Monte Carlo estimate (1/N) Σ f(z_n); its gradient is the estimator.
  """
  check_num_samples(num_samples, who='pathwise')
  z = dist_builder(params).sample(key, (num_samples,))
  return jnp.mean(jax.vmap(function)(z))


# --------------------------------------------------------------------------
# Score function (REINFORCE); baselines and other control variates compose
# with it (`control_variates.with_control_variate`).


def score_function_surrogate(function: CostFn, params: Params,
                             dist_builder: DistBuilder, key: PRNGKey,
                             num_samples: int) -> Array:
  """Score-function (REINFORCE / likelihood-ratio) estimator, as a surrogate.

  ∇_θ E_q[f(z)] ≈ (1/N) Σ_n f(z_n) ∇_θ log q_θ(z_n),  z_n ~ q_θ.

  Unbiased. Requires only that log q_θ(z) be differentiable in θ; f may be
  non-differentiable and z discrete. A baseline b (f - b in place of f) or
  another control variate is applied by
  `control_variates.with_control_variate`.

  Args:
    function: f, maps one sample to a scalar.
    params: the distribution parameters θ.
    dist_builder: θ -> distribution.
    key: PRNG key.
    num_samples: N ≥ 1.

  Returns:
    A scalar with value (1/N) Σ f(z_n) and the estimator as its gradient.
  """
  check_num_samples(num_samples, who='score')
  dist = dist_builder(params)
  z = sg(dist.sample(key, (num_samples,)))
  fz, log_q = _values_and_log_probs(function, dist, z)
  return jnp.mean(fz + sg(fz) * (log_q - sg(log_q)))


def leave_one_out_surrogate(function: CostFn, params: Params,
                            dist_builder: DistBuilder, key: PRNGKey,
                            num_samples: int) -> Array:
  """Score function with the leave-one-out baseline (RLOO), as a surrogate.

  ∇_θ E_q[f] ≈ (1/N) Σ_n (f(z_n) - b_n) ∇_θ log q(z_n),
  b_n = (1/(N-1)) Σ_{m≠n} f(z_m).

  Unbiased (b_n is independent of z_n). Requires N ≥ 2 and log q
  differentiable in θ; f may be non-differentiable.

  Args:
    function: f, maps one sample to a scalar.
    params: θ.
    dist_builder: θ -> distribution.
    key: PRNG key.
    num_samples: N ≥ 2.

  Returns:
    The surrogate whose gradient is the RLOO estimator.
  """
  check_num_samples(num_samples, minimum=2, who='score_rloo')
  dist = dist_builder(params)
  z = sg(dist.sample(key, (num_samples,)))
  fz, log_q = _values_and_log_probs(function, dist, z)
  baseline = (jnp.sum(fz) - fz) / (num_samples - 1)
  return jnp.mean(fz + sg(fz - baseline) * (log_q - sg(log_q)))


# --------------------------------------------------------------------------
# Measure-valued gradients for the Gaussian.


def sample_weibull(key: PRNGKey, shape, dtype=jnp.float32) -> Array:
  """W ~ Weibull(scale √2, concentration 2) = Rayleigh(1), density w e^{-w²/2}.

  `jax.random.weibull_min`: W = √2 (-log(1 - U))^{1/2}, U ∈ [0, 1); 1 - U is
  never 0, so there is no atom in the tail (a uniform floored at the smallest
  float put mass 2⁻²³ at W ≈ 13.2). The float32 draws reach W ≈ 5.6.
  """
  return jax.random.weibull_min(key, math.sqrt(2.0), 2.0, shape, dtype)


def sample_double_sided_maxwell(key: PRNGKey, shape,
                                dtype=jnp.float32) -> Array:
  """M ~ double-sided Maxwell(0, 1), density m² φ(m): sign(ε) √(ε² + 2E).

  |M|² ~ χ²₃ = χ²₁ + χ²₂ with χ²₁ = ε², ε ~ N(0, 1), and χ²₂ = 2E,
  E = -log(1 - U) ~ Exp(1); the sign of ε is independent of ε² and gives
  the symmetric sign. Two random numbers per draw (four for the norm of
  three normals and a sign, as in `jax.random.double_sided_maxwell`); no
  atom (1 - U > 0).
  """
  k_e, k_u = jax.random.split(key)
  e = jax.random.normal(k_e, tuple(shape), dtype)
  u = jax.random.uniform(k_u, tuple(shape), dtype)
  return jnp.sign(e) * jnp.sqrt(e * e - 2.0 * jnp.log1p(-u))


def measure_valued_gaussian_gradients(function: CostFn, loc: Array,
                                      scale: Array, key: PRNGKey,
                                      num_samples: int) -> tuple[Array, Array]:
  """Coupled measure-valued derivative of E_{N(μ, σ²)}[f] in μ and σ.

  For coordinate i, with z ~ q and z_i replaced as shown (the others kept):
    ∂/∂μ_i ≈ 1/(σ_i √(2π)) [f(z_i ← μ_i + σ_i W) - f(z_i ← μ_i - σ_i W)],
             W ~ Weibull(√2, 2) (= Rayleigh(1)), the same W in both terms;
    ∂/∂σ_i ≈ 1/σ_i [f(z_i ← μ_i + σ_i M) - f(z_i ← μ_i + σ_i U M)],
             M ~ double-sided Maxwell(0, 1), U ~ U(0, 1), so that U·M ~ N(0, 1)
             (the negative part shares M with the positive one).
  Both pairs use common random numbers (Mohamed et al. 2020, sec. 6.3);
  unbiased (sec. 6). f need not be differentiable; costs 4·d evaluations of
  f per sample for a d-dimensional z.

  Args:
    function: f, maps one sample (shape of `loc`) to a scalar.
    loc: μ.
    scale: σ > 0, same shape as loc.
    key: PRNG key.
    num_samples: N ≥ 1.

  Returns:
    (grad_loc, grad_scale), each of loc's shape.
  """
  check_num_samples(num_samples, who='measure_valued')
  shape = jnp.shape(loc)
  dtype = jnp.result_type(loc, float)
  mu = jnp.ravel(loc)
  sigma = jnp.ravel(jnp.broadcast_to(scale, shape))
  d = mu.shape[0]
  k_base, k_w, k_m, k_u = jax.random.split(key, 4)
  base = mu + sigma * jax.random.normal(k_base, (num_samples, d), dtype)
  w = sample_weibull(k_w, (num_samples, d), dtype)
  m = sample_double_sided_maxwell(k_m, (num_samples, d), dtype)
  u = jax.random.uniform(k_u, (num_samples, d), dtype)
  f = lambda z: function(jnp.reshape(z, shape))

  def coordinate(i):
    def replaced(value):  # f with coordinate i of each base sample replaced.
      return jax.vmap(f)(jnp.where(jnp.arange(d) == i, value[:, None], base))
    g_mu = (replaced(mu[i] + sigma[i] * w[:, i]) -
            replaced(mu[i] - sigma[i] * w[:, i])) / (
                sigma[i] * math.sqrt(2 * math.pi))
    g_sigma = (replaced(mu[i] + sigma[i] * m[:, i]) -
               replaced(mu[i] + sigma[i] * u[:, i] * m[:, i])) / sigma[i]
    return jnp.mean(g_mu), jnp.mean(g_sigma)

  g_mu, g_sigma = jax.vmap(coordinate)(jnp.arange(d))
  return jnp.reshape(g_mu, shape), jnp.reshape(g_sigma, shape)


def measure_valued_surrogate(function: CostFn, params: Params,
                             dist_builder: DistBuilder, key: PRNGKey,
                             num_samples: int) -> Array:
  """Measure-valued gradient for a Normal q, as a surrogate.

  Computes (∂/∂μ, ∂/∂σ) with `measure_valued_gaussian_gradients` and pulls
  them back to `params` through `dist_builder` (chain rule). The value is the
  plain Monte Carlo mean of f over N independent samples. Requires
  `dist_builder(params)` to be a `Normal`; f need not be differentiable.

  Args:
    function: f, maps one sample to a scalar (4·d evaluations per sample).
    params: θ, pulled back from (μ, σ) by the chain rule.
    dist_builder: θ -> Normal (diagonal).
    key: PRNG key, split for the gradient and the value.
    num_samples: N ≥ 1.

  Returns:
    The surrogate.
  """
  def loc_scale(p):
    d = dist_builder(p)
    if not isinstance(d, dists.Normal):
      raise TypeError('measure_valued needs a Normal distribution, got '
                      f'{type(d).__name__}.')
    return jnp.broadcast_to(d.loc, d.shape), jnp.broadcast_to(d.scale, d.shape)

  (loc, scale), pullback = jax.vjp(loc_scale, params)
  k_grad, k_value = jax.random.split(key)
  g_loc, g_scale = measure_valued_gaussian_gradients(
      function, sg(loc), sg(scale), k_grad, num_samples)
  grads, = pullback((g_loc, g_scale))
  z = sg(dist_builder(params).sample(k_value, (num_samples,)))
  value = jnp.mean(jax.vmap(function)(z))
  return inject_gradient(value, params, grads)
