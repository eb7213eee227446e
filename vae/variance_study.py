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

`draw_fn` is ONE jitted function per (objective, N) that vmaps over the D
draw keys and runs all estimators of the objective on each key (common random
numbers: paired comparisons, shared sampling), keeping running moments over
chunks of draws so memory stays at one chunk. `study` compiles these
functions ahead of time (in threads) and calls each once per training step.

`train_checkpoints` is a deliberately minimal training loop (a jitted optax
Adam step on the pathwise bound, called from Python) that also keeps, for
each ELBO objective, the moving average of the score-function cost f(z) that
`score_moving_average` uses: a baseline from past steps, independent of the
evaluated draws, so the estimator stays unbiased.
"""

from concurrent import futures
import dataclasses
import functools
import os
import time
from typing import Sequence

import jax
from jax import flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from vae.estimators import control_variates
from vae import data as data_lib
from vae.models import networks
from vae import objectives
from vae.estimators import registry
from vae import types
from vae.models import image_vae

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey
Record = dict

GROUPS = ('encoder', 'decoder')
ELBO_OBJECTIVES = ('elbo', 'elbo_mc_kl')
MIN_SAMPLES = {'score_rloo': 2, 'vimco': 2}
# A vmapped chunk of draws holds at most this many decoder logits (draws × B ×
# N × pixels) and this many draws; `draw_fn` scans over the chunks.
_MAX_CHUNK_LOGITS = 2**23
_MAX_CHUNK_DRAWS = 50


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """Parameters at one training step, and the score-function baselines.

  Attributes:
    step: number of Adam steps taken.
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


def score_cost(model: image_vae.VAE, params: Params, batch: Array,
               key: PRNGKey, objective: str) -> Array:
  """Batch mean of the score-function cost f(z), one z ~ q(z|x) per example.

      elbo:       f(z) = log p(x|z)
      elbo_mc_kl: f(z) = log p(x|z) + log p(z) - log q(z|x)

  Args:
    model: the VAE.
    params: its parameters.
    batch: x, [B, data_dim].
    key: PRNG key.
    objective: 'elbo' or 'elbo_mc_kl'.

  Returns:
    The scalar mean cost (no gradient flows).
  """
  if objective not in ELBO_OBJECTIVES:
    raise ValueError(f'no score-function cost for objective {objective!r}.')

  def one(x, k):
    q = model.posterior(params, x)
    z = q.sample(k)
    f = model.log_likelihood_fn(params, x)(z)
    if objective == 'elbo_mc_kl':
      f += jnp.sum(model.prior().log_prob(z)) - jnp.sum(q.log_prob(z))
    return f

  keys = jax.random.split(key, batch.shape[0])
  return jax.lax.stop_gradient(jnp.mean(jax.vmap(one)(batch, keys)))


