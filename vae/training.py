"""Training a VAE/IWAE on binary images: jitted epochs, checkpoints, resume.

One training step maximizes the mean surrogate bound of
`image_vae.batch_surrogate` (its gradient is the chosen estimator):

    θ, φ ← opt(θ, φ, -∇ (1/B) Σ_b L_k(x_b; β_t)),   β_t = β·min(1, t / T_warm),

where L_k is the ELBO (analytic or Monte Carlo KL) or IWAE_k bound. A whole
epoch is one jitted call: `lax.scan` over `data.epoch_batches`, so Python
runs once per epoch. Everything random is derived from the seed:

* parameters from fold_in(PRNGKey(seed), 0);
* the samples of step t (and its dynamic binarization) from
  fold_in(fold_in(PRNGKey(seed), 1), t);
* the order of epoch e from (seed, e) (`data.epoch_permutation`).

Hence a run that is killed and resumed from a checkpoint (saved at epoch
ends, `vae.checkpointing`) reaches exactly the parameters of an
uninterrupted run. The moving-average baseline of the `score_moving_average`
estimator is part of the checkpointed `TrainState`.
"""

import csv
import dataclasses
import functools
import json
import os
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vae import checkpointing
from vae.estimators import control_variates
from vae import data
from vae import kl as kl_lib
from vae.models import networks
from vae import objectives
from vae.estimators import registry
from vae import types
from vae.models import image_vae

Array = types.Array
Params = types.Params

OPTIMIZERS = ('adam', 'sgd', 'momentum', 'rmsprop', 'adagrad')
LR_SCHEDULES = ('constant', 'cosine', 'exponential', 'burda')
CHECKPOINT_SUBDIR = 'checkpoints'
CONFIG_FILE = 'train_config.json'
METRICS_CSV = 'metrics.csv'
METRICS_COLUMNS = ('step', 'epoch', 'train_bound', 'test_bound', 'beta',
                   'learning_rate', 'examples_per_s', 'epoch_wall_s',
                   'epoch_cpu_s')
