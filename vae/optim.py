"""The model-free optimizer loop: an optax step on a loss, under `lax.scan`.

Every fit in the library (an epoch of a model, per-image q's, a toy
encoder) takes the same step,

    (L, aux), g = value_and_grad(loss)(θ, batch, key, b)
    θ ← θ + optax_update(g),    b ← decay·b + (1 - decay)·aux['cost']

where `loss` is a negated surrogate objective (its value the bound, its
gradient the chosen estimator) and b is the moving-average baseline of the
`score_moving_average` estimator: state kept beside the parameters, updated
after the step so that the baseline a step uses never depends on that
step's samples (the estimator stays unbiased). `fit` scans the step over a
sequence of (batch, key) inputs; callers choose how batches and keys are
derived. `OptimizerConfig` and `make_optimizer` build the optax optimizer
and its learning-rate schedule.
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vae import config as cfg
from vae import types
from vae.estimators import control_variates

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey

OPTIMIZERS = ('adam', 'sgd', 'momentum', 'rmsprop', 'adagrad')
LR_SCHEDULES = ('constant', 'cosine', 'exponential', 'burda')
# Burda et al. (2015): lr 1e-3·10^(-i/7) for 3^i epochs, i = 0..7.
BURDA_STAGES = 8


@cfg.settings
class OptimizerConfig:
  """The optimizer and its learning-rate schedule."""
  optimizer: str = cfg.setting('adam', 'Optimizer.', choices=OPTIMIZERS)
  learning_rate: float = cfg.setting(1e-3, 'Initial learning rate.', gt=0.0,
                                     max=10.0)
  lr_schedule: str = cfg.setting(
      'constant', 'Learning-rate schedule (burda: 1e-3·10^(-i/7) for 3^i '
      'epochs).', choices=LR_SCHEDULES)
  lr_decay_rate: float = cfg.setting(
      0.1, 'cosine/exponential: the final lr is lr·lr_decay_rate.', gt=0.0,
      max=1.0)
  lr_decay_steps: int = cfg.setting(
      0, 'exponential: multiply by lr_decay_rate every this many steps (0: '
      'once over the run).', min=0)
  adam_eps: float = cfg.setting(1e-8, 'Epsilon of adam.', gt=0.0, max=1.0)


@cfg.settings
class FitConfig:
  """A variational fit by stochastic optimization (of q per data point or of
  an encoder): its length and its Monte Carlo samples per step."""
  fit_steps: int = cfg.setting(1000, 'Optimizer steps of a variational fit.',
                               min=1, max=10**6)
  fit_samples: int = cfg.setting(
      10, 'z samples per data point and step of a fit.', min=1, max=10**4)


def learning_rate_schedule(config: OptimizerConfig, total_steps: int,
                           steps_per_epoch: int = 1) -> optax.Schedule:
  """η(t) for step t.

  constant: η; cosine: η·(a + (1-a)(1 + cos(π t/T))/2), a = lr_decay_rate,
  T = total_steps; exponential: η·r^(t/S), r = lr_decay_rate, S =
  lr_decay_steps (or T); burda: η·10^(-i/7) during the i-th stage of 3^i
  epochs (i = 0..7; Burda et al., 2015).

  Args:
    config: the optimizer settings.
    total_steps: steps of the whole run.
    steps_per_epoch: steps per pass over the data (for 'burda').

  Returns:
    An optax schedule.
  """
  lr, total = config.learning_rate, max(1, total_steps)
  if config.lr_schedule == 'constant':
    return optax.constant_schedule(lr)
  if config.lr_schedule == 'cosine':
    return optax.cosine_decay_schedule(lr, total, alpha=config.lr_decay_rate)
  if config.lr_schedule == 'exponential':
    return optax.exponential_decay(lr, config.lr_decay_steps or total,
                                   config.lr_decay_rate)
  boundaries = np.cumsum([3**i for i in range(BURDA_STAGES - 1)])
  return optax.piecewise_constant_schedule(
      lr, {int(b * steps_per_epoch): 10**(-1 / 7) for b in boundaries})


def make_optimizer(config: OptimizerConfig, total_steps: int,
                   steps_per_epoch: int = 1) -> optax.GradientTransformation:
  """The optax optimizer of `config` with its learning-rate schedule."""
  lr = learning_rate_schedule(config, total_steps, steps_per_epoch)
  return {
      'adam': lambda: optax.adam(lr, eps=config.adam_eps),
      'sgd': lambda: optax.sgd(lr),
      'momentum': lambda: optax.sgd(lr, momentum=0.9),
      'rmsprop': lambda: optax.rmsprop(lr),
      'adagrad': lambda: optax.adagrad(lr),
  }[config.optimizer]()


class TrainState(NamedTuple):
  """What a step changes.

  Attributes:
    step: steps done (int32 scalar).
    params: the parameters.
    opt_state: the optimizer's state.
    baseline: the moving-average baseline b (score_moving_average).
  """
  step: Array
  params: Params
  opt_state: Any
  baseline: Array


def init_state(params: Params, optimizer: optax.GradientTransformation,
               baseline: float | Array = 0.0) -> TrainState:
  """Step 0."""
  return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params),
                    jnp.asarray(baseline, jnp.result_type(float)))


Loss = Callable[[Params, Any, PRNGKey, Array], tuple[Array, dict[str, Array]]]


def make_step(loss: Loss, optimizer: optax.GradientTransformation,
              baseline_decay: float | None = None
              ) -> Callable[[TrainState, Any, PRNGKey],
                            tuple[TrainState, dict[str, Array]]]:
  """(state, batch, key) -> (state after one step, aux).

  Args:
    loss: (params, batch, key, baseline) -> (value to minimize, aux dict);
      with `baseline_decay`, aux['cost'] is the step's mean score-function
      cost f̄ (`vae.objectives.score_cost`).
    optimizer: the optax optimizer.
    baseline_decay: decay of the moving-average baseline, or None to keep
      it fixed.

  Returns:
    The step function (pure; jit or scan it).
  """
  def step(state: TrainState, batch: Any, key: PRNGKey):
    (_, aux), grads = jax.value_and_grad(loss, has_aux=True)(
        state.params, batch, key, state.baseline)
    updates, opt_state = optimizer.update(grads, state.opt_state,
                                          state.params)
    params = optax.apply_updates(state.params, updates)
    baseline = state.baseline
    if baseline_decay is not None:
      baseline = control_variates.moving_average_update(
          baseline, aux['cost'], baseline_decay)
    return TrainState(state.step + 1, params, opt_state, baseline), aux

  return step


def fit(step: Callable, state: TrainState, batches: Any, keys: Array
        ) -> tuple[TrainState, Any]:
  """Runs `step` over (batches[t], keys[t]) under `lax.scan`.

  Args:
    step: from `make_step`.
    state: the starting state.
    batches: a pytree with a leading axis of length T (None: no batches).
    keys: [T] PRNG keys.

  Returns:
    (final state, aux of every step stacked along a leading axis T).
  """
  return jax.lax.scan(lambda s, x: step(s, *x), state, (batches, keys))
