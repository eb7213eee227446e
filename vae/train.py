"""The epoch trainer of any model (`vae.model.Model`), on `vae.optim`'s step.

A whole epoch is one jitted call: `optim.fit` over `data.epoch_batches`,
maximizing the mean surrogate bound `model.batch_surrogate` of the chosen
(objective, estimator) with β_t = β·min(1, t / T_warm) (and the
moving-average baseline of estimators with state). Everything random is
derived from the seed:

* parameters from fold_in(PRNGKey(seed), 0);
* the samples of step t (and its dynamic binarization) from
  fold_in(fold_in(PRNGKey(seed), 1), t);
* the order of epoch e from (seed, e) (`data.epoch_permutation`);
* the per-epoch test bound from fold_in(PRNGKey(seed), 2).

With `devices` ≠ 1 (`TrainConfig.devices`, declared once in
`vae.moments.MeshConfig`) the epoch runs data-parallel on a 1-D
`jax.sharding` mesh (`moments.data_mesh`): each step's batch is split over
the devices, the parameters, the optimizer's state and the training images
are replicated, and XLA's SPMD partitioner sums the gradients across
devices (an all-reduce). The random numbers and the steps are those of one
device, so the results agree up to the order of float reductions.

A run that is killed and rerun resumes from its newest intact checkpoint
(`vae.checkpoint`, saved at epoch ends) to exactly the parameters of an
uninterrupted run. A NaN or a diverged bound (`divergence`) stops training
with the last good state checkpointed; so does KeyboardInterrupt (SIGINT, or
SIGTERM through launch.py), which is re-raised. `train` writes checkpoints
only: per-epoch metrics go to the caller's `on_epoch`.
"""

import dataclasses
import functools
import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vae import checkpoint
from vae import config as cfg
from vae import data
from vae import distributions as dists
from vae import evaluate
from vae import model as model_lib
from vae import moments
from vae import optim
from vae import types
from vae.estimators import registry

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey

MAX_BATCH = 100_000
# The estimators of an image VAE's bounds (Gaussian q).
ESTIMATORS = tuple(n for n in registry.names(latents='continuous')
                   if registry.lookup(n).objectives() and
                   'normal' in registry.lookup(n).families)
# A bound below -DIVERGENCE_FACTOR·D·log 2·max(1, β) nats per example (D
# binary pixels; D·log 2 is what a uniform model pays), or one that falls by
# more than a factor JUMP_FACTOR from one epoch to the next, has diverged.
DIVERGENCE_FACTOR = 10.0
JUMP_FACTOR = 100.0


@cfg.settings
class TrainConfig:
  """What the epoch trainer optimizes, and for how long."""
  objective: str = cfg.setting('elbo', 'Training bound (elbo: analytic KL).',
                               choices=registry.OBJECTIVES)
  estimator: str = cfg.setting(
      'pathwise', 'Gradient estimator (see vae.estimators.registry).',
      choices=ESTIMATORS)
  num_samples: int = cfg.setting(
      1, 'k: samples per example (IWAE_k for iwae).', min=1, max=10_000)
  beta: float = cfg.setting(1.0, 'Weight of the KL term.', min=0.0,
                            max=100.0)
  warmup_steps: int = cfg.setting(
      0, 'KL warm-up: beta grows linearly from 0 over this many steps.',
      min=0, max=10**9)
  free_bits: float = cfg.setting(
      0.0, 'Free bits: nats per latent dimension below which the batch-mean '
      'KL is not penalized, sum_j max(free_bits, KL_j) (Kingma et al. 2016; '
      'objective elbo, estimator pathwise; the training bound is then this '
      'surrogate).', min=0.0, max=100.0)
  baseline_decay: float = cfg.setting(
      0.9, 'Decay of the moving-average baseline of score_moving_average.',
      min=0.0, lt=1.0)
  batch_size: int = cfg.setting(100, 'Examples per step.', min=1,
                                max=MAX_BATCH)
  epochs: int = cfg.setting(30, 'Passes over the training set.', min=1,
                            max=100_000)
  checkpoint_every: int = cfg.setting(
      1, 'Epochs between checkpoints (and one at the end).', min=1,
      max=100_000)
  test_every: int = cfg.setting(
      1, 'Epochs between test-bound evaluations (0: never).', min=0,
      max=100_000)
  devices: int = cfg.like(moments.MeshConfig, 'devices')

  def check(self):
    """Refuses estimator/objective/sample-count combinations (registry),
    and a batch that does not split evenly over `devices`."""
    registry.check(self.estimator, self.objective, self.num_samples,
                   self.beta, 'continuous', 'normal')
    if self.devices > 1 and self.batch_size % self.devices:
      raise ValueError(f'batch_size: {self.batch_size} is not divisible by '
                       f'devices={self.devices}.')
    if self.free_bits and (self.objective, self.estimator) != ('elbo',
                                                               'pathwise'):
      raise ValueError('free_bits: needs objective elbo and estimator '
                       f'pathwise, not {self.objective}/{self.estimator}.')