# Burda et al. (2015): lr 1e-3·10^(-i/7) for 3^i epochs, i = 0..7.
BURDA_STAGES = 8


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything that defines a training run (and its checkpoints).

  Attributes:
    dataset: one of `data.DATASETS`.
    num_train: keep the first `num_train` training images (None: all).
    hidden_sizes: widths of the encoder's and the decoder's hidden layers.
    latent_dim: dimension of z.
    activation: activation name (see `networks.ACTIVATIONS`).
    objective: one of `objectives.OBJECTIVES`.
    estimator: one of `objectives.ESTIMATORS_FOR[objective]`.
    num_samples: k, samples per example (IWAE_k for 'iwae').
    beta: final weight on the KL term.
    warmup_steps: β grows linearly from 0 to `beta` over this many steps.
    baseline_decay: decay of the moving-average baseline (score_moving_average).
    optimizer: one of `OPTIMIZERS`.
    learning_rate: initial learning rate.
    lr_schedule: one of `LR_SCHEDULES`.
    lr_decay_rate: 'cosine' and 'exponential' end at lr·lr_decay_rate.
    lr_decay_steps: 'exponential' multiplies by lr_decay_rate every this
      many steps (0: once over the whole run).
    adam_eps: ε of adam (Burda et al. used 1e-4).
    batch_size: examples per step.
    epochs: passes over the training set.
    seed: the seed of everything random.
  """
  dataset: str = 'synthetic'
  num_train: int | None = None
  hidden_sizes: tuple[int, ...] = (200, 200)
  latent_dim: int = 50
  activation: str = 'tanh'
  objective: str = 'elbo'
  estimator: str = 'pathwise'
  num_samples: int = 1
  beta: float = 1.0
  warmup_steps: int = 0
  baseline_decay: float = 0.9
  optimizer: str = 'adam'
  learning_rate: float = 1e-3
  lr_schedule: str = 'constant'
  lr_decay_rate: float = 0.1
  lr_decay_steps: int = 0
  adam_eps: float = 1e-4
  batch_size: int = 100
  epochs: int = 30
  seed: int = 0

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, values: dict[str, Any]) -> 'TrainConfig':
    """The config of `to_json` output (unknown keys are an error)."""
    values = dict(values)
    if 'hidden_sizes' in values:
      values['hidden_sizes'] = tuple(int(h) for h in values['hidden_sizes'])
    return cls(**values)


def validate(config: TrainConfig) -> None:
  """Raises ValueError (one line, naming the valid choices) for a bad config."""
  def choose(name, value, choices):
    if value not in choices:
      raise ValueError(f'unknown {name} {value!r}; choose from '
                       f'{", ".join(choices)}.')
  choose('dataset', config.dataset, data.DATASETS)
  choose('objective', config.objective, objectives.OBJECTIVES)
  registry.check(config.estimator, config.objective, config.num_samples,
                 config.beta)
  choose('optimizer', config.optimizer, OPTIMIZERS)
  choose('lr_schedule', config.lr_schedule, LR_SCHEDULES)
  choose('activation', config.activation, tuple(networks.ACTIVATIONS))
  if config.estimator in ('score_rloo', 'vimco') and config.num_samples < 2:
    raise ValueError(f'estimator {config.estimator!r} needs num_samples >= 2.')
  for name in ('num_samples', 'latent_dim', 'batch_size', 'epochs'):
    if getattr(config, name) < 1:
      raise ValueError(f'{name} must be >= 1, got {getattr(config, name)}.')
  if not config.hidden_sizes or min(config.hidden_sizes) < 1:
    raise ValueError(f'hidden_sizes must be positive, got '
                     f'{config.hidden_sizes}.')
  if not (config.learning_rate > 0 and config.beta >= 0 and
          config.warmup_steps >= 0 and 0 < config.lr_decay_rate and
          config.lr_decay_steps >= 0 and 0 <= config.baseline_decay < 1):
    raise ValueError('need learning_rate > 0, beta >= 0, warmup_steps >= 0, '
                     'lr_decay_rate > 0, lr_decay_steps >= 0 and '
                     'baseline_decay in [0, 1).')


def make_model(config: TrainConfig,
               pixel_mean: np.ndarray | None = None) -> image_vae.VAE:
  """The MLP VAE of `config`; output bias logit(pixel_mean) when given."""
  bias_init = None if pixel_mean is None else networks.mean_logit_init(
      pixel_mean)
  return image_vae.burda_vae(
      latent_dim=config.latent_dim, hidden_sizes=config.hidden_sizes,
      activation=config.activation, data_dim=data.IMAGE_SIZE,
      output_bias_init=bias_init)


def learning_rate_schedule(config: TrainConfig,
                           steps_per_epoch: int) -> optax.Schedule:
  """η(t) for step t.

  constant: η; cosine: η·(a + (1-a)(1 + cos(π t/T))/2) with a =
  lr_decay_rate, T the total steps; exponential: η·r^(t/S), r =
  lr_decay_rate, S = lr_decay_steps (or T); burda: η·10^(-i/7) during the
  i-th stage of 3^i epochs (i = 0..7; Burda et al., 2015).

  Args:
    config: the run.
    steps_per_epoch: steps in one epoch.

  Returns:
    An optax schedule.
  """
  lr = config.learning_rate
  total = max(1, config.epochs * steps_per_epoch)
  if config.lr_schedule == 'constant':
    return optax.constant_schedule(lr)
  if config.lr_schedule == 'cosine':
    return optax.cosine_decay_schedule(lr, total, alpha=config.lr_decay_rate)
  if config.lr_schedule == 'exponential':
    return optax.exponential_decay(
        lr, config.lr_decay_steps or total, config.lr_decay_rate)
  boundaries = np.cumsum([3**i for i in range(BURDA_STAGES - 1)])
  return optax.piecewise_constant_schedule(
      lr, {int(b * steps_per_epoch): 10**(-1 / 7) for b in boundaries})


def make_optimizer(config: TrainConfig,
                   steps_per_epoch: int) -> optax.GradientTransformation:
  """The optax optimizer of `config` with its learning-rate schedule."""
  lr = learning_rate_schedule(config, steps_per_epoch)
  return {
      'adam': lambda: optax.adam(lr, b1=0.9, b2=0.999, eps=config.adam_eps),
      'sgd': lambda: optax.sgd(lr),
      'momentum': lambda: optax.sgd(lr, momentum=0.9),
      'rmsprop': lambda: optax.rmsprop(lr),
      'adagrad': lambda: optax.adagrad(lr),
  }[config.optimizer]()


class TrainState(NamedTuple):
  """What a step changes; checkpointed as `_asdict()`.

  Attributes:
    step: steps done (int32 scalar).
    params: {'encoder', 'decoder'} variables.
    opt_state: the optimizer's state.
    baseline: moving-average baseline b of 'score_moving_average' (else unused).
  """
  step: Array
  params: Params
  opt_state: Any
  baseline: Array


def init_state(model: image_vae.VAE, optimizer: optax.GradientTransformation,
               seed: int, output_bias: Array | None = None) -> TrainState:
  """Step 0: params from fold_in(PRNGKey(seed), 0), baseline 0.

  Args:
    model: the VAE.
    optimizer: the optimizer.
    seed: the run's seed.
    output_bias: if given, the decoder's output bias (e.g. logit of the mean
      training image, `output_bias_for`); the other parameters do not depend
      on it.

  Returns:
    The state at step 0.
  """
  params = model.init(jax.random.fold_in(jax.random.PRNGKey(seed), 0))
  if output_bias is not None:
    logits = {**params['decoder']['params']['logits'], 'bias': output_bias}
    decoder = {**params['decoder'], 'params': {
        **params['decoder']['params'], 'logits': logits}}
    params = {**params, 'decoder': decoder}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params),
                    baseline=jnp.zeros((), jnp.float32))


def output_bias_for(pixel_mean: np.ndarray) -> np.ndarray:
  """logit(pixel_mean), clipped as `networks.mean_logit_init`; float32."""
  init = networks.mean_logit_init(pixel_mean)
  return np.asarray(init(None, np.shape(pixel_mean)), np.float32)


@functools.lru_cache(maxsize=8)
def _state_initializer(config: TrainConfig, steps_per_epoch: int):
  """A jitted output_bias -> `init_state(...)` for `config` (cached)."""
  model = make_model(config)
  optimizer = make_optimizer(config, steps_per_epoch)
  return jax.jit(lambda bias: init_state(model, optimizer, config.seed, bias))


def step_key(seed: int, step: Array) -> Array:
  """The PRNG key of step t: fold_in(fold_in(PRNGKey(seed), 1), t)."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), 1),
                            step)


