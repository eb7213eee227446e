"""Estimating log p(x) by (importance) sampling, and how many samples it takes.

With a proposal q(z) and weights w = p(x, z)/q(z), z ~ q,

    p̂_K(x) = (1/K) Σ_k w_k is unbiased for p(x), and
    log p̂_K(x) (= IWAE_K when q = q(z|x)) is biased low: E log p̂_K ≤ log p(x).

q = p(z) gives naive Monte Carlo, log (1/K) Σ_k p(x|z_k). With the relative
variance of the weights ρ = Var_q[w]/p(x)² = χ²(p(z|x) ‖ q), the delta method
gives, for K ≫ ρ,

    E[log p̂_K] - log p(x) ≈ -ρ/(2K),   Var[log p̂_K] ≈ ρ/K,

so about ρ/(2ε) samples are needed for a bias below ε. For Gaussian p(z|x)
and q, log(1 + ρ) has a closed form (`log_chi2_plus_one`); it is +∞ when q's
tails are too light (2Σ_p⁻¹ - Σ_q⁻¹ not positive definite).
"""

import math

import jax
import jax.numpy as jnp

from vae import types

Array = types.Array
PRNGKey = types.PRNGKey

_LOG_2PI = math.log(2.0 * math.pi)


@types.pytree_dataclass
class MultivariateNormal:
  """N(loc, L Lᵀ) over vectors (log_prob sums the event).

  Attributes:
    loc: mean [d].
    scale_tril: lower-triangular L [d, d] with positive diagonal.
  """
  loc: Array
  scale_tril: Array

  def sample(self, key: PRNGKey, sample_shape=()) -> Array:
    """z = loc + L ε, ε ~ N(0, I); shape sample_shape + [d]."""
    shape = ((sample_shape,) if isinstance(sample_shape, int) else
             tuple(sample_shape))
    eps = jax.random.normal(key, shape + self.loc.shape, self.loc.dtype)
    return self.loc + eps @ self.scale_tril.T

  def log_prob(self, z: Array) -> Array:
    """log N(z; μ, LLᵀ) = -½‖L⁻¹(z-μ)‖² - Σ log L_ii - (d/2) log 2π."""
    d = self.loc.shape[-1]
    # L⁻¹ once, then a matmul: batched triangular solves are slow on CPU.
    l_inv = jax.scipy.linalg.solve_triangular(
        self.scale_tril, jnp.eye(d, dtype=self.scale_tril.dtype), lower=True)
    r = (z - self.loc) @ l_inv.T
    log_det_half = jnp.sum(jnp.log(jnp.diagonal(self.scale_tril)))
    return -0.5 * jnp.sum(r**2, -1) - log_det_half - 0.5 * d * _LOG_2PI

  @property
  def covariance(self) -> Array:
    return self.scale_tril @ self.scale_tril.T

  @classmethod
  def from_covariance(cls, loc: Array, cov: Array) -> 'MultivariateNormal':
    return cls(loc=loc, scale_tril=jnp.linalg.cholesky(cov))

  @classmethod
  def diagonal(cls, loc: Array, scale: Array) -> 'MultivariateNormal':
    return cls(loc=loc, scale_tril=jnp.diag(scale))


def log_weights(log_joint, proposal: MultivariateNormal, key: PRNGKey,
                num_samples: int) -> Array:
  """log w_k = log p(x, z_k) - log q(z_k), z_k ~ q, k = 1..K: [K].

  Args:
    log_joint: z [d] -> log p(x, z) (vmapped over samples).
    proposal: q.
    key: PRNG key.
    num_samples: K.

  Returns:
    The log-weights.
  """
  z = proposal.sample(key, (num_samples,))
  return jax.vmap(log_joint)(z) - proposal.log_prob(z)