def check_devices(config: TrainConfig) -> int:
  """The number of devices `config` trains on (`moments.device_count`);
  refuses (ValueError, one line) more than there are, or a batch size they
  do not divide (devices=0: all of them)."""
  if config.devices == 1:
    return 1
  n = moments.device_count(config.devices)
  if config.batch_size % n:
    raise ValueError(f'batch_size: {config.batch_size} is not divisible by '
                     f'the {n} devices (devices={config.devices}).')
  return n


def replicate(tree: Any, mesh: jax.sharding.Mesh | None) -> Any:
  """`tree`'s arrays as global arrays replicated over `mesh` (each process
  puts its own copy on its devices: `jax.make_array_from_callback`); as
  they are for None."""
  if mesh is None:
    return tree
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

  def put(leaf):
    value = np.asarray(leaf)
    return jax.make_array_from_callback(value.shape, sharding,
                                        lambda index: value[index])

  return jax.tree.map(put, tree)


def local(tree: Any) -> Any:
  """A copy of (replicated) arrays on this process's default device."""
  return jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), tree)


def memory_estimate(model: Any, config: TrainConfig,
                    data_dim: int = 784) -> int:
  """Bytes a training step needs, roughly: 4·(5 P + 8 B k W).

  `model` is an MLP architecture with hidden_sizes, latent_dim and
  num_params(data_dim) (e.g. `image_vae.ModelConfig`).

  P parameters (with gradients, two Adam moments and a spare copy), and
  activations of the B·k samples of a batch kept for the backward pass, W =
  2 Σ hidden + 4 latent + 3 D floats per sample.
  """
  width = (2 * sum(model.hidden_sizes) + 4 * model.latent_dim +
           3 * data_dim)
  return 4 * (5 * model.num_params(data_dim) +
              8 * config.batch_size * config.num_samples * width)


def check_memory(model: Any, config: TrainConfig,
                 data_dim: int = 784) -> None:
  """Refuses (ValueError, one line) a step that needs more than half the
  machine's RAM: `memory_estimate` > RAM / 2."""
  need = memory_estimate(model, config, data_dim)
  ram = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  if need > ram // 2:
    raise ValueError(f'a training step needs about {need / 2**30:.3g} GiB; '
                     f'this machine has {ram / 2**30:.3g}: reduce '
                     'hidden_sizes, latent_dim, batch_size or num_samples.')


def init_key(seed: int) -> Array:
  """The PRNG key of the initial parameters: fold_in(PRNGKey(seed), 0)."""
  return jax.random.fold_in(jax.random.PRNGKey(seed), 0)


def test_key(seed: int) -> Array:
  """The PRNG key of the per-epoch test bound: fold_in(PRNGKey(seed), 2)."""
  return jax.random.fold_in(jax.random.PRNGKey(seed), 2)


