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
tails are too light (2Σ_p⁻¹ - Σ_q⁻¹ not positive definite). Proposals and
p(z|x) are `distributions.MultivariateNormal`s.
On the linear-Gaussian model (`vae.problems.linear_gaussian`) log p(x) and
p(z|x) are exact, so `estimate_errors` scores every estimate.
"""

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vae import distributions as dists
from vae import stats
from vae import types
from vae.problems import amortization as am
from vae.problems import linear_gaussian as lg

Array = types.Array
PRNGKey = types.PRNGKey

PROPOSALS = ('prior', 'posterior', 'mean_field', 'mismatched')
# The delta-method prediction is checked where K ≥ this many times ρ.
DELTA_METHOD_MIN_K_OVER_RHO = 10.0


def log_weights(log_joint, proposal: dists.MultivariateNormal, key: PRNGKey,
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


def log_chi2_plus_one(p: dists.MultivariateNormal,
                      q: dists.MultivariateNormal) -> Array:
  """log ∫ p(z)²/q(z) dz = log(1 + χ²(p ‖ q)) for Gaussians; +∞ if it diverges.

  With P = Σ_p⁻¹, Q = Σ_q⁻¹, A = 2P - Q (must be positive definite) and
  b = 2P μ_p - Q μ_q:
    log(1+χ²) = -log det Σ_p + ½ log det Σ_q - ½ log det A + ½ bᵀA⁻¹b
                - μ_pᵀ P μ_p + ½ μ_qᵀ Q μ_q.
  For p = p(z|x) and the proposal q this is log E_q[w²]/p(x)² = log(1 + ρ).
  """
  eye = jnp.eye(p.dim, dtype=p.loc.dtype)
  p_prec, q_prec = (jax.scipy.linalg.cho_solve((g.scale_tril, True), eye)
                    for g in (p, q))
  a = 2.0 * p_prec - q_prec
  b = 2.0 * p_prec @ p.loc - q_prec @ q.loc
  eig_min = jnp.min(jnp.linalg.eigvalsh(a))
  sign, log_det_a = jnp.linalg.slogdet(a)
  a_safe = jnp.where(eig_min > 0, a, eye)
  value = (-p.log_det_covariance() + 0.5 * q.log_det_covariance()
           - 0.5 * log_det_a + 0.5 * b @ jnp.linalg.solve(a_safe, b) -
           p.loc @ p_prec @ p.loc + 0.5 * q.loc @ q_prec @ q.loc)
  return jnp.where((eig_min > 0) & (sign > 0), value, jnp.inf)


def predicted_bias_and_std(log_rho_plus_one, num_samples
                           ) -> tuple[np.ndarray, np.ndarray]:
  """Delta-method bias -ρ/(2K) and standard deviation √(ρ/K) of log p̂_K.

  ρ = max(0, expm1(log(1 + ρ))): a χ² of exactly 0 may round below it.
  """
  rho = np.maximum(np.expm1(np.asarray(log_rho_plus_one, np.float64)), 0.0)
  return -rho / (2.0 * num_samples), np.sqrt(rho / num_samples)


def samples_needed(log_rho_plus_one, tolerance: float = 0.1) -> np.ndarray:
  """K such that the delta-method RMSE √(ρ/K + ρ²/(4K²)) equals `tolerance`.

  Solves ρ/K + (ρ/(2K))² = ε² for K: K = ρ (1 + √(1 + ε²)) / (2ε²).
  """
  rho = np.expm1(np.asarray(log_rho_plus_one, np.float64))
  eps2 = tolerance**2
  return rho * (1.0 + np.sqrt(1.0 + eps2)) / (2.0 * eps2)


def error_summary(estimates, exact) -> dict[str, np.ndarray]:
  """Bias, standard deviation and RMSE of estimates [R, ...] of `exact`.

  bias = mean_r(est_r) - exact, std = sd_r(est_r),
  rmse = √(mean_r (est_r - exact)²), reduced over the first axis (repeats).
  """
  err = np.asarray(estimates, np.float64) - np.asarray(exact, np.float64)
  return {'bias': np.mean(err, 0), 'std': np.std(err, 0),
          'rmse': np.sqrt(np.mean(err**2, 0))}


def proposal(name: str, model: lg.LinearGaussianModel,
             x: Array) -> dists.MultivariateNormal:
  """The proposal q(z) called `name` (see PROPOSALS) for one x [D].

  prior: N(0, I); posterior: p(z|x) (zero-variance weights); mean_field: the
  best diagonal q* (`amortization.optimal_diagonal_q`); mismatched: means
  off by one posterior sd, sds twice the posterior marginal sds.
  """
  d = model.latent_dim
  if name == 'prior':
    return dists.MultivariateNormal(jnp.zeros(d, x.dtype),
                                    jnp.eye(d, dtype=x.dtype))
  post = lg.posterior(model, x)
  if name == 'posterior':
    return post
  q = am.optimal_diagonal_q(model, x)
  if name == 'mean_field':
    return dists.MultivariateNormal.from_normal(q)
  if name == 'mismatched':
    sd = jnp.sqrt(post.variance())
    return dists.MultivariateNormal(q.loc + sd, jnp.diag(2.0 * sd))
  raise ValueError(f'unknown proposal {name!r}; choose from {PROPOSALS}.')


@functools.partial(jax.jit, static_argnums=2)
def proposals(model: lg.LinearGaussianModel, x: Array, names: tuple[str, ...]
              ) -> dict[str, dists.MultivariateNormal]:
  """{name: q batched over the rows of x [P, D]} in one compiled call."""
  return {n: jax.vmap(lambda xi, n=n: proposal(n, model, xi))(x)
          for n in names}


@functools.partial(jax.jit, static_argnums=(4, 5))
def estimate_errors(model: lg.LinearGaussianModel, x: Array,
                    q: dists.MultivariateNormal, key: PRNGKey, repeats: int,
                    ks: tuple[int, ...]) -> tuple[Array, Array, Array]:
  """log p̂_K(x_p) - log p(x_p) [P, R, len(ks)], log(1 + ρ_p), log p(x_p).

  For each point x_p (key_p = split(key, P)[p]) and repeat r (keys
  split(key_p, R)), one draw of max(ks) weights from q_p gives log p̂_K for
  every K in ks from its first K weights (`running_log_mean_exp`);
  ρ_p = χ²(p(z|x_p) ‖ q_p).

  Args:
    model: the linear-Gaussian model (exact log p(x) and p(z|x)).
    x: points [P, D].
    q: proposals batched over the points (loc [P, d], scale_tril
      [P, d, d]).
    key: PRNG key.
    repeats: R independent estimates per point.
    ks: sample counts K (each ≥ 1).

  Returns:
    (errors, log(1 + ρ) [P], log p(x) [P]).
  """
  def one(xi, qi, ki):
    keys = jax.random.split(ki, repeats)
    log_w = jax.vmap(lambda k: log_weights(
        lambda z: lg.log_joint(model, xi, z), qi, k, max(ks)))(keys)
    running = running_log_mean_exp(log_w)[:, jnp.asarray(ks) - 1]
    log_rho1 = log_chi2_plus_one(lg.posterior(model, xi), qi)
    log_px = lg.log_marginal(model, xi)
    return running - log_px, log_rho1, log_px

  return jax.vmap(one)(x, q, jax.random.split(key, x.shape[0]))


def repeat_summary(errors) -> dict[str, np.ndarray]:
  """Errors [P, R, K] of P points × R repeats summarized per K.

  mean = mean over points and repeats; stderr = sd over repeats of the
  point-averaged error / √R (the standard error of `mean`); std_per_draw =
  mean over points of the sd over repeats.
  """
  e = np.asarray(errors, np.float64)
  return {'mean': e.mean((0, 1)),
          'stderr': e.mean(0).std(0) / math.sqrt(e.shape[1]),
          'std_per_draw': e.std(1).mean(0)}


def iwae_check(model: lg.LinearGaussianModel, x: Array, ks: tuple[int, ...],
               repeats: int, key: PRNGKey) -> list[dict[str, Any]]:
  """IWAE_k - log p(x) with q = q*(z|x) (`mean_field`), against exact bounds.

  E[IWAE_1] = ELBO(q*) and ELBO(q*) ≤ E[IWAE_k] ≤ log p(x), so with
  g = ELBO(q*) - log p(x) = -`amortization.approximation_gap`, the mean
  error m_k is compared with g (k = 1) or the nearest point of [g, 0]:
  z_k = (m_k - target) / stderr_k, a two-sided check (`stats.CHECKS`,
  marked with the run's other checks by `stats.mark_disagreements`).

  Returns:
    Per k: iwae_minus_log_px (m_k) and stderr, std_per_draw
    (`repeat_summary` of `estimate_errors`), elbo_minus_log_px (g), z and
    its check.
  """
  q = proposals(model, x, ('mean_field',))['mean_field']
  s = repeat_summary(estimate_errors(model, x, q, key, repeats, ks)[0])
  low = -float(am.approximation_gap(model))
  target = np.where(np.asarray(ks) == 1, low, np.clip(s['mean'], low, 0.0))
  z = stats.mean_z(s['mean'], target, s['stderr'] * math.sqrt(repeats),
                   repeats)
  return [{'iwae_minus_log_px': float(s['mean'][j]),
           'stderr': float(s['stderr'][j]),
           'std_per_draw': float(s['std_per_draw'][j]),
           'elbo_minus_log_px': low, 'z': float(z[j]),
           stats.CHECKS: [(float(z[j]), 'two-sided')]}
          for j in range(len(ks))]


def summarize(errors: Array | np.ndarray, log_rho1: Array,
              ks: tuple[int, ...], tolerance: float) -> dict[str, Any]:
  """Error of log p̂_K pooled over points and repeats, beside the delta method.

  Pooled over points, E_x[ρ_x] sets the mean squared error, so the
  prediction uses log(1 + ρ̄), ρ̄ = mean_p ρ_p. `z` is the measured bias
  minus -ρ̄/(2K) in standard errors (std/√n), where the delta method is
  claimed (ρ̄ finite, K ≥ DELTA_METHOD_MIN_K_OVER_RHO·ρ̄: `claimed`; NaN
  elsewhere).

  Args:
    errors: log p̂_K - log p(x) [P, R, len(ks)] (`estimate_errors`).
    log_rho1: log(1 + ρ_p) [P].
    ks: the sample counts.
    tolerance: target RMSE (nats) for the samples needed.

  Returns:
    bias, std, rmse, predicted_bias, predicted_std, z, claimed (each
    [len(ks)]) and log1p_chi2, K_needed_predicted, K_needed_measured (None:
    not reached).
  """
  errors = np.asarray(errors, np.float64).reshape(-1, len(ks))
  rho = max(0.0, float(np.mean(np.expm1(np.asarray(log_rho1, np.float64)))))
  log_rho1_bar = math.log1p(rho) if math.isfinite(rho) else math.inf
  out: dict[str, Any] = error_summary(errors, 0.0)
  k = np.asarray(ks, np.float64)
  out['predicted_bias'], out['predicted_std'] = predicted_bias_and_std(
      log_rho1_bar, k)
  claimed = math.isfinite(rho) & (k >= DELTA_METHOD_MIN_K_OVER_RHO * rho)
  out['z'], out['claimed'] = np.full(len(ks), np.nan), claimed
  out['z'][claimed] = stats.mean_z(out['bias'][claimed],
                                   out['predicted_bias'][claimed],
                                   out['std'][claimed], errors.shape[0])
  below = [kk for kk, r in zip(ks, out['rmse']) if r < tolerance]
  out.update(log1p_chi2=log_rho1_bar, K_needed_measured=below[0] if below
             else None, K_needed_predicted=max(1.0, float(samples_needed(
                 log_rho1_bar, tolerance))))
  return out
