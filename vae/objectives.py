"""Per-example variational objectives, and their surrogate losses per estimator.

For one data point x with likelihood `log_likelihood(z) = log p(x | z)`,
approximate posterior q(z | x) and prior p(z):

    ELBO      = E_q[log p(x|z)] - β KL(q ‖ p)                 (`elbo`)
    ELBO (MC) = E_q[log p(x|z) + β (log p(z) - log q(z))]      (`elbo_mc_kl`)
    IWAE_K    = E[log (1/K) Σ_k p(x|z_k) p(z_k)^β / q(z_k)^β]  (`iwae_bound`)

All return one scalar per example (vmap over a batch) and are Monte Carlo
estimates with reparameterized samples. `surrogate_objective` pairs an
objective with a gradient estimator of `vae.estimators.registry`: its value
is the bound estimate, its gradient w.r.t. encoder outputs and decoder
parameters is the chosen estimator.
"""

import jax.numpy as jnp

from vae.estimators import core
from vae.estimators import iwae
from vae.estimators import registry
from vae import kl as kl_lib
from vae import types

Array = types.Array
PRNGKey = types.PRNGKey
CostFn = types.CostFn

OBJECTIVES = registry.OBJECTIVES


def _identity(q):
  return q


def _log_joint(log_likelihood: CostFn, prior, beta: float | Array) -> CostFn:
  return lambda z: log_likelihood(z) + beta * jnp.sum(prior.log_prob(z))


def elbo(log_likelihood: CostFn, q, prior, key: PRNGKey, num_samples: int = 1,
         beta: float | Array = 1.0) -> Array:
  """ELBO with analytic KL: (1/N) Σ_n log p(x|z_n) - β Σ_i KL(q_i ‖ p_i).

  Args:
    log_likelihood: z -> log p(x|z) for one sample z.
    q: q(z|x), a distribution with an analytic KL to `prior`.
    prior: p(z).
    key: PRNG key.
    num_samples: N ≥ 1.
    beta: weight on the KL term.

  Returns:
    The scalar estimate.
  """
  recon = core.pathwise_surrogate(log_likelihood, q, _identity, key,
                                  num_samples)
  return recon - beta * jnp.sum(kl_lib.kl_divergence(q, prior))


def elbo_mc_kl(log_likelihood: CostFn, q, prior, key: PRNGKey,
               num_samples: int = 1, beta: float | Array = 1.0) -> Array:
  """ELBO with Monte Carlo KL: (1/N) Σ_n [log p(x|z_n) + β log p(z_n)/q(z_n)].

  Args:
    log_likelihood: z -> log p(x|z), evaluated at each reparameterized z_n.
    q: q(z|x): any distribution with `sample` and `log_prob` (no closed-form
      KL needed).
    prior: p(z), any distribution with `log_prob`.
    key: PRNG key of the N draws.
    num_samples: N ≥ 1.
    beta: weight on log p(z) - log q(z).

  Returns:
    The estimate (1/N) Σ_n of the integrand.
  """
  f = _elbo_integrand(log_likelihood, q, prior, beta)
  return core.pathwise_surrogate(f, q, _identity, key, num_samples)


def iwae_bound(log_likelihood: CostFn, q, prior, key: PRNGKey,
               num_samples: int, beta: float | Array = 1.0) -> Array:
  """IWAE_K: log (1/K) Σ_k exp(log p(x|z_k) + β(log p(z_k) - log q(z_k))).

  For β = 1: ELBO ≤ IWAE_K ≤ IWAE_2K ≤ log p(x) in expectation (Burda et al.).

  Args:
    log_likelihood: z -> log p(x|z).
    q: q(z|x).
    prior: p(z).
    key: PRNG key.
    num_samples: K ≥ 1.
    beta: weight on log p(z) - log q(z).

  Returns:
    The scalar estimate.
  """
  return iwae.iwae_surrogate(
      _log_joint(log_likelihood, prior, beta), q, _identity, key, num_samples,
      beta=beta)


def _elbo_integrand(log_likelihood, q, prior, beta):
  return lambda z: (log_likelihood(z) + beta * (
      jnp.sum(prior.log_prob(z)) - jnp.sum(q.log_prob(z))))


