"""Encoder-gradient estimators for the importance-weighted bound IWAE_K.

    IWAE_K = E[ log (1/K) Σ_k w_k ],  w_k = p(x, z_k) / q(z_k)^β,  z_k ~ q.

Same argument list as `vae.estimators.core`: `(log_joint, params, dist_builder,
key, num_samples=K)`, where `log_joint(z) = log p(x, z)` for one latent sample
(it may close over decoder parameters, which receive their ordinary gradient),
and the estimator returns a gradient of IWAE_K (not of E_q[f]). β (default 1)
multiplies log q; pass log_joint = log p(x|z) + β log p(z) for a β-weighted
bound. Each estimator is `jax.grad` of a `*_surrogate` whose value is the
bound estimate log (1/K) Σ_k w_k.
"""

import jax
import jax.numpy as jnp

from vae.estimators import core
from vae import types

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey
CostFn = types.CostFn
DistBuilder = types.DistBuilder

sg = jax.lax.stop_gradient


def log_mean_exp(x: Array, axis: int = -1) -> Array:
  """log (1/K) Σ_k exp(x_k), stable."""
  return jax.nn.logsumexp(x, axis=axis) - jnp.log(x.shape[axis])


def _log_weights(log_joint: CostFn, q, z: Array, beta: float | Array) -> Array:
  return jax.vmap(lambda zk: log_joint(zk) -
                  beta * core.sample_log_prob(q, zk))(z)


def iwae_surrogate(log_joint: CostFn, params: Params,
                   dist_builder: DistBuilder, key: PRNGKey, num_samples: int,
                   beta: float | Array = 1.0) -> Array:
  """IWAE bound with the plain pathwise gradient (Burda et al. 2015).

  ∇ IWAE_K ≈ Σ_k w̃_k ∇ log w(z_k(ε_k; φ)),  w̃_k = w_k / Σ_j w_j.
  Unbiased for ∇IWAE_K; its encoder SNR decays as K grows (Rainforth et al.
  2018). Requires q reparameterizable and log p(x, z) differentiable in z.

  Args:
    log_joint: z -> log p(x, z) for one sample.
    params: encoder output φ for this x (e.g. a `Normal` itself).
    dist_builder: φ -> q.
    key: PRNG key.
    num_samples: K ≥ 1.
    beta: weight on log q.

  Returns:
    log (1/K) Σ_k w_k.
  """
  core.check_num_samples(num_samples, who='pathwise')
  q = dist_builder(params)
  z = q.sample(key, (num_samples,))
  return log_mean_exp(_log_weights(log_joint, q, z, beta))


def stl_surrogate(log_joint: CostFn, params: Params, dist_builder: DistBuilder,
                  key: PRNGKey, num_samples: int,
                  beta: float | Array = 1.0) -> Array:
  """Sticking-the-landing (Roeder et al. 2017) for ELBO (K=1) and IWAE_K.

  Drops the score term ∂ log q_φ(z)/∂φ at fixed z: the log-weight is
  log p(x, z(φ)) - log q_{sg(φ)}(z(φ)). Unbiased for K = 1 (the dropped term
  has mean zero) and zero-variance at the exact posterior; BIASED for K > 1
  (Tucker et al. 2019). Requires reparameterizable q, differentiable log p.

  Args:
    log_joint: z -> log p(x, z), differentiable in z.
    params: φ; enters log q only through the reparameterized z.
    dist_builder: φ -> q (reparameterizable).
    key: PRNG key of the K draws.
    num_samples: K ≥ 1 (unbiased only at K = 1).
    beta: weight on log q (stopped in φ).

  Returns:
    The bound estimate log (1/K) Σ_k w_k; its gradient lacks the score term.
  """
  core.check_num_samples(num_samples, who='stl')
  q = dist_builder(params)
  z = q.sample(key, (num_samples,))
  return log_mean_exp(_log_weights(log_joint, sg(q), z, beta))


