"""A VAE with Bernoulli latents (a one-layer sigmoid belief net + encoder).

    p(b) = Π_j Bern(b_j; σ(a_j)),   p_θ(x|b) = Π_i Bern(x_i; σ(D_θ(b)_i)),
    q_φ(b|x) = Π_j Bern(b_j; σ(E_φ(x)_j)),

with D_θ, E_φ linear maps, or MLPs (`Network`: e.g. two hidden layers of 200
LeakyReLU units with slope 0.3, the nonlinear model of Dong et al.'s code,
google-research/disarm), as in Dong, Mnih & Tucker (2020). The ELBO
E_q[log p(x|b)] - KL(q ‖ p) uses the analytic Bernoulli KL; only the
reconstruction term needs a gradient estimator. `batch_surrogate` gives, for
each registry estimator for discrete latents (`ESTIMATORS`), a loss whose
gradient w.r.t. all parameters is that estimator (encoder) and the ordinary
Monte Carlo gradient (decoder, prior):

  score_moving_average  score function with a moving-average baseline b̄:
                        (f(b) - b̄) ∇ log q(b), f(b) = log p(x|b);
  score_rloo            score function with the leave-one-out baseline;
  vimco                 VIMCO on the K-sample bound IWAE_K (Mnih & Rezende
                        2016);
  straight_through      forward on b, backward through the relaxation;
  gumbel_softmax        the relaxed (Concrete) sample everywhere (biased);
  disarm                DisARM (Dong, Mnih & Tucker 2020), one antithetic
                        pair per 2 evaluations.

Training goes through `vae.train` (`make_trainer`, `train_and_evaluate`,
which records the training ELBO and the held-out ELBO and IWAE_K bound
against steps, wall and CPU time); `encoder_gradient_moments` measures an
estimator's variance with `vae.moments`.
"""

import dataclasses
import functools
import time
from typing import Any, Callable

import jax
from jax import flatten_util
import jax.numpy as jnp
import optax

from vae import distributions as dists
from vae import kl as kl_lib
from vae import moments
from vae import objectives
from vae import train
from vae import types
from vae.estimators import iwae as iwae_estimators
from vae.estimators import registry
from vae.models import gaussian_vae
from vae.models import networks

Array = types.Array
PRNGKey = types.PRNGKey
Params = dict[str, Any]

ESTIMATORS = registry.names(latents='discrete')
# Floats of the decoder logits of one evaluation chunk (`mean_bound`; 2^22:
# 53 rows at K = 100, D = 784, half the time of one 500-row chunk), and
# of the gradient draws of one `vae.moments` chunk: bounds on memory.
EVAL_FLOATS = 2**22
MOMENT_FLOATS = 2**25


@functools.partial(jax.tree_util.register_dataclass, data_fields=['layers'],
                   meta_fields=['activation', 'negative_slope'])
@dataclasses.dataclass(frozen=True)
class Network:
  """Dense layers [{'w', 'b'}] and their activation a (static: a pytree).

  h_0 = input, h_{l+1} = a(h_l W_l + b_l) below the last layer, output
  h_{L-1} W_{L-1} + b_{L-1}; one layer is a linear map. `activation` names
  one of `networks.ACTIVATIONS`; leaky_relu is a(h) = max(h, s·h) with
  s = `negative_slope`.
  """
  layers: list[dict[str, Array]]
  activation: str = 'tanh'
  negative_slope: float = 0.3


def apply(net: Network, x: Array) -> Array:
  """h_{l+1} = a(h_l W_l + b_l) on hidden layers, the last one linear."""
  act = networks.get_activation(net.activation)
  if net.activation == 'leaky_relu':
    act = functools.partial(act, negative_slope=net.negative_slope)
  for layer in net.layers[:-1]:
    x = act(x @ layer['w'] + layer['b'])
  return x @ net.layers[-1]['w'] + net.layers[-1]['b']