def free_bits_kl(kl_per_dim: Array, free_bits: float | Array) -> Array:
  """The free-bits KL of a minibatch (Kingma et al. 2016, eq. 15):

    KL_λ = Σ_j max(λ, (1/B) Σ_b KL_bj)

  with KL_bj = KL(q(z_j|x_b) ‖ p(z_j)) for latent dimension (or group) j.
  Used in place of the mean KL, (1/B) Σ_b Σ_j KL_bj, of a minibatch's ELBO:
  a dimension whose batch-mean KL is below λ contributes the constant λ, so
  its gradient is zero and the rest of the objective is free to use those
  λ nats; above λ it is the ordinary KL term. λ = 0 gives the ordinary KL.

  Args:
    kl_per_dim: [B, D] KLs per example and dimension.
    free_bits: λ ≥ 0, nats per dimension.

  Returns:
    The scalar KL_λ.
  """
  return jnp.sum(jnp.maximum(free_bits, jnp.mean(kl_per_dim, 0)))


def surrogate_objective(objective: str, estimator: str, log_likelihood: CostFn,
                        q, prior, key: PRNGKey, num_samples: int,
                        beta: float | Array = 1.0,
                        baseline: float | Array | None = None,
                        **options) -> Array:
  """One example's surrogate loss for (objective, estimator).

  The value is the objective's estimate; `jax.grad` of it w.r.t. the
  parameters that produced `q` (the encoder) is the named estimator, and
  w.r.t. the parameters `log_likelihood` and `prior` close over (decoder,
  learned prior) is the ordinary Monte Carlo gradient. Dispatches through
  `vae.estimators.registry` (which refuses invalid combinations):

    elbo:        any E_q[f] estimator on f(z) = log p(x|z), minus β KL(q‖p)
                 in closed form (its gradient is exact);
    elbo_mc_kl:  any E_q[f] estimator on f(z) = log p(x|z) + β(log p(z) -
                 log q(z)); and stl (log q at stopped parameters);
    iwae:        the IWAE_K surrogates (pathwise, score, stl, dreg, vimco).

  Args:
    objective: one of OBJECTIVES.
    estimator: a registry name valid for the objective.
    log_likelihood: z -> log p(x|z).
    q: q(z|x).
    prior: p(z).
    key: PRNG key.
    num_samples: samples per example (K for iwae).
    beta: weight on the KL term.
    baseline: the caller-kept baseline b of an estimator with state
      (`score_moving_average`: a moving average of past costs; required
      there, unused elsewhere).
    **options: the estimator's options (e.g. temperature).

  Returns:
    The scalar surrogate.
  """
  entry = registry.check(estimator, objective, num_samples, beta)
  if entry.state is not None:
    if baseline is None:
      raise ValueError(f'estimator {estimator!r} needs a baseline value.')
    options = {**options, 'baseline': baseline}
  if objective == 'iwae':
    assert entry.iwae is not None  # registry.check refused it otherwise.
    return entry.iwae(_log_joint(log_likelihood, prior, beta), q, _identity,
                      key, num_samples, beta=beta)
  if estimator == 'stl':
    # ELBO with log q evaluated at stopped parameters: iwae stl with K=N
    # averages log-weights instead of log-mean-exp-ing them.
    f = _elbo_integrand(log_likelihood, core.sg(q), prior, beta)
    return core.pathwise_surrogate(f, q, _identity, key, num_samples)
  if objective == 'elbo':
    f = log_likelihood
    kl_term: float | Array = beta * jnp.sum(kl_lib.kl_divergence(q, prior))
  else:
    f = _elbo_integrand(log_likelihood, q, prior, beta)
    kl_term = 0.0
  assert entry.expectation is not None  # registry.check refused it otherwise.
  return entry.expectation(f, q, _identity, key, num_samples,
                           **options) - kl_term


def score_cost(objective: str, surrogate_value: Array, q, prior,
               beta: float | Array = 1.0) -> Array:
  """The mean score-function cost f̄ behind a surrogate's value.

  For 'elbo' the surrogate's value is f̄ - β KL(q‖p) with f = log p(x|z), so
  f̄ = value + β KL; for 'elbo_mc_kl' the value is f̄ itself. A trainer feeds
  f̄ into the moving-average baseline of 'score_moving_average'.
  """
  value = core.sg(surrogate_value)
  if objective == 'elbo':
    return value + beta * core.sg(jnp.sum(kl_lib.kl_divergence(q, prior)))
  return value