def train_checkpoints(model: image_vae.VAE, images: np.ndarray,
                      steps: Sequence[int], key: PRNGKey, batch_size: int = 32,
                      learning_rate: float = 1e-3, objective: str = 'elbo',
                      num_samples: int = 1,
                      baseline_objectives: Sequence[str] = ELBO_OBJECTIVES,
                      baseline_decay: float = 0.9) -> list[Checkpoint]:
  """Trains with Adam on the pathwise bound; returns the params at `steps`.

  Each step maximizes batch_surrogate(objective, 'pathwise', num_samples) on
  the next minibatch (epochs shuffled by `data.epoch_batches`) and updates
  b ← decay·b + (1-decay)·score_cost(x_batch) with the pre-update params for
  every baseline objective (b starts at the first batch's cost).

  Args:
    model: the VAE.
    images: training images [N, data_dim].
    steps: the steps (≥ 0) at which to keep a checkpoint.
    key: PRNG key (init, batch order and samples derive from it).
    batch_size: training minibatch size.
    learning_rate: Adam step size.
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
  init_key, order_key, step_key, cost_key = jax.random.split(key, 4)
  params = model.init(init_key)
  opt = optax.adam(learning_rate)
  opt_state = opt.init(params)
  per_epoch = len(images) // batch_size
  if per_epoch == 0:
    raise ValueError(f'batch_size {batch_size} > {len(images)} examples.')
  order_seed = int(jax.random.randint(order_key, (), 0, 2**31 - 1))

  @jax.jit
  def train_step(params, opt_state, baselines, batch, key):
    loss_key, cost_key = jax.random.split(key)
    loss = lambda p: -image_vae.batch_surrogate(
        model, p, batch, loss_key, objective, 'pathwise', num_samples)
    grads = jax.grad(loss)(params)
    baselines = {o: control_variates.moving_average_update(
        b, score_cost(model, params, batch, cost_key, o), baseline_decay)
                 for o, b in baselines.items()}
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, baselines

  first = data_lib.epoch_batches(images, batch_size, order_seed, 0)[0]
  cost = jax.jit(score_cost, static_argnums=(0, 4))
  baselines = {o: cost(model, params, first, cost_key, o)
               for o in baseline_objectives}
  checkpoints, epoch_data = [], None
  for t in range(steps[-1] + 1):
    if t in steps:
      checkpoints.append(Checkpoint(t, params, {o: float(b) for o, b in
                                                baselines.items()}))
    if t == steps[-1]:
      break
    epoch, i = divmod(t, per_epoch)
    if i == 0:
      epoch_data = data_lib.epoch_batches(images, batch_size, order_seed, epoch)
    params, opt_state, baselines = train_step(
        params, opt_state, baselines, epoch_data[i],
        jax.random.fold_in(step_key, t))
  return checkpoints


def _flat_grads(model, objective, estimator, num_samples):
  """(params, batch, key, baseline) -> (bound, {group: flat gradient})."""
  def fn(params, batch, key, baseline):
    value, grads = jax.value_and_grad(
        lambda p: image_vae.batch_surrogate(
            model, p, batch, key, objective, estimator, num_samples,
            baseline=baseline if estimator == 'score_moving_average' else None))(
                params)
    return value, {g: flatten_util.ravel_pytree(grads[g])[0] for g in GROUPS}
  return fn


def _chunk(num_draws: int, per_draw: int) -> int:
  """The largest divisor of D, ≤ _MAX_CHUNK_DRAWS, within the logit budget."""
  chunk = max(1, min(num_draws, _MAX_CHUNK_DRAWS,
                     _MAX_CHUNK_LOGITS // max(per_draw, 1)))
  while num_draws % chunk:
    chunk -= 1
  return chunk


def _cosine(a: Array, b: Array) -> Array:
  """cos(a, b) = a·b / (|a| |b|) over the last axis (0 if either is 0)."""
  denom = jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1)
  return jnp.where(denom > 0, (a @ b) / jnp.where(denom > 0, denom, 1.0), 0.0)


def _chunk_stats(flat: Array, reference: Array):
  """Mean, M2 = Σ (x - mean)², x·g_ref and |x|² of a chunk of draws [c, P].

  Sums over the draws are vector-matrix products (weights @ flat): XLA:CPU
  reduces over a leading axis far slower than it multiplies matrices.
  """
  weights = jnp.full((flat.shape[0],), 1.0 / flat.shape[0], flat.dtype)
  mean = weights @ flat
  m2 = (weights * flat.shape[0]) @ (flat - mean)**2
  return mean, m2, flat @ reference, jnp.sum(flat**2, axis=1)


def _merge(acc, chunk_stats, n_old: int, n_new: int):
  """Chan et al.'s parallel update of (mean, M2) with a chunk of n_new draws."""
  mean, m2 = acc
  c_mean, c_m2 = chunk_stats
  delta = c_mean - mean
  total = n_old + n_new
  return (mean + delta * (n_new / total),
          m2 + c_m2 + delta**2 * (n_old * n_new / total))


