"""Variance, signal-to-noise ratio and direction of VAE gradient estimators.

At a few points of a VAE's training run and on one fixed minibatch x_{1:B},
draw D independent estimates ĝ_1..ĝ_D of the gradient of a bound with each
estimator and measure, separately for the encoder and the decoder parameters
(P coordinates each):

    total variance  Σ_p Var_d[ĝ_dp]                  (per coordinate, ddof=1)
    SNR             (1/P) Σ_p |mean_d ĝ_dp| / std_d ĝ_dp
    cosine          (1/D) Σ_d cos(ĝ_d, g_ref),   and cos(mean_d ĝ_d, g_ref)

g_ref is a high-sample reference drawn with independent keys: the mean of R
pathwise estimates at the largest N for the ELBOs (whose gradient does not
depend on N), and of R DReG estimates at the same K for IWAE_K (unbiased for
∇IWAE_K, and its encoder SNR grows with K while the pathwise IWAE one decays;
Rainforth et al. 2018, Tucker et al. 2019).

The moments come from `vae.moments.moments` (the one chunked routine): ONE
jitted function per (objective, N) draws D keys and runs all estimators of
the objective on each key (common random numbers: paired comparisons, shared
sampling). `study` compiles these ahead of time (in threads) and calls each
once per checkpoint. `train_checkpoints` trains with `vae.train` (one
`make_step`, `fit` between checkpoints) on the pathwise bound and keeps, for
each ELBO objective, the moving average of the score-function cost that
`score_moving_average` uses: a baseline from past steps, independent of the
evaluated draws, so the estimator stays unbiased. `pooled_bias` compares
estimators' means with a pooled unbiased reference (discrete latents).
"""

from concurrent import futures
import dataclasses
import functools
import os
import time
from typing import Any, Mapping, Sequence

import jax
from jax import flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from vae import comparison
from vae import data as data_lib
from vae import model as model_lib
from vae import moments
from vae import optim
from vae import types
from vae.estimators import registry
from vae.models import image_vae
from vae.models import networks

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey
Record = dict

GROUPS = ('encoder', 'decoder')
ELBO_OBJECTIVES = ('elbo', 'elbo_mc_kl')


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """Parameters at one training step, and the score-function baselines.

  Attributes:
    step: number of optimizer steps taken.
    params: {'encoder', 'decoder'}.
    baselines: {ELBO objective: moving average of the batch-mean f(z)}.
  """
  step: int
  params: Params
  baselines: dict[str, float]


def small_vae(latent_dim: int = 8, hidden_sizes: Sequence[int] = (64,),
              pixel_mean: np.ndarray | None = None) -> image_vae.VAE:
  """An MLP VAE 784–hidden–latent (tanh), output bias logit(pixel mean)."""
  init = None if pixel_mean is None else networks.mean_logit_init(pixel_mean)
  return image_vae.burda_vae(latent_dim, tuple(hidden_sizes),
                             output_bias_init=init)


def score_cost(model: model_lib.Model, params: Params, batch: Array,
               key: PRNGKey, objective: str) -> Array:
  """Batch mean of the score-function cost f(z), one z ~ q(z|x) per example.

      elbo:       f(z) = log p(x|z)
      elbo_mc_kl: f(z) = log p(x|z) + log p(z) - log q(z|x)

  Args:
    model: the VAE.
    params: its parameters.
    batch: x, [B, data_dim].
    key: PRNG key (split per example).
    objective: 'elbo' or 'elbo_mc_kl'.

  Returns:
    The scalar mean cost (no gradient flows).
  """
  if objective not in ELBO_OBJECTIVES:
    raise ValueError(f'no score-function cost for objective {objective!r}.')

  def one(x, k):
    q = model.encoder(params, x)
    z = q.sample(k)
    log_w, log_px = model_lib.log_weights(model, params, x, z, q)
    return log_w if objective == 'elbo_mc_kl' else log_px

  keys = jax.random.split(key, batch.shape[0])
  return jax.lax.stop_gradient(jnp.mean(jax.vmap(one)(batch, keys)))