def running_log_mean_exp(log_w: Array) -> Array:
  """out[..., k-1] = log (1/k) Σ_{j ≤ k} exp(log_w[..., j]) along the last axis.

  Entry k-1 is the estimate log p̂_k(x) from the first k samples, so one draw
  of K_max weights gives one draw of the estimator for every k ≤ K_max.
  """
  k = jnp.arange(1, log_w.shape[-1] + 1, dtype=log_w.dtype)
  # A scan of logaddexp: stable, and much faster on CPU than cumlogsumexp.
  step = lambda acc, v: (jnp.logaddexp(acc, v),) * 2
  init = jnp.full(log_w.shape[:-1], -jnp.inf, log_w.dtype)
  _, out = jax.lax.scan(step, init, jnp.moveaxis(log_w, -1, 0))
  return jnp.moveaxis(out, 0, -1) - jnp.log(k)


def log_chi2_plus_one(p: MultivariateNormal, q: MultivariateNormal) -> Array:
  """log ∫ p(z)²/q(z) dz = log(1 + χ²(p ‖ q)) for Gaussians; +∞ if it diverges.

  With P = Σ_p⁻¹, Q = Σ_q⁻¹, A = 2P - Q (must be positive definite) and
  b = 2P μ_p - Q μ_q:
    log(1+χ²) = -log det Σ_p + ½ log det Σ_q - ½ log det A + ½ bᵀA⁻¹b
                - μ_pᵀ P μ_p + ½ μ_qᵀ Q μ_q.
  For p = p(z|x) and the proposal q this is log E_q[w²]/p(x)² = log(1 + ρ).
  """
  p_prec = jnp.linalg.inv(p.covariance)
  q_prec = jnp.linalg.inv(q.covariance)
  a = 2.0 * p_prec - q_prec
  b = 2.0 * p_prec @ p.loc - q_prec @ q.loc
  log_det_p = 2.0 * jnp.sum(jnp.log(jnp.diagonal(p.scale_tril)))
  log_det_q = 2.0 * jnp.sum(jnp.log(jnp.diagonal(q.scale_tril)))
  eig_min = jnp.min(jnp.linalg.eigvalsh(a))
  sign, log_det_a = jnp.linalg.slogdet(a)
  a_safe = jnp.where(eig_min > 0, a, jnp.eye(a.shape[0], dtype=a.dtype))
  value = (-log_det_p + 0.5 * log_det_q - 0.5 * log_det_a +
           0.5 * b @ jnp.linalg.solve(a_safe, b) - p.loc @ p_prec @ p.loc +
           0.5 * q.loc @ q_prec @ q.loc)
  return jnp.where((eig_min > 0) & (sign > 0), value, jnp.inf)


def predicted_bias_and_std(log_rho_plus_one: Array,
                           num_samples: Array) -> tuple[Array, Array]:
  """Delta-method bias -ρ/(2K) and standard deviation √(ρ/K) of log p̂_K."""
  rho = jnp.expm1(log_rho_plus_one)
  return -rho / (2.0 * num_samples), jnp.sqrt(rho / num_samples)


def samples_needed(log_rho_plus_one: Array, tolerance: float = 0.1) -> Array:
  """K such that the delta-method RMSE √(ρ/K + ρ²/(4K²)) equals `tolerance`.

  Solves ρ/K + (ρ/(2K))² = ε² for K: K = ρ (1 + √(1 + ε²)) / (2ε²).
  """
  rho = jnp.expm1(log_rho_plus_one)
  eps2 = tolerance**2
  return rho * (1.0 + jnp.sqrt(1.0 + eps2)) / (2.0 * eps2)


def error_summary(estimates: Array, exact: Array) -> dict[str, Array]:
  """Bias, standard deviation and RMSE of estimates [R, ...] of `exact`.

  bias = mean_r(est_r) - exact, std = sd_r(est_r),
  rmse = √(mean_r (est_r - exact)²), reduced over the first axis (repeats).
  """
  err = estimates - exact
  return {'bias': jnp.mean(err, 0), 'std': jnp.std(err, 0),
          'rmse': jnp.sqrt(jnp.mean(err**2, 0))}
