"""KL divergences: closed forms for the distributions in `vae.distributions`,
and a Monte Carlo estimator from samples.

All analytic KLs are elementwise (one value per independent variable, per
categorical variable for Categorical); sum over the latent axes yourself.
A pair with a MultivariateNormal gives one value per D-vector (a Normal
beside it is read as one vector over its last axis).
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp

from vae import distributions as dists
from vae import types

Array = types.Array
PRNGKey = types.PRNGKey


def kl_normal_normal(q: dists.Normal, p: dists.Normal) -> Array:
  """KL(N(μq, σq²) ‖ N(μp, σp²)), elementwise.

  KL = log σp - log σq + (σq² + (μq - μp)²) / (2 σp²) - ½.

  Args:
    q: the first Normal.
    p: the second Normal.

  Returns:
    The elementwise KL, shape of the broadcast parameters.
  """
  log_ratio = q.log_scale - p.log_scale  # log σq/σp
  diff = (q.loc - p.loc) * jnp.exp(-p.log_scale)
  # σq²/σp² - 1 - log(σq²/σp²), written with expm1 for accuracy near q = p.
  var_term = jnp.expm1(2.0 * log_ratio) - 2.0 * log_ratio
  return 0.5 * (var_term + diff**2)


def kl_normal_standard_normal(q: dists.Normal) -> Array:
  """KL(N(μ, σ²) ‖ N(0, 1)) = ½(σ² + μ² - 1 - log σ²), elementwise."""
  two_log_s = 2.0 * q.log_scale
  return 0.5 * (jnp.expm1(two_log_s) - two_log_s + q.loc**2)


def kl_bernoulli_bernoulli(q: dists.Bernoulli, p: dists.Bernoulli) -> Array:
  """KL(Bern(σ(a)) ‖ Bern(σ(b))), elementwise, computed in logits.

  KL = σ(a)(log σ(a) - log σ(b)) + σ(-a)(log σ(-a) - log σ(-b)).

  Args:
    q: the first Bernoulli (logits a).
    p: the second Bernoulli (logits b).

  Returns:
    The elementwise KL.
  """
  a, b = q.logits, p.logits
  pa = jax.nn.sigmoid(a)
  return (pa * (jax.nn.log_sigmoid(a) - jax.nn.log_sigmoid(b)) +
          (1.0 - pa) * (jax.nn.log_sigmoid(-a) - jax.nn.log_sigmoid(-b)))


def kl_categorical_categorical(q: dists.Categorical,
                               p: dists.Categorical) -> Array:
  """KL(Cat(softmax(a)) ‖ Cat(softmax(b))) = Σ_c q_c (log q_c - log p_c).

  Args:
    q: the first Categorical (classes on the last axis).
    p: the second Categorical.

  Returns:
    One KL per categorical variable (the class axis is summed).
  """
  log_q, log_p = q.log_probs, p.log_probs
  return jnp.sum(jnp.exp(log_q) * (log_q - log_p), axis=-1)


def kl_mvn_mvn(q: dists.MultivariateNormal,
               p: dists.MultivariateNormal) -> Array:
  """KL(N(μq, Σq) ‖ N(μp, Σp)), one value per D-vector.

  KL = ½ [tr(Σp⁻¹Σq) + (μp - μq)ᵀ Σp⁻¹ (μp - μq) - D + log det Σp
          - log det Σq], with tr(Σp⁻¹Σq) = ‖Lp⁻¹ Lq‖²_F and the quadratic
  form ‖Lp⁻¹(μq - μp)‖² from triangular solves (Σ = L Lᵀ).

  Args:
    q: the first Gaussian.
    p: the second (same D; batch shapes broadcast).

  Returns:
    The KL, shape of the broadcast batch shapes.
  """
  solve = jnp.vectorize(
      lambda a, b: jax.scipy.linalg.solve_triangular(a, b, lower=True),
      signature='(n,n),(n,m)->(n,m)')
  trace = jnp.sum(solve(p.scale_tril, q.scale_tril)**2, (-2, -1))
  maha = jnp.sum(p.whiten(q.loc)**2, -1)
  return 0.5 * (trace + maha - q.dim + p.log_det_covariance() -
                q.log_det_covariance())


def _as_mvn(d: Any) -> dists.MultivariateNormal:
  if isinstance(d, dists.Normal):
    return dists.MultivariateNormal.from_normal(d)
  return d


def kl_mvn_normal(q: Any, p: Any) -> Array:
  """KL between a MultivariateNormal and a diagonal Normal (either order).

  The Normal is N(μ, diag σ²) over its last axis (`from_normal`); the KL is
  `kl_mvn_mvn`'s, one value per D-vector.
  """
  return kl_mvn_mvn(_as_mvn(q), _as_mvn(p))


_ANALYTIC: dict[tuple[type, type], Callable[[Any, Any], Array]] = {
    (dists.Normal, dists.Normal): kl_normal_normal,
    (dists.MultivariateNormal, dists.MultivariateNormal): kl_mvn_mvn,
    (dists.MultivariateNormal, dists.Normal): kl_mvn_normal,
    (dists.Normal, dists.MultivariateNormal): kl_mvn_normal,
    (dists.Bernoulli, dists.Bernoulli): kl_bernoulli_bernoulli,
    (dists.Categorical, dists.Categorical): kl_categorical_categorical,
}


def kl_divergence(q: Any, p: Any) -> Array:
  """Analytic KL(q ‖ p) for a supported pair of distribution types.

  Args:
    q: a distribution from `vae.distributions`.
    p: a distribution of the same family.

  Returns:
    The elementwise KL.

  Raises:
    NotImplementedError: for a pair with no closed form here.
  """
  fn = _ANALYTIC.get((type(q), type(p)))
  if fn is None:
    raise NotImplementedError(
        f'No analytic KL for ({type(q).__name__}, {type(p).__name__}); '
        f'supported: {[(a.__name__, b.__name__) for a, b in _ANALYTIC]}. '
        'Use mc_kl_divergence instead.')
  return fn(q, p)


def mc_kl_divergence(q: Any, p: Any, key: PRNGKey, num_samples: int) -> Array:
  """Monte Carlo KL: (1/N) Σ_n [log q(z_n) - log p(z_n)], z_n ~ q.

  Unbiased for KL(q ‖ p); its standard error is std(log q - log p)/√N.
  Gradients flow through reparameterized samples where q allows it.

  Args:
    q: the distribution samples come from.
    p: the other distribution (any object with `log_prob`).
    key: a PRNG key.
    num_samples: N ≥ 1.

  Returns:
    The estimate, elementwise (per variable, like the analytic KLs).
  """
  if num_samples < 1:
    raise ValueError(f'num_samples must be >= 1, got {num_samples}.')
  z = q.sample(key, (num_samples,))
  return jnp.mean(q.log_prob(z) - p.log_prob(z), axis=0)