# Steps per `fit` call: as many as minibatches of this many floats (the
# steps' example indices are made per call; each step gathers its batch).
_BLOCK_FLOATS = 2**25


def _training_indices(num_examples: int, batch_size: int, seed: int,
                      start: int, stop: int) -> Array:
  """Example indices [T, B] of minibatches t = start..stop-1: the epochs of
  `data.epoch_indices` (the batches of `data.epoch_batches`) back to back
  (epoch e holds steps e·S..(e+1)·S-1)."""
  per_epoch = num_examples // batch_size
  first, last = start // per_epoch, (stop - 1) // per_epoch
  epochs = jnp.concatenate([
      data_lib.epoch_indices(num_examples, batch_size, seed, e)
      for e in range(first, last + 1)])
  return epochs[start - first * per_epoch:stop - first * per_epoch]


def train_checkpoints(model: model_lib.Model, images: np.ndarray | Array,
                      steps: Sequence[int], key: PRNGKey,
                      optimizer: optax.GradientTransformation,
                      batch_size: int = 32, objective: str = 'elbo',
                      num_samples: int = 1,
                      baseline_objectives: Sequence[str] = ELBO_OBJECTIVES,
                      baseline_decay: float = 0.9) -> list[Checkpoint]:
  """Trains on the pathwise bound; returns the params at `steps`.

  Step t maximizes batch_surrogate(objective, 'pathwise', num_samples) on
  the t-th minibatch (epochs shuffled by `data.epoch_batches`) with the key
  fold_in(k, t), through `vae.optim.make_step` and `fit`, and updates

      b_o ← decay·b_o + (1 - decay)·score_cost(x_t, o)

  with the pre-update params for every baseline objective o (b_o starts at
  the first batch's cost). Steps run in `fit` calls of at most 2^25 floats
  of minibatches each.

  Args:
    model: the VAE.
    images: training images [N, data_dim].
    steps: the steps (≥ 0) at which to keep a checkpoint.
    key: PRNG key (init, batch order and samples derive from it).
    optimizer: the optax optimizer.
    batch_size: training minibatch size.
    objective: the training bound ('elbo', 'elbo_mc_kl' or 'iwae').
    num_samples: samples per example for the training bound.
    baseline_objectives: ELBO objectives whose baseline to keep.
    baseline_decay: moving-average decay in [0, 1).

  Returns:
    One `Checkpoint` per distinct step, in increasing order.
  """
  steps = sorted(set(int(s) for s in steps))
  if not steps or steps[0] < 0:
    raise ValueError(f'steps must be non-negative, got {steps}.')
  if len(images) < batch_size:
    raise ValueError(f'batch_size {batch_size} > {len(images)} examples.')
  init_key, order_key, step_key, cost_key = jax.random.split(key, 4)
  objs = tuple(baseline_objectives)
  order_seed = int(jax.random.randint(order_key, (), 0, 2**31 - 1))

  def costs(params, batch, k):
    return jnp.stack([score_cost(model, params, batch, k, o) for o in objs]
                     ) if objs else jnp.zeros((0,))

  def loss(params, batch, k, baseline):
    del baseline
    loss_key, c_key = jax.random.split(k)
    value = model_lib.batch_surrogate(model, params, batch, loss_key,
                                      objective, 'pathwise', num_samples)
    return -value, {'costs': costs(params, batch, c_key)}

  inner = optim.make_step(loss, optimizer)

  def step(state, batch, k):
    new, aux = inner(state, batch, k)
    b = baseline_decay * state.baseline + (1.0 - baseline_decay) * aux['costs']
    return new._replace(baseline=b), aux

  def run_block(state, images, indices, keys):  # Step t gathers batch t.
    return optim.fit(lambda st, idx, k: step(st, jnp.take(images, idx, 0), k),
                     state, indices, keys)

  images = jnp.asarray(images)
  indices = functools.partial(_training_indices, len(images), batch_size,
                              order_seed)
  params = model.init(init_key)
  state = optim.init_state(params, optimizer, jax.jit(costs)(
      params, images[indices(0, 1)[0]], cost_key))
  run = jax.jit(run_block)
  block = max(1, _BLOCK_FLOATS // (batch_size * images.shape[1]))
  checkpoints, done = [], 0
  for s in steps:
    for start in range(done, s, block):
      stop = min(s, start + block)
      keys = jax.vmap(lambda t: jax.random.fold_in(step_key, t))(
          jnp.arange(start, stop))
      state, _ = run(state, images, indices(start, stop), keys)
    done = s
    checkpoints.append(Checkpoint(s, state.params, dict(zip(
        objs, np.asarray(state.baseline).tolist()))))
  return checkpoints


def _flat_grads(model, objective, estimator, num_samples):
  """(params, batch, key, baseline) -> {'bound', group: flat gradient}."""
  def fn(params, batch, key, baseline):
    value, grads = jax.value_and_grad(
        lambda p: model_lib.batch_surrogate(
            model, p, batch, key, objective, estimator, num_samples,
            baseline=baseline))(
                params)
    return {'bound': value, **{g: flatten_util.ravel_pytree(grads[g])[0]
                               for g in GROUPS}}
  return fn


@functools.lru_cache(maxsize=None)
def draw_fn(model: model_lib.Model, objective: str, estimators: tuple[str, ...],
            num_samples: int, num_draws: int, batch_size: int,
            common_random_numbers: bool = True,
            mesh: jax.sharding.Mesh | None = None):
  """The jitted study of (objective, N): D draws of every estimator at once.

  fn(params, batch, key, baseline, reference) returns `vae.moments.moments`
  over the D draw keys split from `key` of {e: {'bound', group: flat ĝ}}
  with `reference` = {group: flat g_ref}: 'mean', 'variance' (ddof=1) and
  'cosine' (mean of cos(ĝ_d, g_ref)), each {e: {'bound', group}}. Chunks
  of draws are vmapped within 2^23 decoder logits (`moments.default_chunk`).
  With common random numbers every estimator of a draw uses the same key,
  hence the same z samples (paired comparisons; XLA shares the sampling
  and forward passes); otherwise estimator e uses fold_in(key_d,
  registry.name_id(e)). With a `mesh`, each chunk's draws are split over
  its devices (chunks a multiple of its size).
  """
  grads = {e: _flat_grads(model, objective, e, num_samples)
           for e in estimators}
  chunk = moments.default_chunk(num_draws,
                                batch_size * num_samples * model.data_dim,
                                multiple_of=mesh.size if mesh else 1)

  def fn(params, batch, key, baseline, reference):
    def estimate(k):
      return {e: grads[e](params, batch, k if common_random_numbers else
                          jax.random.fold_in(k, registry.name_id(e)), baseline)
              for e in estimators}
    ref = {e: {'bound': jnp.zeros(()), **reference} for e in estimators}
    return moments.moments(estimate, key, num_draws, chunk=chunk,
                           reference=ref, mesh=mesh)

  return jax.jit(fn)


def reference_estimator(objective: str) -> str:
  """The estimator averaged into g_ref: 'dreg' for iwae, else 'pathwise'."""
  return 'dreg' if objective == 'iwae' else 'pathwise'


def reference_num_samples(objective: str, num_samples: int,
                          all_num_samples: Sequence[int]) -> int:
  """N of g_ref: the largest N for the ELBOs (∇ELBO is N-free), else K."""
  return max(all_num_samples) if objective in ELBO_OBJECTIVES else num_samples


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
  denom = np.linalg.norm(a) * np.linalg.norm(b)
  return float(a @ b / denom) if denom > 0 else 0.0


def summarize(mean: Array | np.ndarray, variance: Array, cosine: Array,
              reference: Array) -> dict[str, Any]:
  """Scalar statistics of one group of one estimator (float64).

  total_variance = Σ_p var_p; snr = mean_p |m_p|/s_p and snr_median over
  coordinates with s_p > 0; cosine_to_reference = mean_d cos(ĝ_d, g_ref);
  cosine_of_mean_to_reference = cos(ḡ, g_ref); mean_norm = |ḡ|.

  Args:
    mean: ḡ, the mean of the draws [P].
    variance: their variance per coordinate [P].
    cosine: mean_d cos(ĝ_d, g_ref) (from `moments(reference=...)`).
    reference: g_ref [P].

  Returns:
    The statistics.
  """
  mean = np.asarray(mean, np.float64)
  std = np.sqrt(np.asarray(variance, np.float64))
  snr = np.abs(mean[std > 0]) / std[std > 0]
  return {
      'num_params': int(mean.size),
      'total_variance': float(np.sum(std**2)),
      'snr': float(snr.mean()) if snr.size else None,
      'snr_median': float(np.median(snr)) if snr.size else None,
      'cosine_to_reference': float(cosine),
      'cosine_of_mean_to_reference': _cosine(
          mean, np.asarray(reference, np.float64)),
      'mean_norm': float(np.linalg.norm(mean)),
  }


def compile_draw_fns(model: model_lib.Model,
                     specs: Sequence[tuple[str, tuple[str, ...], int]],
                     example_args: tuple, num_draws: int, batch_size: int,
                     common_random_numbers: bool = True,
                     workers: int | None = None,
                     mesh: jax.sharding.Mesh | None = None):
  """AOT-compiles `draw_fn` for each (objective, estimators, N), in threads.

  Lowers the programs here; XLA compiles them in `workers` threads (default:
  the CPU count), which overlap.

  Args:
    model: the VAE.
    specs: (objective, estimators, N) triples.
    example_args: (params, batch, key, baseline, reference), for the shapes.
    num_draws: D.
    batch_size: B.
    common_random_numbers: see `draw_fn`.
    workers: compile threads.
    mesh: see `draw_fn`.

  Returns:
    ({spec: compiled function}, [compile-time records]).
  """
  specs = list(dict.fromkeys(specs))
  lowered = [draw_fn(model, o, tuple(e), n, num_draws, batch_size,
                     common_random_numbers, mesh).lower(*example_args)
             for o, e, n in specs]

  def compile_one(low):
    t0 = time.perf_counter()
    return low.compile(), time.perf_counter() - t0

  with futures.ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
    done = list(pool.map(compile_one, lowered))
  fns = {spec: fn for spec, (fn, _) in zip(specs, done)}
  records = [{'objective': o, 'estimators': ','.join(e), 'num_samples': n,
              'compile_seconds': t} for (o, e, n), (_, t) in zip(specs, done)]
  return fns, records


def _timed(fn, *args):
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - t0


def plan(estimators_for: Mapping[str, Sequence[str]],
         num_samples: Sequence[int]) -> dict[tuple[str, int], tuple[str, ...]]:
  """{(objective, N): estimators of its call}: the reference one added.

  Estimators that cannot run at N (N < `registry` min_samples) are left out.
  """
  out = {}
  for obj, requested in estimators_for.items():
    for n in num_samples:
      ests = [e for e in requested if n >= registry.lookup(e).min_samples]
      if (n == reference_num_samples(obj, n, num_samples) and
          reference_estimator(obj) not in ests):
        ests.append(reference_estimator(obj))
      out[obj, n] = tuple(ests)
  return out


def _key_for(base: PRNGKey, *ids: int) -> PRNGKey:
  for i in ids:
    base = jax.random.fold_in(base, i)
  return base


def _zeros(params: Params) -> dict[str, Array]:
  return {g: jnp.zeros_like(flatten_util.ravel_pytree(params[g])[0])
          for g in GROUPS}


def study(model: model_lib.Model, checkpoints: Sequence[Checkpoint],
          batch: Array | np.ndarray,
          estimators_for: Mapping[str, Sequence[str]],
          num_samples: Sequence[int], num_draws: int, reference_draws: int,
          seed: int, common_random_numbers: bool = True,
          workers: int | None = None, mesh: jax.sharding.Mesh | None = None
          ) -> tuple[list[Record], dict[str, list[Record]]]:
  """Statistics of every (objective, estimator, N) at every checkpoint.

  For each checkpoint, objective and N, one call of the compiled
  `draw_fn(objective, estimators, N)` draws D estimates of every estimator;
  g_ref averages ⌈R/D⌉ more calls' `reference_estimator` means at
  `reference_num_samples` (independent keys). Keys derive from (seed,
  objective, N, step) only.

  Args:
    model: the VAE.
    checkpoints: from `train_checkpoints`.
    batch: the fixed minibatch x, [B, data_dim].
    estimators_for: {objective: estimators} (valid per the registry).
    num_samples: sample counts N (K for iwae).
    num_draws: D ≥ 2 estimates per configuration.
    reference_draws: R ≥ 1, rounded up to a multiple of D.
    seed: PRNG seed.
    common_random_numbers: share each draw's samples among the estimators.
    workers: compile threads (see `compile_draw_fns`).
    mesh: split the draws over its devices (`draw_fn`).

  Returns:
    (records, timings). Records: objective, estimator, group, step,
    num_samples, num_draws, batch_size, the `summarize` fields, bound (mean
    bound estimate), baseline (score_moving_average's b, else None),
    common_random_numbers, reference_estimator, reference_num_samples,
    reference_draws, reference_norm. timings: {'draws': per (objective, N,
    step) the wall seconds of one compiled call divided by D, 'compile':
    compile seconds per compiled function}.
  """
  if reference_draws < 1:
    raise ValueError(f'reference_draws must be >= 1, got {reference_draws}.')
  batch = jnp.asarray(batch)
  base = jax.random.PRNGKey(seed)
  calls = -(-reference_draws // num_draws)
  zeros = _zeros(checkpoints[0].params)
  calls_of = plan(estimators_for, num_samples)
  fns, compile_records = compile_draw_fns(
      model, [(o, e, n) for (o, n), e in calls_of.items()],
      (checkpoints[0].params, batch, base, jnp.float32(0.0), zeros),
      num_draws, batch.shape[0], common_random_numbers, workers, mesh)
  records, draw_times = [], []
  for ck in checkpoints:
    for obj, requested in estimators_for.items():
      oi = registry.OBJECTIVES.index(obj)
      baseline = jnp.float32(ck.baselines.get(obj, 0.0))
      ref_est = reference_estimator(obj)
      refs = {}
      for n in num_samples:
        ref_n = reference_num_samples(obj, n, num_samples)
        if ref_n not in refs:
          fn = fns[obj, calls_of[obj, ref_n], ref_n]
          outs = [fn(ck.params, batch, _key_for(base, 1, oi, ref_n, ck.step,
                                                c), baseline, zeros)
                  for c in range(calls)]
          # Blocks, so that the timed call below does not wait for these.
          refs[ref_n] = jax.block_until_ready(
              {g: sum(o['mean'][ref_est][g] for o in outs) / calls
               for g in GROUPS})
        out, seconds = _timed(fns[obj, calls_of[obj, n], n], ck.params, batch,
                              _key_for(base, 2, oi, n, ck.step), baseline,
                              refs[ref_n])
        draw_times.append({
            'objective': obj, 'num_samples': n, 'step': ck.step,
            'estimators': ','.join(calls_of[obj, n]),
            'seconds_per_draw': seconds / num_draws})
        for est in (e for e in requested if e in out['mean']):
          for g in GROUPS:
            records.append({
                'objective': obj, 'estimator': est, 'group': g,
                'step': ck.step, 'num_samples': n, 'num_draws': num_draws,
                'batch_size': int(batch.shape[0]),
                **summarize(out['mean'][est][g], out['variance'][est][g],
                            out['cosine'][est][g], refs[ref_n][g]),
                'bound': float(out['mean'][est]['bound']),
                'baseline': (ck.baselines.get(obj) if
                             registry.lookup(est).state else None),
                'common_random_numbers': common_random_numbers,
                'reference_estimator': ref_est,
                'reference_num_samples': ref_n,
                'reference_draws': calls * num_draws,
                'reference_norm': float(np.linalg.norm(np.asarray(
                    refs[ref_n][g], np.float64))),
            })
  return records, {'draws': draw_times, 'compile': compile_records}


def time_estimators(model: model_lib.Model, checkpoint: Checkpoint,
                    batch: Array | np.ndarray,
                    estimators_for: Mapping[str, Sequence[str]],
                    num_samples: Sequence[int], num_draws: int, seed: int,
                    workers: int | None = None) -> list[Record]:
  """Wall time of each estimator alone: one compiled D-draw call, divided by D.

  Compiles `draw_fn(objective, (estimator,), N)` for every configuration (the
  study's calls run all estimators of an objective together), runs it once
  at `checkpoint`, and reports seconds_per_estimate and compile_seconds.
  """
  batch = jnp.asarray(batch)
  base = jax.random.PRNGKey(seed)
  zeros = _zeros(checkpoint.params)
  specs = [(o, (e,), n) for o, ests in estimators_for.items() for e in ests
           for n in num_samples if n >= registry.lookup(e).min_samples]
  fns, compile_records = compile_draw_fns(
      model, specs, (checkpoint.params, batch, base, jnp.float32(0.0), zeros),
      num_draws, batch.shape[0], True, workers)
  records = []
  for (o, (e,), n), c in zip(specs, compile_records):
    _, seconds = _timed(fns[o, (e,), n], checkpoint.params, batch,
                        base, jnp.float32(checkpoint.baselines.get(o, 0.0)),
                        zeros)
    records.append({'objective': o, 'estimator': e, 'num_samples': n,
                    'step': checkpoint.step,
                    'seconds_per_estimate': seconds / num_draws,
                    'compile_seconds': c['compile_seconds']})
  return records


def seconds_per_estimate(model: model_lib.Model, checkpoint: Checkpoint,
                         batch: Array | np.ndarray,
                         estimators_for: Mapping[str, Sequence[str]],
                         num_samples: Sequence[int], seed: int
                         ) -> dict[tuple[str, str, int], float]:
  """{(objective, estimator, N): seconds of ONE estimate on `batch`}.

  The estimate (bound and both groups' gradients, `_flat_grads`) alone, at
  `checkpoint`: `comparison.seconds_per_calls` (compiled, after warm-up,
  median of repeats taken round the estimators in turn). Unlike `time_estimators` (one D-draw call / D), it
  pays its dispatch, as a training step does.
  """
  batch, key, calls = jnp.asarray(batch), jax.random.PRNGKey(seed), {}
  for o, ests in estimators_for.items():
    baseline = jnp.float32(checkpoint.baselines.get(o, 0.0))
    for e in ests:
      for n in num_samples:
        if n >= registry.lookup(e).min_samples:
          calls[o, e, n] = (_flat_grads(model, o, e, n), (
              checkpoint.params, batch, key, baseline))
  return comparison.seconds_per_calls(calls)


def measure(model: model_lib.Model, images: np.ndarray, steps: Sequence[int],
            seed: int, optimizer: optax.GradientTransformation,
            estimators_for: Mapping[str, Sequence[str]],
            num_samples: Sequence[int], num_draws: int, reference_draws: int,
            time_each: bool = False, *, batch_size: int = 32,
            train_objective: str = 'elbo', train_num_samples: int = 1,
            baseline_decay: float = 0.9, eval_batch_size: int = 16,
            common_random_numbers: bool = True, workers: int | None = None,
            mesh: jax.sharding.Mesh | None = None
            ) -> tuple[list[Record], dict[str, Any]]:
  """Trains, then measures: the whole study of one run (the draws of
  `study` split over `mesh`'s devices if given).

  `train_checkpoints` (key PRNGKey(seed); moving-average baselines for the
  objectives that measure score_moving_average), then `study` on the first
  `eval_batch_size` images; each record gets 'seconds' per estimate
  (`seconds_per_estimate` at the last checkpoint), 'efficiency' =
  total_variance × seconds and 'device'; with `time_each` also
  `time_estimators` at the last checkpoint.

  Returns:
    (records of `study`, timings: its 'draws' and 'compile', 'estimators'
    (with time_each), train_seconds, study_seconds).
  """
  t0 = time.perf_counter()
  checkpoints = train_checkpoints(
      model, images, steps, jax.random.PRNGKey(seed), optimizer, batch_size,
      train_objective, train_num_samples,
      [o for o, e in estimators_for.items() if 'score_moving_average' in e],
      baseline_decay)
  timings: dict[str, Any] = {'train_seconds': time.perf_counter() - t0}
  t0 = time.perf_counter()
  batch = images[:eval_batch_size]
  records, draws = study(model, checkpoints, batch, estimators_for,
                         num_samples, num_draws, reference_draws, seed,
                         common_random_numbers, workers, mesh)
  timings.update(draws, study_seconds=time.perf_counter() - t0)
  seconds = seconds_per_estimate(model, checkpoints[-1], batch,
                                 estimators_for, num_samples, seed)
  device = comparison.device_name()
  for r in records:
    r['seconds'] = seconds[r['objective'], r['estimator'], r['num_samples']]
    r['efficiency'] = r['total_variance'] * r['seconds']
    r['device'] = device
  if time_each:
    timings['estimators'] = time_estimators(
        model, checkpoints[-1], batch, estimators_for, num_samples,
        num_draws, seed, workers)
  return records, timings


def pooled_bias(means: Mapping[str, Array | np.ndarray],
                total_variances: dict[str, float],
                unbiased: Sequence[str], comparable: Sequence[str],
                num_draws: int) -> dict[str, tuple[float, float] | None]:
  """Squared bias of each estimator's mean against a pooled unbiased one.

  The reference is the inverse-variance weighted mean of the unbiased
  estimators' means, r = Σ_u w_u ḡ_u / Σ_u w_u with w_u = D / tr Σ_u (its
  noise tr Σ_r = 1 / Σ_u w_u); for each comparable estimator (the same
  target gradient)

      bias² ≈ ‖ḡ - r‖² - tr Σ_g / D - [not unbiased] tr Σ_r,

  the Monte Carlo noise of the comparison subtracted (an unbiased one is
  part of r, which correlates with it; its noise term omits tr Σ_r).

  Args:
    means: {estimator: ḡ [P]} over D draws.
    total_variances: {estimator: tr Σ = Σ_p Var[ĝ_p]}.
    unbiased: the estimators pooled into the reference.
    comparable: the estimators to compare (others map to None).
    num_draws: D.

  Returns:
    {estimator: (bias², noise level) or None}.
  """
  out: dict[str, tuple[float, float] | None] = {n: None for n in means}
  if not unbiased:
    return out
  weights = {n: num_draws / total_variances[n] for n in unbiased}
  total = sum(weights.values())
  reference = sum(w * np.asarray(means[n], np.float64)
                  for n, w in weights.items()) / total
  for name in comparable:
    noise = total_variances[name] / num_draws + (
        0.0 if name in unbiased else 1.0 / total)
    diff = np.asarray(means[name], np.float64) - reference
    out[name] = (float(np.sum(diff**2) - noise), noise)
  return out


def summary_rows(records: Sequence[Record]) -> list[Record]:
  """One row per (objective, N, estimator, step): enc_* and dec_* columns.

  var: total variance Σ_p Var[ĝ_p]; snr; cos: cosine_to_reference; ms: per
  estimate; eff: efficiency = var × seconds.
  """
  rows: dict[tuple, Record] = {}
  for r in records:
    key = (r['objective'], r['num_samples'], r['estimator'], r['step'])
    row = rows.setdefault(key, dict(zip(('objective', 'N', 'estimator',
                                         'step'), key)))
    g = r['group'][:3]
    row.update({f'{g}_var': r['total_variance'], f'{g}_snr': r['snr'],
                f'{g}_cos': r['cosine_to_reference'], 'bound': r['bound']})
    if 'seconds' in r:
      row.update({'ms': 1e3 * r['seconds'], f'{g}_eff': r['efficiency']})
  return list(rows.values())


def draw_time_rows(draw_times: Sequence[Record]) -> list[Record]:
  """ms per draw of each (objective, N) call: the median over checkpoints."""
  per: dict[tuple, list[float]] = {}
  for t in draw_times:
    per.setdefault((t['objective'], t['num_samples'], t['estimators']),
                   []).append(1e3 * t['seconds_per_draw'])
  return [{'objective': o, 'N': n, 'estimators': e,
           'ms/draw': float(np.median(v))} for (o, n, e), v in per.items()]
