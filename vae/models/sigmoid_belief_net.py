"""A VAE with Bernoulli latents (a one-layer sigmoid belief net + encoder).

    p(b) = Π_j Bern(b_j; σ(a_j)),   p_θ(x|b) = Π_i Bern(x_i; σ(D_θ(b)_i)),
    q_φ(b|x) = Π_j Bern(b_j; σ(E_φ(x)_j)),

with D_θ, E_φ linear maps (or tanh MLPs) as in Dong et al. (2020). The ELBO
E_q[log p(x|b)] - KL(q ‖ p) uses the analytic Bernoulli KL; only the
reconstruction term needs a gradient estimator. `batch_surrogate` gives, for
each registry estimator for discrete latents (`ESTIMATORS`), a loss whose gradient w.r.t. all
parameters is that estimator (encoder) and the ordinary Monte Carlo gradient
(decoder, prior):

  score_moving_average      score function with a moving-average baseline b̄:
                    (f(b) - b̄) ∇ log q(b), f(b) = log p(x|b);
  score_rloo        score function with the leave-one-out baseline;
  vimco             VIMCO on the K-sample bound IWAE_K (Mnih & Rezende 2016);
  straight_through  forward on b, backward through the relaxation;
  gumbel_softmax    the relaxed (Concrete) sample everywhere (biased);
  disarm            DisARM (Dong, Mnih & Tucker 2020), one antithetic pair per
                    2 evaluations.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp

from vae import distributions as dists
from vae.models import gaussian_vae
from vae.estimators import iwae as iwae_estimators
from vae import kl as kl_lib
from vae import objectives
from vae.estimators import registry
from vae import types

Array = types.Array
PRNGKey = types.PRNGKey
Params = dict[str, Any]

ESTIMATORS = registry.names(latents='discrete')


def init(key: PRNGKey, data_dim: int, latent_dim: int,
         hidden: tuple[int, ...] = (), data_mean: Array | None = None
         ) -> Params:
  """Parameters; decoder output bias = logit of the data mean when given."""
  k_enc, k_dec = jax.random.split(key)
  params = {
      'encoder': gaussian_vae.init_mlp(k_enc, [data_dim, *hidden, latent_dim]),
      'decoder': gaussian_vae.init_mlp(k_dec, [latent_dim, *hidden, data_dim]),
      'prior_logits': jnp.zeros(latent_dim),
  }
  if data_mean is not None:
    p = jnp.clip(data_mean, 1e-3, 1 - 1e-3)
    params['decoder'][-1]['b'] = jnp.log(p) - jnp.log1p(-p)
  return params


def encode(params: Params, x: Array) -> dists.Bernoulli:
  """q_φ(b|x) = Bern(σ(E_φ(2x - 1)))."""
  return dists.Bernoulli(logits=gaussian_vae.mlp(params['encoder'],
                                                 2.0 * x - 1.0))


def prior(params: Params) -> dists.Bernoulli:
  """p(b) = Bern(σ(a)) with learned logits a."""
  return dists.Bernoulli(logits=params['prior_logits'])


def log_likelihood(params: Params, x: Array, b: Array) -> Array:
  """log p_θ(x|b) = Σ_i x_i l_i - softplus(l_i), l = D_θ(b); b ∈ [0,1]^d."""
  logits = gaussian_vae.mlp(params['decoder'], b)
  return jnp.sum(dists.Bernoulli(logits).log_prob(x))


def _identity(q):
  return q


def objective_of(estimator: str) -> str:
  """The bound an estimator trains: IWAE_K for VIMCO, else the ELBO."""
  return 'iwae' if 'elbo' not in registry.lookup(estimator).objectives() else (
      'elbo')


def unbiased_for_elbo(estimator: str) -> bool:
  """Whether the estimator is unbiased for the ELBO gradient (VIMCO targets IWAE_K)."""
  return (registry.lookup(estimator).unbiased and
          objective_of(estimator) == 'elbo')


def example_surrogate(params: Params, x: Array, key: PRNGKey, estimator: str,
                      num_samples: int, baseline: Array = 0.0,
                      temperature: float = 0.5) -> tuple[Array, Array]:
  """One example's surrogate and its mean reconstruction f̄ (for baselines).

  Args:
    params: model and encoder parameters.
    x: one binary data point [D].
    key: PRNG key.
    estimator: a registry estimator for discrete latents.
    num_samples: evaluations of log p(x|b) (for disarm: num_samples // 2
      antithetic pairs).
    baseline: the moving average b̄ (score_moving_average only).
    temperature: relaxation temperature (straight_through, gumbel_softmax).

  Returns:
    (surrogate, mean f(b) over the samples drawn).
  """
  q = encode(params, x)
  p = prior(params)
  f = functools.partial(log_likelihood, params, x)
  entry = registry.lookup(estimator)
  objective = objective_of(estimator)
  options = {'temperature': temperature} if entry.options else {}
  samples = max(1, num_samples // entry.evaluations_per_sample)
  value = objectives.surrogate_objective(
      objective, estimator, f, q, p, key, samples,
      baseline=baseline if entry.state else None, **options)
  return value, objectives.score_cost(objective, value, q, p)


def batch_surrogate(params: Params, x: Array, key: PRNGKey, estimator: str,
                    num_samples: int, baseline: Array = 0.0,
                    temperature: float = 0.5) -> tuple[Array, Array]:
  """Mean surrogate over a batch x [B, D] and the mean reconstruction term."""
  keys = jax.random.split(key, x.shape[0])
  values, recon = jax.vmap(
      lambda xi, ki: example_surrogate(params, xi, ki, estimator, num_samples,
                                       baseline, temperature))(x, keys)
  return jnp.mean(values), jnp.mean(recon)


def elbo(params: Params, x: Array, key: PRNGKey, num_samples: int) -> Array:
  """ELBO(x) ≈ (1/S) Σ_s log p(x|b_s) - KL(q ‖ p), b_s ~ q(b|x), one x."""
  q = encode(params, x)
  b = q.sample(key, (num_samples,))
  recon = jnp.mean(jax.vmap(functools.partial(log_likelihood, params, x))(b))
  return recon - jnp.sum(kl_lib.kl_divergence(q, prior(params)))


def iwae(params: Params, x: Array, key: PRNGKey, num_samples: int) -> Array:
  """IWAE_K(x) = log (1/K) Σ_k p(x|b_k) p(b_k)/q(b_k|x), b_k ~ q(b|x), one x."""
  q, p = encode(params, x), prior(params)
  log_joint = lambda b: log_likelihood(params, x, b) + jnp.sum(p.log_prob(b))
  b = q.sample(key, (num_samples,))
  log_w = jax.vmap(log_joint)(b) - jnp.sum(q.log_prob(b), axis=-1)
  return iwae_estimators.log_mean_exp(log_w)


def mean_bound(bound, params: Params, x: Array, key: PRNGKey,
               num_samples: int) -> Array:
  """Mean of `bound` (elbo or iwae) over the rows of x [N, D]."""
  keys = jax.random.split(key, x.shape[0])
  return jnp.mean(jax.vmap(lambda xi, ki: bound(params, xi, ki,
                                                num_samples))(x, keys))


def encoder_gradients(params: Params, x: Array, keys: Array, estimator: str,
                      num_samples: int, baseline: Array = 0.0,
                      temperature: float = 0.5) -> Array:
  """Flattened encoder gradients of the batch surrogate, one row per key.

  ∇_φ of `batch_surrogate` for each key in `keys` [R] (vmapped; jit it):
  returns [R, number of encoder parameters].
  """
  def one(key):
    grads = jax.grad(lambda p: batch_surrogate(p, x, key, estimator,
                                               num_samples, baseline,
                                               temperature)[0])(params)
    leaves = jax.tree_util.tree_leaves(grads['encoder'])
    return jnp.concatenate([jnp.ravel(l) for l in leaves])

  return jax.vmap(one)(keys)


def make_trainer(train_x: Array, estimator: str, num_samples: int = 2,
                 batch_size: int = 50, learning_rate: float = 1e-3,
                 temperature: float = 0.5, ma_decay: float = 0.99):
  """(init_state, run_steps) for Adam on the negated batch surrogate.

  `init_state(params)` -> state = (params, opt_state, baseline b̄), with b̄
  the mean reconstruction term at `params` on the first 500 examples.
  `run_steps(state, keys)` runs len(keys) steps under `lax.scan` (minibatches
  drawn with replacement) and returns (state, mean surrogate per step). For
  'score_moving_average', b̄ ← decay·b̄ + (1-decay)·mean f(b) after each step (its
  value before the step is the baseline, so the estimator stays unbiased).

  Args:
    train_x: training data [N, D] (binary).
    estimator: one of ESTIMATORS.
    num_samples: evaluations of log p(x|b) per example and step.
    batch_size: examples per step.
    learning_rate: Adam step size.
    temperature: relaxation temperature.
    ma_decay: moving-average decay of the baseline.

  Returns:
    The two functions (jit `run_steps` yourself).
  """
  import optax  # pylint: disable=g-import-not-at-top
  opt = optax.adam(learning_rate)

  def init_state(params):
    x0 = train_x[:500]
    b0 = jnp.mean(jax.vmap(lambda xi: log_likelihood(
        params, xi, encode(params, xi).mean()))(x0))
    return params, opt.init(params), b0

  def step(state, key):
    params, opt_state, baseline = state
    k_batch, k_loss = jax.random.split(key)
    idx = jax.random.randint(k_batch, (batch_size,), 0, train_x.shape[0])
    (value, recon), grads = jax.value_and_grad(
        lambda p: batch_surrogate(p, train_x[idx], k_loss, estimator,
                                  num_samples, baseline, temperature),
        has_aux=True)(params)
    grads = jax.tree_util.tree_map(jnp.negative, grads)  # maximize.
    updates, opt_state = opt.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    baseline = ma_decay * baseline + (1.0 - ma_decay) * recon
    return (params, opt_state, baseline), value

  def run_steps(state, keys):
    return jax.lax.scan(step, state, keys)

  return init_state, run_steps