def dreg_surrogate(log_joint: CostFn, params: Params, dist_builder: DistBuilder,
                   key: PRNGKey, num_samples: int,
                   beta: float | Array = 1.0) -> Array:
  """Doubly-reparameterized gradient (Tucker, Lawson, Gu & Maddison 2019).

  With log w_k = log p̃(z_k) - β log q_φ(z_k), z_k = z(ε_k; φ), the score
  term of ∇_φ IWAE_K is -β E[Σ_k w̃_k ∇_φ log q_φ(z_k)], and for any F(z_k)
  E_q[F ∇_φ log q_φ] = E_ε[∂F/∂z_k ∂z_k/∂φ]; with F = w̃_k,
  ∂w̃_k/∂z_k = w̃_k (1 - w̃_k) ∂log w_k/∂z_k. Hence
    encoder:  ∇_φ IWAE_K ≈ Σ_k ((1 - β) w̃_k + β w̃_k²) ∂log w_k/∂z_k ∂z_k/∂φ,
    decoder:  ∇_θ IWAE_K ≈ Σ_k w̃_k ∇_θ log p̃_θ(z_k),
  (w̃_k² at β = 1, the published form). Unbiased for ∇IWAE_K at every β;
  its encoder SNR grows with K. Requires reparameterizable q and log p̃
  differentiable in z.

  Args:
    log_joint: z -> log p̃(z) = log p(x|z) + β log p(z).
    params: φ.
    dist_builder: φ -> q.
    key: PRNG key.
    num_samples: K ≥ 1.
    beta: the weight on log q in log w (a number or a traced scalar).

  Returns:
    A surrogate whose value is log (1/K) Σ_k w_k.
  """
  core.check_num_samples(num_samples, who='dreg')
  q = dist_builder(params)
  z = q.sample(key, (num_samples,))
  log_w_stl = _log_weights(log_joint, sg(q), z, beta)  # path through z only
  normalized = sg(jax.nn.softmax(log_w_stl))
  weight = (1.0 - beta) * normalized + beta * normalized**2
  log_p_fixed_z = jax.vmap(log_joint)(sg(z))  # decoder gradient only
  surrogate = (jnp.sum(sg(weight) * log_w_stl) +
               jnp.sum(sg(normalized - weight) * log_p_fixed_z))
  bound = log_mean_exp(log_w_stl)
  return surrogate + sg(bound - surrogate)


def _score_terms(log_joint, params, dist_builder, key, num_samples, beta):
  q = dist_builder(params)
  z = sg(q.sample(key, (num_samples,)))
  log_w = _log_weights(log_joint, q, z, beta)
  log_q = jax.vmap(lambda zk: core.sample_log_prob(q, zk))(z)
  return log_w, log_q


def iwae_score_surrogate(log_joint: CostFn, params: Params,
                         dist_builder: DistBuilder, key: PRNGKey,
                         num_samples: int, beta: float | Array = 1.0) -> Array:
  """Plain score-function gradient of IWAE_K (no baseline).

  ∇_φ IWAE_K ≈ L̂ Σ_k ∇_φ log q(z_k) + Σ_k w̃_k ∇_φ log w_k,
  L̂ = log (1/K) Σ_k w_k.
  Unbiased; high variance. Works for discrete q (no reparameterization).

  Args:
    log_joint: z -> log p(x, z).
    params: φ.
    dist_builder: φ -> q.
    key: PRNG key.
    num_samples: K ≥ 1.
    beta: weight on log q.

  Returns:
    A surrogate whose value is L̂.
  """
  core.check_num_samples(num_samples, who='score')
  log_w, log_q = _score_terms(log_joint, params, dist_builder, key,
                              num_samples, beta)
  bound = log_mean_exp(log_w)
  return bound + sg(bound) * jnp.sum(log_q - sg(log_q))


def vimco_surrogate(log_joint: CostFn, params: Params,
                    dist_builder: DistBuilder, key: PRNGKey, num_samples: int,
                    beta: float | Array = 1.0) -> Array:
  """VIMCO (Mnih & Rezende 2016): leave-one-out control variates for IWAE_K.

  ∇_φ IWAE_K ≈ Σ_k (L̂ - L̂_{-k}) ∇_φ log q(z_k) + Σ_k w̃_k ∇_φ log w_k,
  L̂_{-k} = log (1/K) (Σ_{j≠k} w_j + exp(mean_{j≠k} log w_j)).
  Unbiased; works for discrete q. Requires K ≥ 2.

  Args:
    log_joint: z -> log p(x, z).
    params: φ.
    dist_builder: φ -> q.
    key: PRNG key.
    num_samples: K ≥ 2.
    beta: weight on log q.

  Returns:
    A surrogate whose value is L̂.
  """
  core.check_num_samples(num_samples, minimum=2, who='vimco')
  log_w, log_q = _score_terms(log_joint, params, dist_builder, key,
                              num_samples, beta)
  bound = log_mean_exp(log_w)
  k = num_samples
  lw = sg(log_w)
  mean_others = (jnp.sum(lw) - lw) / (k - 1)
  # Row k of `replaced` is log_w with entry k replaced by mean_others[k].
  replaced = jnp.where(jnp.eye(k, dtype=bool), mean_others[:, None],
                       lw[None, :])
  loo_bound = log_mean_exp(replaced, axis=-1)
  signal = sg(bound) - loo_bound
  return bound + jnp.sum(sg(signal) * (log_q - sg(log_q)))