def beta_at(config: TrainConfig, step: Array) -> Array:
  """β_t = β·min(1, t / warmup_steps) (β when warmup_steps = 0)."""
  if config.warmup_steps == 0:
    return jnp.asarray(config.beta, jnp.float32)
  frac = jnp.minimum(1.0, step.astype(jnp.float32) / config.warmup_steps)
  return config.beta * frac


def make_train_step(model: image_vae.VAE,
                    optimizer: optax.GradientTransformation,
                    config: TrainConfig, dynamic_binarization: bool
                    ) -> Callable[[TrainState, Array], tuple[TrainState, Array]]:
  """(state, batch) -> (state after one step, the batch's mean bound).

  The step maximizes the mean surrogate bound; for 'score_moving_average' the
  baseline b used is the one from before the step, then
  b ← decay·b + (1 - decay)·mean f, f = log p(x|z) ('elbo') or
  log p(x|z) + β(log p(z) - log q(z|x)) ('elbo_mc_kl').
  """
  use_baseline = config.estimator == 'score_moving_average'

  def loss(params, baseline, batch, key, beta):
    bound = image_vae.batch_surrogate(
        model, params, batch, key, config.objective, config.estimator,
        config.num_samples, beta, baseline if use_baseline else None)
    return -bound, bound

  def train_step(state: TrainState, batch: Array):
    bin_key, loss_key = jax.random.split(step_key(config.seed, state.step))
    if dynamic_binarization:
      batch = data.binarize(bin_key, batch)
    beta = beta_at(config, state.step)
    grads, bound = jax.grad(loss, has_aux=True)(
        state.params, state.baseline, batch, loss_key, beta)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    baseline = state.baseline
    if use_baseline:
      mean_f = bound
      if config.objective == 'elbo':  # The bound subtracted β·KL from f.
        q = model.posterior(state.params, batch)
        kl = jnp.sum(kl_lib.kl_divergence(q, model.prior()), -1)
        mean_f = bound + beta * jnp.mean(kl)
      baseline = control_variates.moving_average_update(
          baseline, mean_f, config.baseline_decay)
    return TrainState(state.step + 1, params, opt_state, baseline), bound

  return train_step