def init(key: PRNGKey, data_dim: int, latent_dim: int,
         hidden: tuple[int, ...] = (), data_mean: Array | None = None,
         activation: str = 'tanh', negative_slope: float = 0.3) -> Params:
  """Parameters: W_l ~ N(0, 1/fan_in), b_l = 0, prior logits a = 0.

  The decoder's output bias is logit(clip(x̄, 10⁻³, 1 - 10⁻³)) when the
  data mean x̄ is given; `hidden` gives the hidden sizes of both networks
  (empty: linear maps) and `activation` their activation (`Network`).
  """
  k_enc, k_dec = jax.random.split(key)
  enc = gaussian_vae.init_mlp(k_enc, [data_dim, *hidden, latent_dim])
  dec = gaussian_vae.init_mlp(k_dec, [latent_dim, *hidden, data_dim])
  if data_mean is not None:
    p = jnp.clip(data_mean, 1e-3, 1 - 1e-3)
    dec[-1]['b'] = jnp.log(p) - jnp.log1p(-p)
  return {'encoder': Network(enc, activation, negative_slope),
          'decoder': Network(dec, activation, negative_slope),
          'prior_logits': jnp.zeros(latent_dim)}


def encode(params: Params, x: Array) -> dists.Bernoulli:
  """q_φ(b|x) = Bern(σ(E_φ(2x - 1)))."""
  return dists.Bernoulli(logits=apply(params['encoder'], 2.0 * x - 1.0))


def prior(params: Params) -> dists.Bernoulli:
  """p(b) = Bern(σ(a)) with learned logits a."""
  return dists.Bernoulli(logits=params['prior_logits'])


def log_likelihood(params: Params, x: Array, b: Array) -> Array:
  """log p_θ(x|b) = Σ_i x_i l_i - softplus(l_i), l = D_θ(b), b ∈ [0,1]^d."""
  logits = apply(params['decoder'], b)
  return jnp.sum(dists.Bernoulli(logits).log_prob(x))


def objective_of(estimator: str) -> str:
  """The bound an estimator trains: IWAE_K for VIMCO, else the ELBO."""
  return 'iwae' if 'elbo' not in registry.lookup(estimator).objectives() else (
      'elbo')


def unbiased_for_elbo(estimator: str) -> bool:
  """Whether it is unbiased for ∇ELBO (VIMCO's target is ∇IWAE_K)."""
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
  """IWAE_K(x) = log (1/K) Σ_k p(x|b_k) p(b_k) / q(b_k|x), b_k ~ q(b|x)."""
  q, p = encode(params, x), prior(params)
  log_joint = lambda b: log_likelihood(params, x, b) + jnp.sum(p.log_prob(b))
  b = q.sample(key, (num_samples,))
  log_w = jax.vmap(log_joint)(b) - jnp.sum(q.log_prob(b), axis=-1)
  return iwae_estimators.log_mean_exp(log_w)