def step_key(seed: int, step: Array) -> Array:
  """The PRNG key of step t: fold_in(fold_in(PRNGKey(seed), 1), t)."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), 1),
                            step)


def beta_at(config: TrainConfig, step: Array | int) -> Array:
  """β_t = β·min(1, t / warmup_steps) (β when warmup_steps = 0)."""
  if config.warmup_steps == 0:
    return jnp.asarray(config.beta, jnp.float32)
  frac = jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / config.warmup_steps)
  return config.beta * frac


def _uses_baseline(config: TrainConfig) -> bool:
  return registry.lookup(config.estimator).state == 'moving_average'


def model_loss(model: model_lib.Model, config: TrainConfig,
               dynamic_binarization: bool) -> optim.Loss:
  """(θ, (x, β_t), key, b) -> (-S̄, {'bound': S̄[, 'cost': f̄]}) for make_step.

  key splits into the binarization key (x ~ Bernoulli(x) when
  `dynamic_binarization`) and the samples' key; S̄ is
  `model.batch_surrogate` with β_t (and baseline b for
  score_moving_average, whose cost f̄ is `model.batch_objective`'s).
  A batch (x, β_t, ε) also carries the pathwise estimator's noise ε =
  `model.batch_noise(samples' key, ...)`, drawn ahead (`make_epoch`).
  """
  objective, estimator, k = (config.objective, config.estimator,
                             config.num_samples)
  uses_baseline = _uses_baseline(config)

  def loss(params, batch, key, baseline):
    images, beta, *noise = batch
    if config.warmup_steps == 0:  # A constant β, as XLA can fold it.
      beta = config.beta
    bin_key, loss_key = jax.random.split(key)
    if dynamic_binarization:
      images = data.binarize(bin_key, images)
    if uses_baseline:
      bound, cost = model_lib.batch_objective(
          model, params, images, loss_key, objective, estimator, k, beta,
          baseline)
      return -bound, {'bound': bound, 'cost': cost}
    if config.free_bits:  # Kingma et al.'s surrogate, not the ELBO.
      bound = model_lib.free_bits_bound(
          model, params, images, loss_key, config.free_bits, beta, k,
          noise=noise[0] if noise else None)
    elif noise:
      bound = jnp.mean(model_lib.pathwise_bounds(
          model, params, images, None, objective, beta, k, noise=noise[0]))
    else:
      bound = model_lib.batch_surrogate(model, params, images, loss_key,
                                        objective, estimator, k, beta)
    return -bound, {'bound': bound}

  return loss


# The pathwise noise of a whole epoch is drawn before its scan (one batched
# threefry call instead of one per step: 0.1-0.3 ms less per step on CPU, for
# 0.5 s more compilation) when the epoch has at least NOISE_AHEAD_STEPS
# steps and the noise at most NOISE_AHEAD_FLOATS floats; else in each step.
NOISE_AHEAD_STEPS = 100
NOISE_AHEAD_FLOATS = 2**23


def make_epoch(model: model_lib.Model,
               optimizer: optax.GradientTransformation,
               config: TrainConfig, seed: int, dynamic_binarization: bool,
               mesh: jax.sharding.Mesh | None = None):
  """A jitted (state, images, epoch) -> (state, stats): one pass over the data.

  Runs `optim.fit` over the batches of `data.epoch_batches(images, B, seed,
  epoch)`, step t with key `step_key(seed, t)` and β_t = `beta_at(t)`.
  stats: 'bound' (the mean of the steps' bounds S̄_t), 'min_bound' and
  'max_bound' (their extremes) and 'finite' (False if a bound or a
  parameter is NaN/Inf).

  Step t gathers its batch x_t = images[π_e[tB:(t+1)B]] itself
  (`data.epoch_indices`: the batches of `epoch_batches`, without a shuffled
  copy of the data); for the pathwise estimator and a diagonal Gaussian q
  the noise ε_t = `model.batch_noise` of step t's samples' key is drawn for
  the whole epoch before the scan (see NOISE_AHEAD_STEPS). The same numbers
  as `model_loss` on `epoch_batches`.

  With a `mesh` (axis `moments.DATA_AXIS`), state and images come in and go
  out replicated over it (`replicate`), and every step's batch indices,
  images and noise are split over its devices along the example axis, so
  each device gathers and computes its B / devices examples and the
  gradient's mean over the batch is all-reduced.
  """
  loss = model_loss(model, config, dynamic_binarization)
  split_batch = lambda x: x  # The example axis of step t's arrays.
  if mesh is not None:
    split = jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec(moments.DATA_AXIS))
    split_batch = lambda x: jax.lax.with_sharding_constraint(x, split)
    per_step = jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec(None, moments.DATA_AXIS))
    replicated = jax.sharding.NamedSharding(mesh,
                                            jax.sharding.PartitionSpec())
  batch_size, k = config.batch_size, config.num_samples
  ahead = config.estimator == 'pathwise' and not _uses_baseline(config)
  decay = config.baseline_decay if _uses_baseline(config) else None

  def epoch_fn(state: optim.TrainState, images: Array, epoch: Array):
    order = data.epoch_indices(images.shape[0], batch_size, seed, epoch)
    if mesh is not None:
      order = jax.lax.with_sharding_constraint(order, per_step)
    num_steps = order.shape[0]
    t = state.step + jnp.arange(num_steps)
    keys = jax.vmap(lambda s: step_key(seed, s))(t)
    betas = jax.vmap(lambda s: beta_at(config, s))(t)
    inputs: tuple[Array, ...] = (order, betas)
    gaussian = isinstance(jax.eval_shape(model.encoder, state.params,
                                         images[:1]), dists.Normal)
    if ahead and gaussian and num_steps >= NOISE_AHEAD_STEPS and (
        num_steps * batch_size * k * model.latent_dim <= NOISE_AHEAD_FLOATS):
      noise = jax.vmap(lambda key: model_lib.batch_noise(
          jax.random.split(key)[1], batch_size, k, model.latent_dim))(keys)
      if mesh is not None:
        noise = jax.lax.with_sharding_constraint(noise, per_step)
      inputs += (noise,)

    def gathered(params, batch, key, baseline):  # Batch t from its indices.
      indices, beta, *noise = batch
      x = split_batch(jnp.take(images, split_batch(indices), axis=0,
                               mode='clip'))
      return loss(params, (x, beta, *map(split_batch, noise)), key, baseline)

    state, aux = optim.fit(optim.make_step(gathered, optimizer, decay),
                           state, inputs, keys)
    bounds = aux['bound']
    finite = jnp.all(jnp.isfinite(bounds))
    for leaf in jax.tree.leaves(state.params):
      finite &= jnp.all(jnp.isfinite(leaf))
    return state, {'bound': jnp.mean(bounds), 'min_bound': jnp.min(bounds),
                   'max_bound': jnp.max(bounds), 'finite': finite}

  if mesh is None:
    return jax.jit(epoch_fn)
  return jax.jit(epoch_fn, in_shardings=(replicated, replicated, replicated),
                 out_shardings=replicated)


def divergence(stats: dict[str, Any], previous: float | None, data_dim: int,
               beta: float = 1.0, binary: bool = True) -> str | None:
  """Why an epoch's bounds are implausible, or None if they are plausible.

  Implausible for any model: NaN/Inf, or the epoch's mean bound
  L_e < 100·L_{e-1} < 0 (two orders of magnitude). For D Bernoulli pixels
  (`binary`) in [0, 1], log p(x|z) = Σ_j x_j l_j - softplus(l_j) ≤ 0, so a
  bound is ≤ 0 up to Monte Carlo noise in its KL part; implausible too: a
  step's bound below -10·D·log 2·max(1, β) (ten times what a model
  predicting every pixel at 1/2 pays) or above D·log 2.
  """
  if not bool(stats['finite']):
    return 'the training bound or the parameters became NaN/Inf'
  bound = float(stats['bound'])
  if not binary:
    return _jumped(previous, bound)
  ceiling = data_dim * math.log(2)
  floor = -DIVERGENCE_FACTOR * ceiling * max(1.0, beta)
  low, high = float(stats['min_bound']), float(stats['max_bound'])
  if low < floor:
    return (f'the training bound diverged to {low:.4g} nats (below '
            f'{floor:.4g}, a plausible floor for {data_dim} binary pixels)')
  if high > ceiling:
    return (f'the training bound rose to {high:.4g} nats (a bound on '
            f'{data_dim} pixels in [0, 1] is at most about 0)')
  return _jumped(previous, bound)


def _jumped(previous: float | None, bound: float) -> str | None:
  if previous is not None and previous < 0 and bound < JUMP_FACTOR * previous:
    return (f'the training bound jumped from {previous:.4g} to {bound:.4g} '
            'nats')
  return None


class Diverged(FloatingPointError):
  """Training stopped on a NaN or a diverged bound (one line)."""


class ResumeError(ValueError):
  """The newest checkpoint cannot continue this run (one line)."""


def check_resume(step: int, steps_per_epoch: int, epochs: int,
                 checkpoint_dir: str) -> None:
  """Refuses (ResumeError) to resume from checkpoint `step` for `epochs`.

  The step must end an epoch of `steps_per_epoch` steps, and the checkpoint
  must hold at most `epochs` epochs: a run asked for fewer epochs than its
  checkpoint holds would be labelled with a number of epochs its model was
  not trained for.
  """
  if step % steps_per_epoch:
    raise ResumeError(f'checkpoint step {step} in {checkpoint_dir} is not at '
                      f'the end of an epoch of {steps_per_epoch} steps: it '
                      'was written with other settings.')
  held = step // steps_per_epoch
  if held > epochs:
    raise ResumeError(f'{checkpoint_dir} holds a model trained for {held} '
                      f'epochs (step {step}), more than epochs={epochs}; '
                      f'rerun with epochs={held} or more (it is done), or '
                      'use another folder.')


@functools.lru_cache(maxsize=8)
def _compiled(model: model_lib.Model,
              optimizer_config: optim.OptimizerConfig,
              config: TrainConfig, seed: int, total_steps: int,
              steps_per_epoch: int, images_shape: tuple[int, ...],
              dynamic_binarization: bool):
  """(jitted init_state(params), compiled epoch, mesh) for these settings
  (cached, so that training again in one process, e.g. resuming, does not
  compile); the mesh of `config.devices` (None: one device)."""
  optimizer = optim.make_optimizer(optimizer_config, total_steps,
                                   steps_per_epoch)
  init = jax.jit(lambda params: optim.init_state(params, optimizer))
  state = jax.eval_shape(lambda: optim.init_state(
      model.init(jax.random.PRNGKey(0)), optimizer))
  mesh = moments.data_mesh(config.devices)
  epoch = make_epoch(model, optimizer, config, seed, dynamic_binarization,
                     mesh)
  return init, epoch.lower(state, jax.ShapeDtypeStruct(images_shape,
                                                       jnp.float32),
                           jax.ShapeDtypeStruct((), jnp.int32)).compile(), mesh


def _from_process_0(template: Any, restored: Any, step: int | None
                    ) -> tuple[Any, int | None]:
  """(tree, step) of process 0 in every process of a multi-process job
  (`multihost_utils.broadcast_one_to_all`); `template` gives the others
  the structure."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  tree = template if restored is None else restored
  tree, got = multihost_utils.broadcast_one_to_all(
      (jax.tree.map(np.asarray, tree), np.int64(-1 if step is None else step)))
  got = int(got)
  return (None, None) if got < 0 else (tree, got)


@dataclasses.dataclass
class TrainResult:
  """What `train` returns.

  Attributes:
    state: the final state (it passed the checks).
    history: the per-epoch rows of this call (see `train`).
    resumed_from: the step the run resumed from (None: fresh start).
    wall_s: wall seconds of the epochs of this call (no compilation).
    cpu_s: process CPU seconds of those epochs.
    compile_s: seconds spent compiling the epoch function.
  """
  state: optim.TrainState
  history: list[dict[str, Any]]
  resumed_from: int | None
  wall_s: float
  cpu_s: float
  compile_s: float


def train(model: model_lib.Model, dataset: data.Dataset,
          optimizer_config: optim.OptimizerConfig, config: TrainConfig,
          seed: int, checkpoint_dir: str, *,
          on_epoch: Callable[[dict[str, Any]], None] | None = None,
          log: Callable[[str], None] = print,
          stop_after_epochs: int | None = None) -> TrainResult:
  """Trains (or resumes) a model, checkpointing into `checkpoint_dir`.

  Maximizes (1/T) Σ_t S̄_t (see `make_epoch`) from θ₀ =
  `model.init(fold_in(PRNGKey(seed), 0), x̄)`, x̄ the mean training
  example, or from the newest intact checkpoint. After each epoch
  `on_epoch` gets the row {step, epoch, train_bound, test_bound (the
  objective with k samples and β = 1 on `evaluate.test_images`, every
  `test_every` epochs and at the end), beta, learning_rate, examples_per_s,
  epoch_wall_s, epoch_cpu_s}; a checkpoint follows every `checkpoint_every`
  epochs and at the end.

  Args:
    model: the model (`vae.model.Model`).
    dataset: the data; its `binarization` picks dynamic binarization.
    optimizer_config: the optimizer and its schedule.
    config: what to optimize, and for how long.
    seed: the seed of everything random.
    checkpoint_dir: the checkpoints' folder.
    on_epoch: called with each epoch's row (metrics, progress).
    log: one-line messages (resuming, fallbacks, interruption).
    stop_after_epochs: stop (with a checkpoint) once this many epochs are
      done in total, as if killed there (for tests of resuming).

  Returns:
    The `TrainResult`.

  Raises:
    Diverged: NaN/Inf or a diverged bound (`divergence`); the last good
      state is checkpointed first.
    KeyboardInterrupt: re-raised after checkpointing the last good state.
    checkpoint.CheckpointError: no intact checkpoint, or one not written.
    ResumeError: the newest intact checkpoint holds more than
      `config.epochs` epochs, or does not end an epoch.
  """
  check_devices(config)
  images = jnp.asarray(dataset.train, jnp.float32)
  steps_per_epoch = images.shape[0] // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'batch_size: {config.batch_size} > {images.shape[0]} '
                     'training images.')
  total = config.epochs * steps_per_epoch
  schedule = optim.learning_rate_schedule(optimizer_config, total, steps_per_epoch)
  start = time.time()
  init, epoch_fn, mesh = _compiled(  # Keyed on what the step computes.
      model, optimizer_config, dataclasses.replace(
          config, epochs=1, checkpoint_every=1, test_every=1), seed,
      total if optimizer_config.lr_schedule in ('cosine', 'exponential')
      else 0, steps_per_epoch, tuple(images.shape),
      dataset.binarization == 'dynamic')
  compile_s = time.time() - start
  params = model.init(init_key(seed), np.asarray(dataset.train).mean(0))
  binary = isinstance(jax.eval_shape(
      model.decoder, params, jnp.zeros((1, model.latent_dim))),
                      dists.Bernoulli)
  good = init(params)
  # In a multi-process job (jax.distributed) process 0 alone reads and
  # writes checkpoints and sends what it restored to the others.
  writer = jax.process_index() == 0
  restored, resumed_from = checkpoint.restore_latest(
      checkpoint_dir, good._asdict(), log) if writer else (None, None)
  if jax.process_count() > 1:
    restored, resumed_from = _from_process_0(good._asdict(), restored,
                                             resumed_from)
  if resumed_from is not None:  # Then restored is its tree.
    good = optim.TrainState(**jax.tree.map(jnp.asarray, restored))
    check_resume(resumed_from, steps_per_epoch, config.epochs,
                 checkpoint_dir)
    log(f'resuming from {checkpoint_dir} at step {resumed_from} (epoch '
        f'{resumed_from // steps_per_epoch})')
  # On a mesh: state and images replicated on its devices (checkpoints hold
  # numpy arrays, so a run resumes on any number of devices).
  good, images = replicate((good, images), mesh)
  saved = resumed_from
  test_images = evaluate.test_images(dataset)
  test_bound_key = test_key(seed)
  end = min(config.epochs, stop_after_epochs or config.epochs)
  history, previous = [], None

  def save_good():
    nonlocal saved
    if saved != int(good.step):
      if writer:
        checkpoint.save(checkpoint_dir, int(good.step), good._asdict())
      saved = int(good.step)

  try:
    for epoch in range(int(good.step) // steps_per_epoch, end):
      wall, cpu = time.time(), time.process_time()
      state, stats = epoch_fn(good, images, jnp.int32(epoch))
      stats = jax.device_get(stats)
      wall, cpu = time.time() - wall, time.process_time() - cpu
      problem = divergence(stats, previous, model.data_dim, config.beta,
                           binary)
      if problem:
        save_good()
        raise Diverged(f'{problem} in epoch {epoch + 1} (steps '
                       f'{int(good.step)}..{int(state.step)}); the last good '
                       f'state (step {int(good.step)}) is in {checkpoint_dir}.')
      previous, step = float(stats['bound']), int(state.step)
      test_bound = None
      if config.test_every and ((epoch + 1) % config.test_every == 0 or
                                epoch + 1 == end):
        test_bound = evaluate.mean_bound(
            model, local(state.params) if mesh else state.params,
            test_images, test_bound_key, config.objective, config.num_samples)
      row: dict[str, Any] = dict(
          step=step, epoch=epoch + 1, train_bound=previous,
          test_bound=test_bound, beta=float(beta_at(config, step)),
          learning_rate=float(schedule(step - 1)),
          examples_per_s=steps_per_epoch * config.batch_size / wall,
          epoch_wall_s=wall, epoch_cpu_s=cpu)
      if on_epoch is not None:
        on_epoch(row)
      # Reported: the state is the last good one (an interruption while
      # reporting keeps the one before, whose row is on record).
      good = state
      history.append(row)
      if (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == end:
        save_good()
  except KeyboardInterrupt:
    save_good()
    log(f'interrupted: step {int(good.step)} is checkpointed in '
        f'{checkpoint_dir}; rerun into the same folder to resume.')
    raise
  # The caller gets the state on one device, whatever the mesh.
  return TrainResult(state=local(good) if mesh else good, history=history,
                     resumed_from=resumed_from,
                     wall_s=sum(r['epoch_wall_s'] for r in history),
                     cpu_s=sum(r['epoch_cpu_s'] for r in history),
                     compile_s=compile_s)