def make_train_epoch(model: image_vae.VAE,
                     optimizer: optax.GradientTransformation,
                     config: TrainConfig, dynamic_binarization: bool):
  """A jitted (state, images, epoch) -> (state, {'bound', 'finite'}).

  Runs every step of epoch `epoch` in one `lax.scan` over
  `data.epoch_batches(images, batch_size, seed, epoch)`. 'bound' is the
  epoch's mean training bound; 'finite' is False if any step's bound or the
  final parameters are NaN/Inf.
  """
  train_step = make_train_step(model, optimizer, config, dynamic_binarization)

  @jax.jit
  def train_epoch(state: TrainState, images: Array, epoch: Array):
    batches = data.epoch_batches(images, config.batch_size, config.seed, epoch)
    state, bounds = jax.lax.scan(train_step, state, batches)
    finite = jnp.all(jnp.isfinite(bounds))
    for leaf in jax.tree.leaves(state.params):
      finite &= jnp.all(jnp.isfinite(leaf))
    return state, {'bound': jnp.mean(bounds), 'finite': finite}

  return train_epoch


@functools.lru_cache(maxsize=8)
def _compiled_train_epoch(config: TrainConfig, images_shape: tuple[int, ...],
                          dynamic_binarization: bool):
  """`make_train_epoch` compiled for float32 images of `images_shape`.

  Cached, so that training again (e.g. resuming) in the same process does
  not compile again.
  """
  model = make_model(config)
  optimizer = make_optimizer(config, images_shape[0] // config.batch_size)
  state = jax.eval_shape(lambda: init_state(model, optimizer, config.seed))
  return make_train_epoch(model, optimizer, config, dynamic_binarization).lower(
      state, jax.ShapeDtypeStruct(images_shape, jnp.float32),
      jax.ShapeDtypeStruct((), jnp.int32)).compile()


def _check_resumable(saved: dict[str, Any], config: TrainConfig,
                     log: Callable[[str], None]) -> None:
  current = config.to_json()
  differ = sorted(k for k in set(saved) | set(current)
                  if k != 'epochs' and json.dumps(saved.get(k)) !=
                  json.dumps(current.get(k)))
  if differ:
    raise ValueError(
        'cannot resume: the checkpoints were written with a different '
        'config (' + ', '.join(f'{k}={saved.get(k)!r} now {current.get(k)!r}'
                               for k in differ) +
        '); use another --output_dir or --noresume.')
  if saved.get('epochs') != current['epochs']:
    log(f'warning: resuming a run of {saved.get("epochs")} epochs with '
        f'epochs={current["epochs"]}; schedules that depend on the total '
        'number of steps change.')


class _MetricsLog:
  """metrics.csv (rewritten up to the resume step) and TensorBoard scalars."""

  def __init__(self, output_dir: str, start_step: int, tensorboard: bool,
               log: Callable[[str], None]):
    self.path = os.path.join(output_dir, METRICS_CSV)
    rows = []
    if start_step > 0 and os.path.exists(self.path):
      with open(self.path, newline='') as f:
        rows = [r for r in csv.DictReader(f) if int(r['step']) <= start_step]
    with open(self.path, 'w', newline='') as f:
      writer = csv.DictWriter(f, METRICS_COLUMNS)
      writer.writeheader()
      writer.writerows(rows)
    self.writer = None
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      except ImportError:
        log('warning: tensorboardX is not installed; no TensorBoard events.')
      else:
        self.writer = SummaryWriter(os.path.join(output_dir, 'tensorboard'),
                                    purge_step=start_step or None)

  def write(self, row: dict[str, Any]) -> None:
    with open(self.path, 'a', newline='') as f:
      csv.DictWriter(f, METRICS_COLUMNS).writerow(
          {k: ('' if row.get(k) is None else row[k]) for k in METRICS_COLUMNS})
    if self.writer is not None:
      for k in METRICS_COLUMNS[2:]:
        if row.get(k) is not None:
          self.writer.add_scalar(k, row[k], row['step'])
      self.writer.flush()

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()


@dataclasses.dataclass
class TrainResult:
  """What `train` returns.

  Attributes:
    model: the VAE.
    state: the final state.
    history: the metrics rows written during this call.
    resumed_from: the step the run resumed from (None: fresh start).
    wall_s: wall seconds of the epochs run in this call (no compilation).
    cpu_s: process CPU seconds of those epochs.
    compile_s: seconds spent compiling the epoch function.
  """
  model: image_vae.VAE
  state: TrainState
  history: list[dict[str, Any]]
  resumed_from: int | None
  wall_s: float
  cpu_s: float
  compile_s: float


def checkpoint_dir(output_dir: str) -> str:
  return os.path.join(output_dir, CHECKPOINT_SUBDIR)


def load_config(output_dir: str) -> TrainConfig:
  """The `TrainConfig` saved by `train` in `<output_dir>/checkpoints`."""
  path = os.path.join(checkpoint_dir(output_dir), CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: is {output_dir} the '
                            'output dir of a train_vae run?')
  with open(path, encoding='utf-8') as f:
    return TrainConfig.from_json(json.load(f))


def load_params(output_dir: str, step: int | None = None
                ) -> tuple[TrainConfig, image_vae.VAE, Params, int]:
  """(config, model, params, step) of the latest (or given) checkpoint."""
  config = load_config(output_dir)
  model = make_model(config)
  target = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  target = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), target)
  directory = checkpoint_dir(output_dir)
  if step is None:
    step = checkpointing.latest_step(directory)
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {directory}.')
  params = checkpointing.restore(directory, {'params': target}, step)['params']
  return config, model, jax.tree.map(jnp.asarray, params), step


