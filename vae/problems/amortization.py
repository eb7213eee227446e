"""Variational inference in the linear-Gaussian model: best q, encoders, gaps.

Model (see `vae.linear_gaussian`): z ~ N(0, I_d), x | z ~ N(Wz + b, σ² I_D),
posterior p(z|x) = N(m(x), Λ⁻¹) with precision Λ = I + WᵀW/σ².

* The best diagonal Gaussian q*(z|x) = argmax ELBO has mean m(x) and
  variances 1/Λ_jj, and its approximation gap
      log p(x) - ELBO(q*) = KL(q* ‖ p(z|x)) = ½ (Σ_j log Λ_jj - log det Λ)
  is the same for every x; it is 0 iff WᵀW is diagonal.
* An encoder (amortized inference) maps x to q_φ(z|x); its amortization gap
  is ELBO(q*) - ELBO(q_φ) ≥ 0 (Cremer, Li & Duvenaud 2018).
* `fit_by_elbo` learns (W, b, σ) by maximizing the ELBO with any estimator
  of `vae.objectives.surrogate_objective`, with an amortized linear encoder
  or per-data-point variational parameters.

Encoders are `networks.MLPEncoder`s (linear: no hidden layer); both loops
are `vae.optim.make_step` + `vae.optim.fit`.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vae import distributions as dists
from vae import objectives
from vae import stats
from vae import optim
from vae import types
from vae.estimators import registry
from vae.models import networks
from vae.problems import linear_gaussian as lg

Array = types.Array
PRNGKey = types.PRNGKey
Params = dict[str, Any]


def orthogonal_model(key: PRNGKey, data_dim: int, latent_dim: int,
                     scales: Array | None = None,
                     noise_scale: float = 0.5) -> lg.LinearGaussianModel:
  """A model with W = U diag(scales), UᵀU = I, so WᵀW is diagonal.

  Its posterior covariance (I + WᵀW/σ²)⁻¹ is diagonal, so a diagonal q can be
  exact: ELBO(q*) = log p(x).

  Args:
    key: PRNG key (U and b).
    data_dim: D.
    latent_dim: d ≤ D.
    scales: column norms of W (default 1, 2, ..., d).
    noise_scale: σ.

  Returns:
    The model.
  """
  k_u, k_b = jax.random.split(key)
  u, _ = jnp.linalg.qr(jax.random.normal(k_u, (data_dim, latent_dim)))
  if scales is None:
    scales = jnp.arange(1, latent_dim + 1, dtype=u.dtype)
  return lg.LinearGaussianModel(
      weight=u * jnp.asarray(scales, u.dtype),
      bias=jax.random.normal(k_b, (data_dim,), u.dtype),
      log_noise_scale=jnp.log(jnp.asarray(noise_scale, u.dtype)))


@jax.jit
def posterior_precision(model: lg.LinearGaussianModel) -> Array:
  """Λ = I + WᵀW / σ² (the same for every x)."""
  w = model.weight
  eye = jnp.eye(model.latent_dim, dtype=w.dtype)
  return eye + w.T @ w / model.noise_variance


@jax.jit
def optimal_diagonal_q(model: lg.LinearGaussianModel, x: Array) -> dists.Normal:
  """argmax over diagonal Gaussians q of ELBO(q) for one x [D] (or a batch).

  q* = N(m(x), diag(1/Λ_jj)), m(x) = Λ⁻¹ Wᵀ(x - b)/σ²: the KL(q ‖ p(z|x))
  minimizer among diagonal Gaussians, which matches the posterior mean and
  the diagonal of the posterior *precision*.
  """
  precision = posterior_precision(model)
  mean = jnp.linalg.solve(precision, model.weight.T @ jnp.swapaxes(
      jnp.atleast_2d(x - model.bias), 0, 1) / model.noise_variance).T
  mean = jnp.reshape(mean, jnp.shape(x)[:-1] + (model.latent_dim,))
  log_scale = -0.5 * jnp.log(jnp.diagonal(precision))
  return dists.Normal(loc=mean, log_scale=jnp.broadcast_to(log_scale,
                                                           mean.shape))


@jax.jit
def approximation_gap(model: lg.LinearGaussianModel) -> Array:
  """log p(x) - max_{q diagonal} ELBO(q) = ½ (Σ_j log Λ_jj - log det Λ) ≥ 0."""
  precision = posterior_precision(model)
  _, log_det = jnp.linalg.slogdet(precision)
  return 0.5 * (jnp.sum(jnp.log(jnp.diagonal(precision))) - log_det)


@jax.jit
def batch_elbo(model: lg.LinearGaussianModel, x: Array,
               q: dists.Normal) -> Array:
  """Closed-form ELBO(q_n) (`linear_gaussian.elbo`) per row: x [N, D] -> [N]."""
  return jax.vmap(lambda xi, loc, ls: lg.elbo(
      model, xi, dists.Normal(loc, ls)))(x, q.loc, jnp.broadcast_to(
          q.log_scale, q.loc.shape))


@jax.jit
def batch_log_marginal(model: lg.LinearGaussianModel, x: Array) -> Array:
  """Exact log p(x_n) for each row of x [N, D]: [N]."""
  return lg.log_marginal(model, x)


# --------------------------------------------------------------------------
# Encoders.


ENCODERS = ('linear', 'mlp')


def init_encoder(key: PRNGKey, kind: str, data_dim: int, latent_dim: int,
                 hidden: int = 32) -> Params:
  """Variables of a `networks.MLPEncoder`; `kind` is 'linear' or 'mlp'.

  linear: μ = xA + c, log σ = xB + e.
  mlp:    h = tanh(x W₁ + b₁), μ = h A + c, log σ = h B + e.
  W₁ ~ N(0, 1/D); A, B ~ N(0, 0.01/n_in); biases 0.
  """
  k1, k2, k3 = jax.random.split(key, 3)
  if kind not in ENCODERS:
    raise ValueError(f"encoder kind must be 'linear' or 'mlp', got {kind!r}.")
  layers, inputs = [], data_dim
  if kind == 'mlp':
    layers = [{'w': jax.random.normal(k1, (data_dim, hidden)) / jnp.sqrt(
        data_dim), 'b': jnp.zeros(hidden)}]
    inputs = hidden
  scale = 0.1 / jnp.sqrt(inputs)
  heads = [scale * jax.random.normal(k, (inputs, latent_dim)) for k in (k2,
                                                                        k3)]
  layers.append({'w': jnp.concatenate(heads, -1),
                 'b': jnp.zeros(2 * latent_dim)})
  return networks.variables(layers)


def encode(params: Params, x: Array) -> dists.Normal:
  """q_φ(z|x) for x [D] or [N, D] (the sizes are read from the parameters)."""
  latent_dim = params['params']['loc']['kernel'].shape[-1]
  net = networks.MLPEncoder(networks.hidden_sizes(params), latent_dim)
  return dists.Normal(*net.apply(params, x))


@jax.jit
def gap_terms(model: lg.LinearGaussianModel, x: Array,
              encoder_params: Params) -> dict[str, Array]:
  """Per-point log p(x_n), ELBO(q*_n), ELBO(q_φ(·|x_n)) for x [N, D]."""
  return {
      'log_px': batch_log_marginal(model, x),
      'elbo_optimal_q': batch_elbo(model, x, optimal_diagonal_q(model, x)),
      'elbo_amortized': batch_elbo(model, x, encode(encoder_params, x)),
  }


def summarize_gaps(terms: dict[str, Array]) -> dict[str, Array]:
  """Means of `gap_terms` and the two gaps (Cremer et al. 2018):

  approximation_gap = log p(x) - ELBO(q*),
  amortization_gap  = ELBO(q*) - ELBO(q_φ(·|x)).
  """
  log_px, opt, amortized = (terms['log_px'], terms['elbo_optimal_q'],
                            terms['elbo_amortized'])
  return {
      'log_px': jnp.mean(log_px),
      'elbo_optimal_q': jnp.mean(opt),
      'elbo_amortized': jnp.mean(amortized),
      'approximation_gap': jnp.mean(log_px - opt),
      'amortization_gap': jnp.mean(opt - amortized),
  }


def best_diagonal_check(model: lg.LinearGaussianModel,
                        x: Array) -> dict[str, float | bool]:
  """Mean log p(x), ELBO(q*) and their gap beside `approximation_gap`.

  log p(x_n) - ELBO(q*_n) equals ½(Σ_j log Λ_jj - log det Λ) for every n;
  disagrees: some point's difference exceeds `stats.rounding_tolerance` or
  is not finite.
  """
  log_px = np.asarray(batch_log_marginal(model, x))
  elbo = np.asarray(batch_elbo(model, x, optimal_diagonal_q(model, x)))
  formula = float(approximation_gap(model))
  err = np.abs(log_px - elbo - formula)
  return {'log_px': float(np.mean(log_px)),
          'elbo_best_diagonal_q': float(np.mean(elbo)),
          'gap': float(np.mean(log_px - elbo)),
          'max_abs_gap_minus_formula': float(np.max(err)),
          'gap_formula': formula, 'disagrees': not bool(np.all(  # NaN: True.
              err <= stats.rounding_tolerance(np.abs(log_px) + np.abs(elbo),
                                              x.dtype)))}


def checked_gaps(model: lg.LinearGaussianModel, datasets: tuple[Array, ...],
                 encoder_params: Params) -> list[dict[str, float | bool]]:
  """`summarize_gaps` of each data set beside the closed form, checked.

  One `gap_terms` call on the data sets concatenated. disagrees: the mean
  log p(x) - ELBO(q*) differs from `approximation_gap` or the amortization
  gap is negative (q* is the optimum), beyond `stats.rounding_tolerance`,
  or either is not finite.
  """
  terms = gap_terms(model, jnp.concatenate(datasets), encoder_params)
  formula = float(approximation_gap(model))
  out, start = [], 0
  for x in datasets:
    g = {k: float(v) for k, v in summarize_gaps(
        {k: v[start:start + len(x)] for k, v in terms.items()}).items()}
    start += len(x)
    tol = stats.rounding_tolerance(
        abs(g['log_px']) + abs(g['elbo_amortized']), x.dtype)
    out.append({**g, 'approximation_gap_closed_form': formula,
                'disagrees': not (abs(g['approximation_gap'] - formula) <= tol
                                  and g['amortization_gap'] >= -tol)})
  return out


def log_likelihoods(model: lg.LinearGaussianModel,
                    *data: Array) -> list[float]:
  """The mean exact log p(x) of each data set [N_i, D]."""
  return [float(jnp.mean(batch_log_marginal(model, x))) for x in data]


def _with_evals(step, evaluate):
  """A `optim.make_step` step that also returns evaluate(params after it)."""
  def stepped(state, batch, key):
    state, aux = step(state, batch, key)
    return state, (aux, evaluate(state.params))
  return stepped


@functools.partial(jax.jit, static_argnames=('num_steps', 'optimizer'))
def train_encoder(model: lg.LinearGaussianModel, x: Array, params: Params,
                  num_steps: int,
                  optimizer: optim.OptimizerConfig = optim.OptimizerConfig(
                      learning_rate=1e-2),
                  eval_sets: tuple[Array, ...] = ()
                  ) -> tuple[Params, Array, tuple[Array, ...]]:
  """Fits an encoder for a fixed model: max_φ (1/N) Σ_n ELBO(q_φ(·|x_n)).

  Full-batch steps on the closed-form ELBO (no Monte Carlo noise), so any
  remaining gap is due to the encoder and the optimization, not to gradient
  variance.

  Args:
    model: the (fixed) linear-Gaussian model.
    x: training data [N, D].
    params: initial encoder parameters (`init_encoder`).
    num_steps: optimizer steps.
    optimizer: the optimizer (default Adam, learning rate 1e-2).
    eval_sets: data sets [M_i, D] on which to track the mean ELBO.

  Returns:
    (trained params, mean training ELBO before each step [num_steps],
    for each eval set the mean ELBO(q_φ) after each step [num_steps]).
  """
  opt = optim.make_optimizer(optimizer, num_steps)

  def mean_elbo(p, data):
    return jnp.mean(batch_elbo(model, data, encode(p, data)))

  def loss(p, batch, key, baseline):
    del batch, key, baseline
    value = -mean_elbo(p, x)
    return value, {'elbo': -value}

  step = _with_evals(optim.make_step(loss, opt),
                     lambda p: tuple(mean_elbo(p, e) for e in eval_sets))
  keys = jax.random.split(jax.random.PRNGKey(0), num_steps)  # Unused.
  state, (aux, evals) = optim.fit(step, optim.init_state(params, opt), None,
                                  keys)
  return state.params, aux['elbo'], evals


# --------------------------------------------------------------------------
# Learning the model by maximizing the ELBO.


def init_model(key: PRNGKey, x: Array,
               latent_dim: int) -> lg.LinearGaussianModel:
  """Starting point for learning: W ~ 0.1 N(0, 1), b = mean(x), σ = 1."""
  return lg.LinearGaussianModel(
      weight=0.1 * jax.random.normal(key, (x.shape[1], latent_dim), x.dtype),
      bias=jnp.mean(x, axis=0),
      log_noise_scale=jnp.zeros((), x.dtype))


INFERENCE = ('amortized', 'per_point')
# Estimators of the ELBO's gradient that `fit_by_elbo` accepts.
ESTIMATORS = registry.names('elbo_mc_kl', 'continuous', stateless=True)


def objective_for(estimator: str) -> str:
  """The ELBO form `fit_by_elbo` uses: 'elbo_mc_kl' for stl, else 'elbo'."""
  return 'elbo_mc_kl' if estimator == 'stl' else 'elbo'


def _variational(params: Params, x: Array, inference: str) -> dists.Normal:
  if inference == 'amortized':
    return encode(params, x)
  return dists.Normal(loc=params['loc'], log_scale=params['log_scale'])


@functools.partial(jax.jit, static_argnames=(
    'latent_dim', 'estimator', 'inference', 'num_steps', 'optimizer',
    'num_samples'))
def fit_by_elbo(x: Array, latent_dim: int, estimator: str, key: PRNGKey,
                inference: str = 'amortized', num_steps: int = 2000,
                optimizer: optim.OptimizerConfig = optim.OptimizerConfig(
                    learning_rate=1e-2),
                num_samples: int = 2,
                ) -> tuple[lg.LinearGaussianModel, Params, Array]:
  """Learns (W, b, σ) and q jointly by maximizing (1/N) Σ_n ELBO(x_n).

  Each step is a full-batch optimizer step on the surrogate of
  `objectives.surrogate_objective` ('elbo' with the analytic KL; 'elbo_mc_kl'
  for 'stl'), whose gradient w.r.t. q's parameters is `estimator` and w.r.t.
  the model is the Monte Carlo gradient of E_q[log p(x|z)].

  Args:
    x: training data [N, D].
    latent_dim: d.
    estimator: one of ESTIMATORS.
    key: PRNG key.
    inference: 'amortized' (linear encoder) or 'per_point' (free μ_n, log σ_n
      for each training point).
    num_steps: optimizer steps.
    optimizer: the optimizer (default Adam, learning rate 1e-2).
    num_samples: z samples per data point and step.

  Returns:
    (model, variational params, exact mean ELBO after each step [num_steps]).
  """
  if inference not in INFERENCE:
    raise ValueError(f"inference must be 'amortized' or 'per_point', got "
                     f'{inference!r}.')
  objective = objective_for(estimator)
  k_model, k_q, k_steps = jax.random.split(key, 3)
  model = init_model(k_model, x, latent_dim)
  if inference == 'amortized':
    q_params = jax.tree_util.tree_map(
        lambda a: a.astype(x.dtype),
        init_encoder(k_q, 'linear', x.shape[1], latent_dim))
  else:
    zeros = jnp.zeros((x.shape[0], latent_dim), x.dtype)
    q_params = {'loc': zeros, 'log_scale': zeros}
  params = {'model': model, 'q': q_params}
  opt = optim.make_optimizer(optimizer, num_steps)

  def loss(p, batch, k, baseline):
    del batch, baseline
    q = _variational(p['q'], x, inference)
    prior = dists.standard_normal((latent_dim,), x.dtype)

    def one(xi, loc, log_scale, ki):
      log_lik = lambda z: lg.log_likelihood(p['model'], xi, z)
      return objectives.surrogate_objective(
          objective, estimator, log_lik, dists.Normal(loc, log_scale), prior,
          ki, num_samples)

    keys = jax.random.split(k, x.shape[0])
    return -jnp.mean(jax.vmap(one)(x, q.loc, q.log_scale, keys)), {}

  def exact_elbo(p):
    return jnp.mean(batch_elbo(p['model'], x, _variational(p['q'], x,
                                                           inference)))

  step = _with_evals(optim.make_step(loss, opt), exact_elbo)
  state, (_, history) = optim.fit(step, optim.init_state(params, opt), None,
                                  jax.random.split(k_steps, num_steps))
  return state.params['model'], state.params['q'], history


def compare_fits(x_train: Array, x_test: Array, true_model, latent_dim: int,
                 amortized: tuple[str, ...], per_point: tuple[str, ...],
                 key: PRNGKey, num_steps: int,
                 optimizer: optim.OptimizerConfig,
                 num_samples: int) -> tuple[list[dict], dict[str, Array]]:
  """The true model, the pPCA MLE and ELBO fits, by exact log-likelihood.

  The fits are `fit_by_elbo` with each estimator in `amortized` (inference
  'amortized'), then each in `per_point`; the fit of estimator e with
  inference kind j (index in INFERENCE) has key fold_in(fold_in(key, j),
  registry.name_id(e)) (independent of the lists' order).
  Checks (`disagrees`, to `stats.rounding_tolerance`): no model's mean
  train log p(x) exceeds the MLE's (its global maximum) and no final ELBO
  exceeds its model's log p(x); a value that is not finite disagrees.

  Returns:
    ({method, train_ll, test_ll, train_elbo, approximation_gap_of_model,
    disagrees} per model, {method: exact mean ELBO after each step}).
  """
  mle = lg.fit_ppca(x_train, latent_dim)
  models: list[tuple[str, Any, float | None]] = [
      ('true model', true_model, None),
      ('pPCA maximum likelihood (closed form)', mle, None)]
  curves = {}
  runs = ([('amortized', e) for e in amortized] +
          [('per_point', e) for e in per_point])
  for inference, estimator in runs:
    run_key = jax.random.fold_in(jax.random.fold_in(
        key, INFERENCE.index(inference)), registry.name_id(estimator))
    model, _, history = fit_by_elbo(
        x_train, latent_dim, estimator, run_key, inference, num_steps,
        optimizer, num_samples)
    name = f'ELBO, {estimator}, {inference} q'
    curves[name] = history
    models.append((name, model, float(history[-1])))
  (best,) = log_likelihoods(mle, x_train)
  records = []
  for name, model, elbo in models:
    train_ll, test_ll = log_likelihoods(model, x_train, x_test)
    tol = stats.rounding_tolerance(train_ll, x_train.dtype)
    records.append({
        'method': name, 'train_ll': train_ll, 'test_ll': test_ll,
        'train_elbo': elbo,
        'approximation_gap_of_model': float(approximation_gap(model)),
        **({} if model is mle else {'disagrees': not (  # NaN: True.
            train_ll <= best + tol and (elbo is None or
                                        elbo <= train_ll + tol))})})
  return records, curves