@functools.lru_cache(maxsize=None)
def draw_fn(model: image_vae.VAE, objective: str, estimators: tuple[str, ...],
            num_samples: int, num_draws: int, batch_size: int,
            common_random_numbers: bool = True):
  """The jitted study of (objective, N): D draws of every estimator at once.

  fn(params, batch, key, baseline, reference) splits `key` into D draw keys
  and vmaps over them, chunk by chunk in a `lax.scan` that keeps only running
  moments (Chan et al.'s parallel mean/M2 update), so memory is one chunk.
  With common random numbers every estimator of a draw uses the same key,
  hence the same z samples (paired comparisons; XLA shares the sampling and
  forward passes); otherwise estimator e uses fold_in(key_d, index of e in
  ESTIMATORS_FOR[objective]). Returns {e: {'bound': [D] bound estimates,
  group: {'mean': [P], 'variance': [P] (ddof=1), 'cosines': [D] cos(ĝ_d,
  g_ref), 'cosine_of_mean': cos(ḡ, g_ref)}}}, `reference` being {group:
  flat g_ref}.
  """
  if num_draws < 2:
    raise ValueError(f'num_draws must be >= 2, got {num_draws}.')
  grads = {e: _flat_grads(model, objective, e, num_samples) for e in estimators}
  index = {e: registry.index(e) for e in estimators}
  chunk = _chunk(num_draws, batch_size * num_samples * model.data_dim)
  num_chunks = num_draws // chunk

  def one_draw(params, batch, key, baseline):
    return {e: grads[e](params, batch, key if common_random_numbers else
                        jax.random.fold_in(key, index[e]), baseline)
            for e in estimators}

  def fn(params, batch, key, baseline, reference):
    keys = jax.random.split(key, num_draws)
    keys = keys.reshape((num_chunks, chunk) + keys.shape[1:])

    def body(carry, xs):
      i, ks = xs
      draws = jax.vmap(lambda k: one_draw(params, batch, k, baseline))(ks)
      new, per_draw = {}, {}
      for e, (bound, flat) in draws.items():
        per_draw[e] = {'bound': bound}
        for g in GROUPS:
          mean, m2, dot, sq = _chunk_stats(flat[g], reference[g])
          new[e, g] = _merge(carry[e, g], (mean, m2), i * chunk, chunk)
          per_draw[e][g] = (dot, sq)
      return new, per_draw

    init = {(e, g): (jnp.zeros_like(reference[g]), jnp.zeros_like(
        reference[g])) for e in estimators for g in GROUPS}
    moments, per_draw = jax.lax.scan(body, init,
                                     (jnp.arange(num_chunks), keys))
    out = {}
    for e in estimators:
      out[e] = {'bound': per_draw[e]['bound'].reshape(num_draws)}
      for g in GROUPS:
        mean, m2 = moments[e, g]
        dot, sq = (a.reshape(num_draws) for a in per_draw[e][g])
        ref_norm = jnp.linalg.norm(reference[g])
        denom = jnp.sqrt(sq) * ref_norm
        out[e][g] = {
            'mean': mean, 'variance': m2 / (num_draws - 1),
            'cosines': jnp.where(denom > 0, dot / jnp.where(denom > 0, denom,
                                                            1.0), 0.0),
            'cosine_of_mean': _cosine(mean, reference[g])}
    return out

  return jax.jit(fn)


def reference_estimator(objective: str) -> str:
  """The estimator averaged into g_ref: 'dreg' for iwae, else 'pathwise'."""
  return 'dreg' if objective == 'iwae' else 'pathwise'


def reference_num_samples(objective: str, num_samples: int,
                          all_num_samples: Sequence[int]) -> int:
  """N of g_ref: the largest N for the ELBOs (∇ELBO is N-free), else K."""
  return max(all_num_samples) if objective in ELBO_OBJECTIVES else num_samples


def _key_for(base: PRNGKey, *ids: int) -> PRNGKey:
  for i in ids:
    base = jax.random.fold_in(base, i)
  return base