@functools.partial(jax.jit, static_argnums=(0, 4))
def mean_bound(bound, params: Params, x: Array, key: PRNGKey,
               num_samples: int) -> Array:
  """(1/N) Σ_n bound(x_n) over the rows of x [N, D] (bound: elbo or iwae).

  Jitted; `bound` and `num_samples` are static. Row n uses the n-th key of
  split(key, N). Rows are vmapped in chunks of ⌊EVAL_FLOATS / (S·D)⌋ (S:
  num_samples), all at once when they fit.
  """
  keys = jax.random.split(key, x.shape[0])
  rows = max(1, EVAL_FLOATS // (num_samples * x.shape[1]))
  values = jax.lax.map(lambda a: bound(params, a[0], a[1], num_samples),
                       (x, keys), batch_size=0 if rows >= x.shape[0] else rows)
  return jnp.mean(values)


def encoder_gradient(params: Params, x: Array, key: PRNGKey, estimator: str,
                     num_samples: int, baseline: Array = 0.0,
                     temperature: float = 0.5) -> Array:
  """ĝ_φ = ∇_φ batch_surrogate(params, x, key), flattened: [P_encoder]."""
  grads = jax.grad(lambda p: batch_surrogate(p, x, key, estimator,
                                             num_samples, baseline,
                                             temperature)[0])(params)
  return flatten_util.ravel_pytree(grads['encoder'])[0]


@functools.partial(jax.jit, static_argnames=('estimator', 'num_samples',
                                             'num_draws'))
def encoder_gradient_moments(params: Params, x: Array, key: PRNGKey,
                             baseline: Array, temperature: Array, *,
                             estimator: str, num_samples: int,
                             num_draws: int) -> dict[str, Array]:
  """Mean and variance of D draws of `encoder_gradient` (`vae.moments`).

      mean = (1/D) Σ_d ĝ_d,   variance = Σ_d (ĝ_d - mean)² / (D - 1),

  the d-th draw with the d-th key of split(key, D), all D vmapped at once
  when D·P ≤ MOMENT_FLOATS (P: encoder parameters), else in chunks
  (`moments.default_chunk`).
  """
  size = gaussian_vae.num_params(params['encoder'])
  chunk = None if num_draws * size <= MOMENT_FLOATS else (
      moments.default_chunk(num_draws, size))
  return moments.moments(
      lambda k: encoder_gradient(params, x, k, estimator, num_samples,
                                 baseline, temperature), key, num_draws,
      chunk)


def initial_baseline(params: Params, train_x: Array) -> Array:
  """b̄₀ = (1/n) Σ_{i≤n} log p(x_i | E_q[b|x_i]), the first n ≤ 500 rows."""
  return jnp.mean(jax.vmap(lambda xi: log_likelihood(
      params, xi, encode(params, xi).mean()))(train_x[:500]))


def make_trainer(train_x: Array, estimator: str,
                 optimizer: optax.GradientTransformation,
                 num_samples: int = 2, batch_size: int = 50,
                 temperature: float = 0.5, ma_decay: float = 0.99):
  """(init_state, run_steps): `vae.train` steps on the batch surrogate.

  `init_state(params)` -> `train.TrainState` with the baseline
  `initial_baseline(params, train_x)`. `run_steps(state, keys)`
  runs len(keys) steps through `train.fit` and returns (state, the mean
  surrogate of each step). Step t draws its minibatch (with replacement)
  and its samples from keys[t], maximizes the surrogate L(φ, θ) and then
  updates b̄ ← decay·b̄ + (1 - decay)·mean_x f̄(x) (f̄: the step's mean
  reconstruction term), so the baseline a step uses is independent of its
  samples and score_moving_average stays unbiased.

  Args:
    train_x: training data [N, D] (binary).
    estimator: one of ESTIMATORS.
    optimizer: the optax optimizer.
    num_samples: evaluations of log p(x|b) per example and step.
    batch_size: examples per step.
    temperature: relaxation temperature.
    ma_decay: moving-average decay of the baseline.

  Returns:
    The two functions (jit `run_steps` yourself).
  """
  def loss(params, batch, key, baseline):
    del batch  # Drawn here, from the step's key.
    k_batch, k_loss = jax.random.split(key)
    idx = jax.random.randint(k_batch, (batch_size,), 0, train_x.shape[0])
    value, recon = batch_surrogate(params, train_x[idx], k_loss, estimator,
                                   num_samples, baseline, temperature)
    return -value, {'cost': recon, 'value': value}

  step = train.make_step(loss, optimizer, baseline_decay=ma_decay)

  def init_state(params):
    return train.init_state(params, optimizer,
                            initial_baseline(params, train_x))

  def run_steps(state, keys):
    state, aux = train.fit(step, state, None, keys)
    return state, aux['value']

  return init_state, run_steps


def samples_per_estimator(estimators: tuple[str, ...], evals_per_example: int,
                          vimco_samples: int | None = None
                          ) -> dict[str, int]:
  """Decoder evaluations per example and step of each estimator.

  K_e = vimco_samples for 'vimco' when given (VIMCO's IWAE_K), else
  evals_per_example (K samples; DisARM: K/2 antithetic pairs). ValueError
  (one line) when K_e is below the estimator's minimum samples times its
  evaluations per sample.
  """
  out = {e: vimco_samples if e == 'vimco' and vimco_samples else
         evals_per_example for e in estimators}
  for name, k in out.items():
    e = registry.lookup(name)
    if k < e.min_samples * e.evaluations_per_sample:
      option = 'vimco_samples' if k != evals_per_example else (
          'evals_per_example')
      raise ValueError(f'estimator {name!r} needs {option} >= '
                       f'{e.min_samples * e.evaluations_per_sample}.')
  return out


def evaluate(params: Params, train_x: Array, test_x: Array, key: PRNGKey,
             eval_samples: int = 8, iwae_samples: int = 100
             ) -> dict[str, float]:
  """The training ELBO and the held-out ELBO and IWAE_K bounds (`mean_bound`).

      train_elbo = (1/N) Σ_{x ∈ train_x} ELBO_S(x)   (key fold_in(key, 3)),
      test_elbo  = (1/M) Σ_{x ∈ test_x} ELBO_S(x)    (key fold_in(key, 1)),
      test_iwaeK = (1/M) Σ_{x ∈ test_x} IWAE_K(x)    (key fold_in(key, 1)),

  S = eval_samples, K = iwae_samples.
  """
  held_out = jax.random.fold_in(key, 1)
  return {'train_elbo': float(mean_bound(elbo, params, train_x,
                                         jax.random.fold_in(key, 3),
                                         eval_samples)),
          'test_elbo': float(mean_bound(elbo, params, test_x, held_out,
                                        eval_samples)),
          f'test_iwae{iwae_samples}': float(mean_bound(
              iwae, params, test_x, held_out, iwae_samples))}


def train_and_evaluate(train_x: Array, test_x: Array, params: Params,
                       estimator: str, optimizer: optax.GradientTransformation,
                       key: PRNGKey, *, num_steps: int, eval_every: int,
                       num_samples: int = 2, batch_size: int = 50,
                       temperature: float = 0.5, ma_decay: float = 0.99,
                       eval_samples: int = 8, iwae_samples: int = 100,
                       train_eval_examples: int = 500,
                       on_record: Callable[[dict[str, Any]], None] = (
                           lambda record: None)
                       ) -> tuple[list[dict[str, Any]], train.TrainState]:
  """Trains from `params` and evaluates the bounds every few steps.

  Steps run in compiled blocks of `eval_every` (keys split from
  fold_in(fold_in(key, 2), step)), timed alone (wall and process CPU
  seconds); at step 0 and after each block `evaluate` on the first
  `train_eval_examples` training images and on `test_x` (key `key`);
  `on_record` gets each curve record as it is made (progress).

  Returns:
    (records, final state). Records: kind ('curve' | 'final'), estimator,
    step, wall_time_s and cpu_time_s (training only, compilation
    excluded), train_elbo, test_elbo, test_iwae<K>, and for curves
    train_surrogate (the mean training objective of the block's steps).
  """
  init_state, run_steps = make_trainer(train_x, estimator, optimizer,
                                       num_samples, batch_size, temperature,
                                       ma_decay)
  state = init_state(params)
  step_key = jax.random.fold_in(key, 2)
  run = jax.jit(run_steps).lower(state, jax.random.split(key, eval_every)
                                 ).compile()
  bounds = functools.partial(evaluate, train_x=train_x[:train_eval_examples],
                             test_x=test_x, key=key,
                             eval_samples=eval_samples,
                             iwae_samples=iwae_samples)
  head = {'estimator': estimator, 'step': 0, 'wall_time_s': 0.0,
          'cpu_time_s': 0.0}
  records = [{'kind': 'curve', **head, **bounds(state.params),
              'train_surrogate': None}]
  on_record(records[-1])
  while head['step'] < num_steps:
    keys = jax.random.split(jax.random.fold_in(step_key, head['step']),
                            eval_every)
    wall, cpu = time.perf_counter(), time.process_time()
    state, values = jax.block_until_ready(run(state, keys))
    head = {'estimator': estimator, 'step': head['step'] + eval_every,
            'wall_time_s': head['wall_time_s'] + time.perf_counter() - wall,
            'cpu_time_s': head['cpu_time_s'] + time.process_time() - cpu}
    records.append({'kind': 'curve', **head, **bounds(state.params),
                    'train_surrogate': float(jnp.mean(values))})
    on_record(records[-1])
  last = {k: v for k, v in records[-1].items() if k != 'train_surrogate'}
  return records + [{**last, 'kind': 'final'}], state