def last_metrics(output_dir: str) -> dict[str, float | None]:
  """The final train_bound and test_bound of `<output_dir>/metrics.csv`."""
  path = os.path.join(output_dir, METRICS_CSV)
  rows = []
  if os.path.exists(path):
    with open(path, newline='') as f:
      rows = list(csv.DictReader(f))
  last = rows[-1] if rows else {}
  tested = [r for r in rows if r.get('test_bound')]
  return {'final_train_bound': float(last['train_bound']) if last else None,
          'final_test_bound': (float(tested[-1]['test_bound']) if tested
                               else None)}


def result_record(config: TrainConfig, step: int,
                  summary: dict[str, Any]) -> dict[str, Any]:
  """One flat results.json record: the run's settings, then `summary`."""
  return dict(dataset=config.dataset, objective=config.objective,
              estimator=config.estimator, k=config.num_samples,
              beta=config.beta, epochs=config.epochs, steps=step,
              batch_size=config.batch_size, optimizer=config.optimizer,
              learning_rate=config.learning_rate,
              lr_schedule=config.lr_schedule,
              hidden_sizes='-'.join(map(str, config.hidden_sizes)),
              latent_dim=config.latent_dim, activation=config.activation,
              seed=config.seed, **summary)


def train(config: TrainConfig, dataset: data.Dataset, output_dir: str, *,
          checkpoint_every: int = 1, resume: bool = True,
          test_every: int = 1, tensorboard: bool = True,
          stop_after_epochs: int | None = None,
          use_orbax: bool | None = None,
          log: Callable[[str], None] = print) -> TrainResult:
  """Trains (or resumes training) and checkpoints into `output_dir`.

  Writes `<output_dir>/checkpoints/step_<t>` every `checkpoint_every`
  epochs and at the end, `metrics.csv` and TensorBoard events. Per epoch it
  logs the mean training bound, the test bound (the objective with k
  samples and β = 1; every `test_every` epochs) and examples/s.

  Args:
    config: the run (validated here).
    dataset: the data; its `binarization` picks dynamic binarization.
    output_dir: folder for checkpoints and metrics.
    checkpoint_every: epochs between checkpoints.
    resume: continue from the latest checkpoint in `output_dir` if any
      (False with existing checkpoints is an error).
    test_every: epochs between test-bound evaluations (0: never).
    tensorboard: write TensorBoard events (if tensorboardX is installed).
    stop_after_epochs: stop (with a checkpoint) once this many epochs are
      done in total, as if killed there (for tests of resuming).
    use_orbax: see `checkpointing.save`.
    log: where progress lines go.

  Returns:
    The `TrainResult`.

  Raises:
    FloatingPointError: the bound or the parameters became NaN/Inf; the last
      good state is checkpointed first.
  """
  from vae import evaluation  # pylint: disable=g-import-not-at-top
  validate(config)
  os.makedirs(output_dir, exist_ok=True)
  train_images = jnp.asarray(dataset.train, jnp.float32)
  n = train_images.shape[0]
  steps_per_epoch = n // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'batch_size {config.batch_size} > {n} training images.')
  model = make_model(config)
  schedule = learning_rate_schedule(config, steps_per_epoch)
  state = _state_initializer(config, steps_per_epoch)(
      output_bias_for(np.asarray(dataset.train).mean(0)))
  directory = checkpoint_dir(output_dir)
  config_path = os.path.join(directory, CONFIG_FILE)
  latest = checkpointing.latest_step(directory)
  resumed_from = None
  if latest is not None and not resume:
    raise ValueError(f'{directory} has checkpoints; resume or use another '
                     'output dir.')
  if latest is not None:
    with open(config_path, encoding='utf-8') as f:
      _check_resumable(json.load(f), config, log)
    state = TrainState(**checkpointing.restore(directory, state._asdict()))
    state = jax.tree.map(jnp.asarray, state)
    resumed_from = int(state.step)
    if resumed_from % steps_per_epoch:
      raise ValueError(f'checkpoint step {resumed_from} is not at the end of '
                       f'an epoch of {steps_per_epoch} steps.')
    log(f'resuming from {directory} at step {resumed_from} (epoch '
        f'{resumed_from // steps_per_epoch})')
  else:
    os.makedirs(directory, exist_ok=True)
    tmp = f'{config_path}.tmp{os.getpid()}'
    with open(tmp, 'w', encoding='utf-8') as f:
      json.dump(config.to_json(), f, indent=2)
    os.replace(tmp, config_path)
  start_epoch = int(state.step) // steps_per_epoch
  end_epoch = config.epochs if stop_after_epochs is None else min(
      config.epochs, stop_after_epochs)

  t0 = time.time()
  train_epoch = _compiled_train_epoch(config, tuple(train_images.shape),
                                      dataset.binarization == 'dynamic')
  compile_s = time.time() - t0
  test_images = evaluation.test_images(dataset)
  test_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 2)
  metrics = _MetricsLog(output_dir, int(state.step), tensorboard, log)
  history = []
  wall_total = cpu_total = 0.0
  saved_step = int(state.step) if resumed_from is not None else None
  try:
    for epoch in range(start_epoch, end_epoch):
      wall, cpu = time.time(), time.process_time()
      new_state, out = train_epoch(state, train_images, jnp.int32(epoch))
      bound, finite = float(out['bound']), bool(out['finite'])
      wall, cpu = time.time() - wall, time.process_time() - cpu
      if not finite:
        if saved_step != int(state.step):
          checkpointing.save(directory, int(state.step), state._asdict(),
                             use_orbax=use_orbax)
        raise FloatingPointError(
            f'the training bound or the parameters became NaN/Inf in epoch '
            f'{epoch + 1} (steps {int(state.step)}..{int(new_state.step)}); '
            f'the last good state (step {int(state.step)}) is in {directory}.')
      state = new_state
      wall_total += wall
      cpu_total += cpu
      step = int(state.step)
      test_bound = None
      if test_every and ((epoch + 1) % test_every == 0 or
                         epoch + 1 == end_epoch):
        test_bound = evaluation.mean_bound(
            model, state.params, test_images, test_key, config.objective,
            config.num_samples)
      row = dict(step=step, epoch=epoch + 1, train_bound=bound,
                 test_bound=test_bound, beta=float(beta_at(config, state.step)),
                 learning_rate=float(schedule(step - 1)),
                 examples_per_s=steps_per_epoch * config.batch_size / wall,
                 epoch_wall_s=wall, epoch_cpu_s=cpu)
      metrics.write(row)
      history.append(row)
      log(f'epoch {epoch + 1}/{config.epochs}  step {step}  train_bound '
          f'{bound:.2f}' + ('' if test_bound is None else
                            f'  test_bound {test_bound:.2f}') +
          f'  beta {row["beta"]:.3g}  lr {row["learning_rate"]:.3g}  '
          f'{row["examples_per_s"]:,.0f} ex/s  ({wall:.1f} s, cpu {cpu:.1f} s)')
      if (epoch + 1) % checkpoint_every == 0 or epoch + 1 == end_epoch:
        checkpointing.save(directory, step, state._asdict(),
                           use_orbax=use_orbax)
        saved_step = step
  finally:
    metrics.close()
  if history:
    log(f'trained {len(history)} epochs in {wall_total:.1f} s wall, '
        f'{cpu_total:.1f} s CPU (+{compile_s:.1f} s compiling): '
        f'{len(history) * steps_per_epoch * config.batch_size / max(wall_total, 1e-9):,.0f} ex/s')
  return TrainResult(model=model, state=state, history=history,
                     resumed_from=resumed_from, wall_s=wall_total,
                     cpu_s=cpu_total, compile_s=compile_s)