def summarize(stats) -> dict[str, float]:
  """Scalar statistics of one group of one estimator (float64).

  total_variance = Σ_p var_p; snr = mean_p |m_p|/s_p and snr_median over
  coordinates with s_p > 0; cosine_to_reference = mean_d cos(ĝ_d, g_ref);
  cosine_of_mean_to_reference = cos(ḡ, g_ref); mean_norm = |ḡ|.

  Args:
    stats: `draw_fn(...)(...)[estimator][group]`.

  Returns:
    The statistics.
  """
  mean = np.asarray(stats['mean'], np.float64)
  var = np.asarray(stats['variance'], np.float64)
  std = np.sqrt(var)
  snr = np.abs(mean[std > 0]) / std[std > 0]
  return {
      'num_params': int(mean.size),
      'total_variance': float(var.sum()),
      'snr': float(snr.mean()) if snr.size else None,
      'snr_median': float(np.median(snr)) if snr.size else None,
      'cosine_to_reference': float(np.mean(np.asarray(stats['cosines'],
                                                      np.float64))),
      'cosine_of_mean_to_reference': float(stats['cosine_of_mean']),
      'mean_norm': float(np.linalg.norm(mean)),
  }


def compile_draw_fns(model: image_vae.VAE,
                     specs: Sequence[tuple[str, tuple[str, ...], int]],
                     example_args: tuple, num_draws: int, batch_size: int,
                     common_random_numbers: bool = True,
                     workers: int | None = None):
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

  Returns:
    ({spec: compiled function}, [compile-time records]).
  """
  specs = list(dict.fromkeys(specs))
  lowered = [draw_fn(model, o, tuple(e), n, num_draws, batch_size,
                     common_random_numbers).lower(*example_args)
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


def _plan(estimators_for, num_samples):
  """{(objective, N): the estimators its call runs}, reference ones included."""
  plan = {}
  for obj, requested in estimators_for.items():
    for n in num_samples:
      ests = [e for e in requested if n >= MIN_SAMPLES.get(e, 1)]
      if (n == reference_num_samples(obj, n, num_samples) and
          reference_estimator(obj) not in ests):
        ests.append(reference_estimator(obj))
      plan[obj, n] = tuple(ests)
  return plan


def study(model: image_vae.VAE, checkpoints: Sequence[Checkpoint],
          batch: Array, estimators_for: dict[str, Sequence[str]],
          num_samples: Sequence[int], num_draws: int, reference_draws: int,
          seed: int, common_random_numbers: bool = True,
          workers: int | None = None
          ) -> tuple[list[Record], dict[str, list[Record]]]:
  """Statistics of every (objective, estimator, N) at every checkpoint.

  For each checkpoint, objective and N, one call of the compiled
  `draw_fn(objective, estimators, N)` draws D estimates of every estimator;
  g_ref averages ⌈R/D⌉ more calls' `reference_estimator` draws at
  `reference_num_samples` (independent keys). Estimators that cannot run at
  N (score_rloo, vimco with N < 2) are skipped. Keys derive from (seed,
  objective, N, step) only.

  Args:
    model: the VAE.
    checkpoints: from `train_checkpoints`.
    batch: the fixed minibatch x, [B, data_dim].
    estimators_for: {objective: estimators} (valid per
      `objectives.ESTIMATORS_FOR`).
    num_samples: sample counts N (K for iwae).
    num_draws: D ≥ 2 estimates per configuration.
    reference_draws: R ≥ 1, rounded up to a multiple of D.
    seed: PRNG seed.
    common_random_numbers: share each draw's samples among the estimators.
    workers: compile threads (see `compile_draw_fns`).

  Returns:
    (records, timings). Records: objective, estimator, group, step,
    num_samples, num_draws, batch_size, the `summarize` fields, bound (mean
    bound estimate), baseline (score_moving_average's b, else None),
    common_random_numbers, reference_estimator, reference_num_samples,
    reference_draws, reference_norm. timings: {'draws': per (objective, N,
    step) the wall seconds of one compiled call divided by D
    ('seconds_per_draw', all of its estimators together), 'compile': compile
    seconds per compiled function}.
  """
  if reference_draws < 1:
    raise ValueError(f'reference_draws must be >= 1, got {reference_draws}.')
  batch = jnp.asarray(batch)
  base = jax.random.PRNGKey(seed)
  calls = -(-reference_draws // num_draws)
  zeros = {g: jnp.zeros_like(flatten_util.ravel_pytree(
      checkpoints[0].params[g])[0]) for g in GROUPS}
  plan = _plan(estimators_for, num_samples)
  fns, compile_records = compile_draw_fns(
      model, [(o, e, n) for (o, n), e in plan.items()],
      (checkpoints[0].params, batch, base, jnp.float32(0.0), zeros),
      num_draws, batch.shape[0], common_random_numbers, workers)
  records, draw_times = [], []
  for ck in checkpoints:
    for obj, requested in estimators_for.items():
      oi = objectives.OBJECTIVES.index(obj)
      baseline = jnp.float32(ck.baselines.get(obj, 0.0))
      ref_est = reference_estimator(obj)
      refs = {}
      for n in num_samples:
        ref_n = reference_num_samples(obj, n, num_samples)
        if ref_n not in refs:
          fn = fns[obj, plan[obj, ref_n], ref_n]
          ref_outs = [fn(ck.params, batch,
                         _key_for(base, 1, oi, ref_n, ck.step, c), baseline,
                         zeros)[ref_est] for c in range(calls)]
          # Blocks, so that the timed call below does not wait for these.
          refs[ref_n] = jax.block_until_ready(
              {g: sum(o[g]['mean'] for o in ref_outs) / calls for g in GROUPS})
        out, seconds = _timed(fns[obj, plan[obj, n], n], ck.params, batch,
                              _key_for(base, 2, oi, n, ck.step), baseline,
                              refs[ref_n])
        draw_times.append({
            'objective': obj, 'num_samples': n, 'step': ck.step,
            'estimators': ','.join(plan[obj, n]),
            'seconds_per_draw': seconds / num_draws})
        for est in requested:
          if est not in out:
            continue
          for g in GROUPS:
            records.append({
                'objective': obj, 'estimator': est, 'group': g,
                'step': ck.step, 'num_samples': n, 'num_draws': num_draws,
                'batch_size': int(batch.shape[0]),
                **summarize(out[est][g]),
                'bound': float(np.mean(np.asarray(out[est]['bound'],
                                                  np.float64))),
                'baseline': (ck.baselines.get(obj)
                             if est == 'score_moving_average' else None),
                'common_random_numbers': common_random_numbers,
                'reference_estimator': ref_est,
                'reference_num_samples': ref_n,
                'reference_draws': calls * num_draws,
                'reference_norm': float(np.linalg.norm(np.asarray(
                    refs[ref_n][g], np.float64))),
            })
  return records, {'draws': draw_times, 'compile': compile_records}


def time_estimators(model: image_vae.VAE, checkpoint: Checkpoint,
                    batch: Array, estimators_for: dict[str, Sequence[str]],
                    num_samples: Sequence[int], num_draws: int, seed: int,
                    workers: int | None = None) -> list[Record]:
  """Wall time of each estimator alone: one compiled D-draw call, divided by D.

  Compiles `draw_fn(objective, (estimator,), N)` for every configuration (the
  study's calls run all estimators of an objective together), runs it once
  at `checkpoint`, and reports seconds_per_estimate and compile_seconds.
  """
  batch = jnp.asarray(batch)
  base = jax.random.PRNGKey(seed)
  zeros = {g: jnp.zeros_like(flatten_util.ravel_pytree(
      checkpoint.params[g])[0]) for g in GROUPS}
  specs = [(o, (e,), n) for o, ests in estimators_for.items() for e in ests
           for n in num_samples if n >= MIN_SAMPLES.get(e, 1)]
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
