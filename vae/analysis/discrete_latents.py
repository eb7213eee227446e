"""Comparing discrete-latent estimators on a sigmoid belief net.

A sigmoid belief net (`vae.models.sigmoid_belief_net.SBN`, or any model
with Bernoulli latents) is trained from one initialization by each
discrete-latent estimator of the registry (`ESTIMATORS`), each with its own
number of decoder evaluations K_e per example (`samples_per_estimator`),
on the surrogate of `vae.model.batch_objective`:

  score_moving_average  score function with a moving-average baseline b̄:
                        (f(b) - b̄) ∇ log q(b), f(b) = log p(x|b);
  score_rloo            score function with the leave-one-out baseline;
  vimco                 VIMCO on the K-sample bound IWAE_K (Mnih & Rezende
                        2016);
  straight_through      forward on b, backward through the relaxation;
  gumbel_softmax        the relaxed (Concrete) sample everywhere (biased);
  disarm                DisARM (Dong, Mnih & Tucker 2020), one antithetic
                        pair per 2 evaluations.

Training is `vae.optim` (`make_trainer`, `train_and_evaluate`: the training
ELBO and the held-out ELBO and IWAE_K against steps, wall and CPU time, from
`vae.evaluate.mean_bound`); at fixed parameters each encoder gradient's
variance (`encoder_gradient_moments`, `vae.moments`) and its bias against
the pooled unbiased estimators with the same K
(`vae_gradients.pooled_bias`) are measured by `bernoulli_encoder_records`.
"""

import functools
import time
from typing import Any, Callable, Sequence

import jax
from jax import flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from vae import comparison
from vae import data as data_lib
from vae import evaluate as evaluate_lib
from vae import model as model_lib
from vae import moments
from vae import optim
from vae import types
from vae.analysis import vae_gradients
from vae.estimators import registry
from vae.models import networks

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey
Record = dict[str, Any]

ESTIMATORS = registry.names(latents='discrete')
# Floats of the gradient draws of one `vae.moments` chunk: a bound on memory.
MOMENT_FLOATS = 2**25


def binary_images(config: data_lib.DataConfig, num_test: int,
                  seed: int = 0) -> tuple[Array, Array]:
  """(training images, the first `num_test` test images), 0/1 float32.

  A fixed binarization is kept; grey levels x are binarized once,
  b ~ Bernoulli(x) with key 0 (`data.binarize`).
  """
  paths = config.paths
  ds = data_lib.load_dataset(
      config.dataset, data_dir=paths.tfds_data_dir, seed=seed,
      manual_dir=paths.manual_dir, cache_dir=paths.data_cache_dir,
      download=paths.download, num_train=config.num_train, num_validation=1,
      num_test=num_test)
  binary = lambda x: jnp.asarray(x if ds.binarization == 'fixed' else
                                 data_lib.binarize(0, x))
  return binary(ds.train), binary(ds.test)


def objective_of(estimator: str) -> str:
  """The bound an estimator trains: IWAE_K for VIMCO, else the ELBO."""
  return 'iwae' if 'elbo' not in registry.lookup(estimator).objectives() else (
      'elbo')


def unbiased_for_elbo(estimator: str) -> bool:
  """Whether it is unbiased for ∇ELBO (VIMCO's target is ∇IWAE_K)."""
  return (registry.lookup(estimator).unbiased and
          objective_of(estimator) == 'elbo')


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


def surrogate(model: model_lib.Model, params: Params, x: Array, key: PRNGKey,
              estimator: str, num_evals: int, baseline: float | Array = 0.0,
              temperature: float | Array = 0.5) -> tuple[Array, Array]:
  """(S̄, f̄) = `vae.model.batch_objective` of the estimator's bound.

  The bound is `objective_of(estimator)`; num_evals decoder evaluations
  per example are ⌊num_evals / e⌋ samples (e: the estimator's evaluations
  per sample, 2 for DisARM's pairs); `temperature` goes to the estimators
  with that option. Example b of x [B, d] uses split(key, B)[b].
  """
  entry = registry.lookup(estimator)
  options = {'temperature': temperature} if entry.options else {}
  return model_lib.batch_objective(
      model, params, x, key, objective_of(estimator), estimator,
      max(1, num_evals // entry.evaluations_per_sample), baseline=baseline,
      **options)


def encoder_gradient(model: model_lib.Model, params: Params, x: Array,
                     key: PRNGKey, estimator: str, num_evals: int,
                     baseline: float | Array = 0.0,
                     temperature: float | Array = 0.5) -> Array:
  """ĝ_φ = ∇_φ S̄(params, x, key) (`surrogate`), flattened: [P_encoder]."""
  grads = jax.grad(lambda p: surrogate(model, p, x, key, estimator,
                                       num_evals, baseline,
                                       temperature)[0])(params)
  return flatten_util.ravel_pytree(grads['encoder'])[0]


@functools.partial(jax.jit, static_argnames=('model', 'estimator',
                                             'num_samples', 'num_draws',
                                             'mesh'))
def encoder_gradient_moments(model: model_lib.Model, params: Params,
                             x: Array, key: PRNGKey, baseline: Array,
                             temperature: Array, *, estimator: str,
                             num_samples: int, num_draws: int,
                             mesh: jax.sharding.Mesh | None = None
                             ) -> dict[str, Array]:
  """Mean and variance of D draws of `encoder_gradient` (`vae.moments`).

      mean = (1/D) Σ_d ĝ_d,   variance = Σ_d (ĝ_d - mean)² / (D - 1),

  the d-th draw with the d-th key of split(key, D) and num_samples decoder
  evaluations per example, all D vmapped at once when D·P ≤ MOMENT_FLOATS
  (P: encoder parameters), else in chunks (`moments.default_chunk`); with
  a `mesh`, each chunk's draws split over its devices (D, and chunks, a
  multiple of its size).
  """
  size = networks.num_params(params['encoder'])
  chunk = None if num_draws * size <= MOMENT_FLOATS else (
      moments.default_chunk(num_draws, size,
                            multiple_of=mesh.size if mesh else 1))
  return moments.moments(
      lambda k: encoder_gradient(model, params, x, k, estimator, num_samples,
                                 baseline, temperature), key, num_draws,
      chunk, mesh=mesh)


def initial_baseline(model: model_lib.Model, params: Params,
                     train_x: Array) -> Array:
  """b̄₀ = (1/n) Σ_{i≤n} log p(x_i | E_q[b|x_i]), the first n ≤ 500 rows."""
  x = train_x[:500]
  b = model.encoder(params, x).mean()
  return jnp.mean(model_lib.event_log_prob(model.decoder(params, b), x))


def make_trainer(model: model_lib.Model, train_x: Array, estimator: str,
                 optimizer: optax.GradientTransformation,
                 num_samples: int = 2, batch_size: int = 50,
                 temperature: float = 0.5, ma_decay: float = 0.99):
  """(init_state, run_steps): `vae.optim` steps on the batch surrogate.

  `init_state(params)` -> `optim.TrainState` with the baseline
  `initial_baseline(model, params, train_x)`. `run_steps(state, keys)`
  runs len(keys) steps through `optim.fit` and returns (state, the mean
  surrogate of each step). Step t draws its minibatch (with replacement)
  and its samples from keys[t], maximizes the surrogate L(φ, θ) and then
  updates b̄ ← decay·b̄ + (1 - decay)·f̄ (f̄: the step's mean score-function
  cost, `vae.objectives.score_cost`), so the baseline a step uses is
  independent of its samples and score_moving_average stays unbiased.

  Args:
    model: the model (Bernoulli latents).
    train_x: training data [N, d] (binary).
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
    value, cost = surrogate(model, params, train_x[idx], k_loss, estimator,
                            num_samples, baseline, temperature)
    return -value, {'cost': cost, 'value': value}

  step = optim.make_step(loss, optimizer, baseline_decay=ma_decay)

  def init_state(params):
    return optim.init_state(params, optimizer,
                            initial_baseline(model, params, train_x))

  def run_steps(state, keys):
    state, aux = optim.fit(step, state, None, keys)
    return state, aux['value']

  return init_state, run_steps


def evaluate(model: model_lib.Model, params: Params, train_x: Array,
             test_x: Array, key: PRNGKey, eval_samples: int = 8,
             iwae_samples: int = 100) -> dict[str, float]:
  """The training ELBO and the held-out ELBO and IWAE_K bounds.

      train_elbo = (1/N) Σ_{x ∈ train_x} ELBO_S(x)   (key fold_in(key, 3)),
      test_elbo  = (1/M) Σ_{x ∈ test_x} ELBO_S(x)    (key fold_in(key, 1)),
      test_iwaeK = (1/M) Σ_{x ∈ test_x} IWAE_K(x)    (key fold_in(key, 1)),

  S = eval_samples, K = iwae_samples (`vae.evaluate.mean_bound`).
  """
  held_out = jax.random.fold_in(key, 1)
  bound = functools.partial(evaluate_lib.mean_bound, model, params)
  return {'train_elbo': bound(train_x, jax.random.fold_in(key, 3), 'elbo',
                              eval_samples),
          'test_elbo': bound(test_x, held_out, 'elbo', eval_samples),
          f'test_iwae{iwae_samples}': bound(test_x, held_out, 'iwae',
                                            iwae_samples)}


def train_and_evaluate(model: model_lib.Model, train_x: Array, test_x: Array,
                       params: Params, estimator: str,
                       optimizer: optax.GradientTransformation,
                       key: PRNGKey, *, num_steps: int, eval_every: int,
                       num_samples: int = 2, batch_size: int = 50,
                       temperature: float = 0.5, ma_decay: float = 0.99,
                       eval_samples: int = 8, iwae_samples: int = 100,
                       train_eval_examples: int = 500,
                       on_record: Callable[[Record], None] = (
                           lambda record: None)
                       ) -> tuple[list[Record], optim.TrainState]:
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
  init_state, run_steps = make_trainer(model, train_x, estimator, optimizer,
                                       num_samples, batch_size, temperature,
                                       ma_decay)
  state = init_state(params)
  step_key = jax.random.fold_in(key, 2)
  run = jax.jit(run_steps).lower(state, jax.random.split(key, eval_every)
                                 ).compile()
  bounds = functools.partial(evaluate, model,
                             train_x=train_x[:train_eval_examples],
                             test_x=test_x, key=key,
                             eval_samples=eval_samples,
                             iwae_samples=iwae_samples)
  head: dict[str, Any] = {'estimator': estimator, 'step': 0, 'wall_time_s': 0.0,
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


def train_estimators(model: model_lib.Model, train_x: Array, test_x: Array,
                     params: Params, samples: dict[str, int],
                     optimizer: optax.GradientTransformation, key: PRNGKey,
                     **options) -> tuple[list[Record], dict[str, Any]]:
  """`train_and_evaluate` from `params` for each estimator e in turn.

  Every estimator gets the same key (so the same minibatches) and
  num_samples = samples[e] (K_e); `options` are the other keyword
  arguments of `train_and_evaluate`.

  Returns:
    (the records of all estimators, {estimator: final optim.TrainState}).
  """
  records, states = [], {}
  for name, k in samples.items():
    curve, states[name] = train_and_evaluate(
        model, train_x, test_x, params, name, optimizer, key, num_samples=k,
        **options)
    records += curve
  return records, states


def bernoulli_encoder_records(model: model_lib.Model,
                              points: dict[str, tuple[Params, Array]],
                              x: Array, estimators: Sequence[str],
                              num_samples: int, temperature: float,
                              key: PRNGKey, num_draws: int,
                              mesh: jax.sharding.Mesh | None = None
                              ) -> list[Record]:
  """Encoder-gradient variance and bias of discrete-latent estimators.

  At each point (params, moving-average baseline), D draws of each
  estimator's encoder gradient on the batch x (`encoder_gradient_moments`,
  the same D keys for every estimator): total_variance = Σ_j Var[ĝ_j],
  mean_norm_sq = ‖ḡ‖², and against the pooled reference of the estimators
  unbiased for ∇ELBO (`vae_gradients.pooled_bias`, for the estimators whose
  target is ∇ELBO) bias_sq, its noise level and mse = bias_sq +
  total_variance, the mean squared error of one draw; seconds per estimate
  (one encoder gradient on x alone, `comparison.seconds_per_call`: compiled,
  warm, median of repeats) and efficiency = total_variance × seconds.

  Returns:
    One record per (point, estimator), kind 'variance'.
  """
  unbiased = [n for n in estimators if unbiased_for_elbo(n)]
  comparable = [n for n in estimators if objective_of(n) == 'elbo']
  records = []
  for label, (params, baseline) in points.items():
    stats = {n: encoder_gradient_moments(
        model, params, x, key, baseline, temperature, estimator=n,
        num_samples=num_samples, num_draws=num_draws, mesh=mesh)
             for n in estimators}
    means = {n: np.asarray(s['mean'], np.float64) for n, s in stats.items()}
    tvar = {n: float(np.sum(np.asarray(s['variance'], np.float64)))
            for n, s in stats.items()}
    bias = vae_gradients.pooled_bias(means, tvar, unbiased, comparable,
                                     num_draws)
    seconds = comparison.seconds_per_calls({n: (
        lambda p, xs, k, b0, n=n: encoder_gradient(
            model, p, xs, k, n, num_samples, b0, temperature),
        (params, x, key, baseline)) for n in estimators})
    device = comparison.device_name()
    for n in estimators:
      b, noise = bias[n] or (None, None)
      records.append({
          'seconds': seconds[n], 'efficiency': tvar[n] * seconds[n],
          'device': device,
          'kind': 'variance', 'at': label, 'estimator': n,
          'total_variance': tvar[n], 'mean_norm_sq': float(means[n] @
                                                           means[n]),
          'bias_sq': b, 'bias_sq_noise_level': noise,
          'mse': None if b is None else b + tvar[n],
          'unbiased_for_elbo': unbiased_for_elbo(n)})
  return records


def encoder_variance_records(model: model_lib.Model,
                             points: dict[str, tuple[Params, Array]],
                             x: Array, samples: dict[str, int],
                             temperature: float, key: PRNGKey,
                             num_draws: int,
                             mesh: jax.sharding.Mesh | None = None
                             ) -> list[Record]:
  """Encoder-gradient statistics of each estimator at each point (the draws
  split over `mesh`'s devices if given).

  `bernoulli_encoder_records` once per distinct K (the bias reference
  pools the unbiased estimators with the same K), the rows ordered by
  point, then by estimator as in `samples`, each with
  variance_per_parameter = Σ_j Var[ĝ_j] / P (P encoder parameters: the
  mean per-component variance).
  """
  names = list(samples)
  records = []
  for k in dict.fromkeys(samples.values()):
    records += bernoulli_encoder_records(
        model, points, x, [n for n in names if samples[n] == k], k,
        temperature, key, num_draws, mesh)
  params = next(iter(points.values()))[0]
  size = networks.num_params(params['encoder'])
  return sorted(({**r, 'variance_per_parameter': r['total_variance'] / size}
                 for r in records), key=lambda r: (
                     list(points).index(r['at']),
                     names.index(r['estimator'])))
