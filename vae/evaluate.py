"""Evaluating a trained model (any `vae.model.Model`): test log-likelihood,
bounds, active units, pictures. Returns numbers and arrays; writes no files.

The test log-likelihood is the importance-sampling estimate with q(z|x) as
proposal (Burda et al., 2015),

    log p(x) ≈ log (1/K) Σ_k w_k,   w_k = p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q,

a stochastic lower bound (= IWAE_K) that is tight as K → ∞ (K = 5000 by
default), from the one importance-sampling engine (`vae.importance`: chunks
of C samples for B images decoded together in a `lax.scan`); the same
samples give the ELBO and IWAE_k for smaller k (K/k disjoint groups).

Beside it, on the first `ais_images` of the same images (`AISConfig`,
off by default), annealed importance sampling (`vae.ais`, T distributions
from q(z|x) to p(z|x), S chains) gives a second, far tighter estimate
(`ais_summary`); and on images simulated from the model, where an exact
posterior sample is known, BDMC brackets log p(x) from both sides
(`bdmc_records`): the bracket's width is what remains unknown about log p(x)
at that T.
"""

import functools
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vae import ais as ais_lib
from vae import config as cfg
from vae import data
from vae import importance
from vae import model as model_lib
from vae import stats
from vae import types

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey

# Active units (Burda et al., 2015): Cov_x(E_q[z_u | x]) > 1e-2.
ACTIVE_UNIT_THRESHOLD = 1e-2
# The per-image values `evaluate` returns in `Evaluation.per_image`.
PER_IMAGE_KEYS = ('log_px', 'log_px_se', 'elbo', 'kl')
# Test images of dynamically binarized datasets are binarized once, with
# this seed, so that every model sees the same test set.
TEST_BINARIZATION_SEED = 1234
# Most rows (images x samples) decoded in one matmul: 2^20 rows of 784
# float32 logits are 3.3 GB.
MAX_ROWS = 2**20


@cfg.settings
class EvalConfig:
  """The final evaluation: importance sampling, bounds, pictures."""
  eval_k: int = cfg.setting(
      5000, 'Importance samples K for the test log-likelihood.', min=1,
      max=10**6)
  eval_batch_size: int = cfg.setting(100, 'Test images decoded together.',
                                     min=1, max=10_000)
  eval_chunk_size: int = cfg.setting(
      100, 'Samples per image decoded together.', min=1, max=10_000)
  eval_iwae_ks: tuple[int, ...] = cfg.setting(
      (1, 5, 50), 'k of the test IWAE_k bounds to report (the training k is '
      'added when it divides eval_chunk_size).', min=1, max=10_000)
  num_eval: int | None = cfg.setting(
      None, 'Evaluate on the first num_eval test images (default: all).',
      min=1, max=10**6)
  pictures: bool = cfg.setting(
      True, 'Write prior samples, reconstructions and inpainting PNGs.')
  ais: ais_lib.AISConfig = ais_lib.AISConfig()

  def check(self):
    """K = m·chunk; every k divides the chunk; rows per matmul bounded;
    AIS on at most the evaluated images."""
    if self.num_eval is not None and self.ais.ais_images > self.num_eval:
      raise ValueError(f'ais_images: {self.ais.ais_images} is more than the '
                       f'num_eval {self.num_eval} evaluated images.')
    chunk = min(self.eval_chunk_size, self.eval_k)
    if self.eval_k % chunk:
      raise ValueError(f'eval_k: {self.eval_k} must be a multiple of '
                       f'eval_chunk_size {chunk}.')
    bad = [k for k in self.eval_iwae_ks if chunk % k]
    if bad:
      raise ValueError(f'eval_iwae_ks: {", ".join(map(str, bad))} must '
                       f'divide the chunk size {chunk}.')
    if self.eval_batch_size * chunk > MAX_ROWS:
      raise ValueError(f'eval_batch_size x eval_chunk_size = '
                       f'{self.eval_batch_size * chunk} rows per matmul; at '
                       f'most {MAX_ROWS}.')

  def iwae_ks(self, train_k: int | None = None) -> tuple[int, ...]:
    """The sorted k of the IWAE_k bounds: eval_iwae_ks, and train_k if it
    divides the chunk size."""
    chunk = min(self.eval_chunk_size, self.eval_k)
    extra = (train_k,) if train_k is not None and chunk % train_k == 0 else ()
    return tuple(sorted(set(self.eval_iwae_ks + extra)))


def test_images(dataset: data.Dataset, split: str = 'test') -> np.ndarray:
  """The binary evaluation images: as they are, or binarized once (dynamic)."""
  images = dataset.split(split)
  if dataset.binarization == 'dynamic':
    images = np.asarray(data.binarize(TEST_BINARIZATION_SEED, images))
  return images


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _batch_bounds(model, params, x, key, objective, num_samples):
  # The bounds of example_surrogate(x_b, split(key, B)[b], 'pathwise').
  return model_lib.pathwise_bounds(model, params, x, key, objective, 1.0,
                                   num_samples)


def mean_bound(model: model_lib.Model, params: Params,
               images: np.ndarray | Array,
               key: PRNGKey, objective: str = 'elbo', num_samples: int = 1,
               batch_size: int = 500) -> float:
  """(1/N) Σ_n L_k(x_n): the mean ELBO or IWAE_k bound (β = 1) of `images`.

  Args:
    model: the model.
    params: its parameters.
    images: [N, d] data.
    key: PRNG key (batch b uses fold_in(key, b)).
    objective: 'elbo', 'elbo_mc_kl' or 'iwae'.
    num_samples: k.
    batch_size: images per jitted call.

  Returns:
    The mean bound in nats.
  """
  values = importance.over_batches(
      lambda b, k, _: _batch_bounds(model, params, b, k, objective,
                                    num_samples), images, key, batch_size)
  return float(values.mean())


@functools.partial(jax.jit, static_argnums=0)
def _encoder_stats(model, params, x):
  q = model.encoder(params, x)
  return q.mean(), model_lib.elementwise_kl(q, model.prior(params))


def latent_statistics(model: model_lib.Model, params: Params,
                      images: np.ndarray, batch_size: int = 1000,
                      threshold: float = ACTIVE_UNIT_THRESHOLD
                      ) -> dict[str, np.ndarray | int]:
  """Activity A_u = Cov_x(E_q[z_u|x]), active units, mean KL per dimension.

    A_u = Var_x(μ_u(x)),  active = #{u: A_u > threshold},
    KL_u = (1/N) Σ_n KL(q(z_u|x_n) ‖ p(z_u))   (NaN without a closed form
    per dimension).

  Args:
    model: the VAE.
    params: its parameters.
    images: [N, d].
    batch_size: images per call.
    threshold: activity threshold (Burda et al.: 1e-2).

  Returns:
    {'activity': [D], 'active_units': int, 'kl_per_dim': [D]}.
  """
  batches, n = importance.pad(images, min(batch_size, len(images)))
  locs, kls = zip(*[_encoder_stats(model, params, b) for b in batches])
  loc = np.concatenate([np.asarray(v) for v in locs])[:n].astype(np.float64)
  kl = np.concatenate([np.asarray(v) for v in kls])[:n].astype(np.float64)
  activity = loc.var(0)
  return {'activity': activity,
          'active_units': int(np.sum(activity > threshold)),
          'kl_per_dim': kl.mean(0)}


# Pictures.


@functools.partial(jax.jit, static_argnums=0)
def prior_samples(model: model_lib.Model, params: Params, key: PRNGKey,
                  ) -> Array:
  """E[x|z], z ~ p(z): e.g. pixel probabilities of 100 prior samples."""
  z = model.prior(params).sample(key, (100,))
  return model.decoder(params, z).mean()


@functools.partial(jax.jit, static_argnums=0)
def reconstructions(model: model_lib.Model, params: Params, x: Array,
                    key: PRNGKey) -> Array:
  """E[x|z], z ~ q(z|x): e.g. pixel probabilities, one reconstruction each."""
  z = model.encoder(params, x).sample(key)
  return model.decoder(params, z).mean()


@functools.partial(jax.jit, static_argnums=(0, 5, 6))
def inpaint(model: model_lib.Model, params: Params, x: Array, key: PRNGKey,
            pixel_mean: Array, num_samples: int = 1000, num_draws: int = 5
            ) -> dict[str, Array]:
  """Fills the bottom half of images from their top half by importance sampling.

  The encoder sees x̃ = (top half of x, pixel mean below); with z_k ~ q(z|x̃),

    w_k ∝ p(x_top | z_k) p(z_k) / q(z_k | x̃),
    E[x_bottom | x_top] ≈ Σ_k w̄_k E[x|z_k]_bottom   (w̄: normalized w),

  and `num_draws` z's resampled with probabilities w̄ show single
  completions.

  Args:
    model: the model (its decoder factorizes over pixels).
    params: its parameters.
    x: [B, 784] images (the bottom half is only used for display).
    key: PRNG key.
    pixel_mean: [784] mean training image.
    num_samples: K.
    num_draws: resampled completions per image.

  Returns:
    {'masked': x̃, 'mean': top of x + weighted-mean bottom [B, 784],
     'draws': [B, num_draws, 784], 'ess': effective sample size [B]}.
  """
  top = (jnp.arange(x.shape[-1]) < x.shape[-1] // 2).astype(x.dtype)
  masked = top * x + (1 - top) * pixel_mean
  sample_key, draw_key = jax.random.split(key)

  def one(xi, mi, k1, k2):
    q = model.encoder(params, mi)
    z = q.sample(k1, (num_samples,))
    decoded = model.decoder(params, z)
    log_top = jnp.sum(top * decoded.log_prob(xi), -1)
    lw = log_top + (model_lib.event_log_prob(model.prior(params), z) -
                    model_lib.event_log_prob(q, z))
    w = jax.nn.softmax(lw)
    probs = decoded.mean()
    idx = jax.random.categorical(k2, lw, shape=(num_draws,))
    fill = lambda p: top * xi + (1 - top) * p
    return (fill(w @ probs), jax.vmap(fill)(probs[idx]),
            1.0 / jnp.sum(w**2))

  b = x.shape[0]
  mean, draws, ess = jax.vmap(one)(x, masked,
                                   jax.random.split(sample_key, b),
                                   jax.random.split(draw_key, b))
  return {'masked': masked, 'mean': mean, 'draws': draws, 'ess': ess}


def pictures(model: model_lib.Model, params: Params, images: np.ndarray,
             pixel_mean: np.ndarray, key: PRNGKey, num_images: int = 10
             ) -> dict[str, np.ndarray]:
  """Pixel probabilities to look at: prior samples, reconstructions, inpainting.

  With k1, k2, k3 = split(key, 3) and x the first `num_images` images:
  'prior_samples' E[x|z], z ~ p(z) (100, k1); 'images' x;
  'reconstructions' E[x|z], z ~ q(z|x) (k2); and `inpaint(x, k3)`'s
  'masked', 'mean', 'draws' and 'ess'.
  """
  k1, k2, k3 = jax.random.split(key, 3)
  x = jnp.asarray(images[:num_images])
  out = inpaint(model, params, x, k3, jnp.asarray(pixel_mean, jnp.float32))
  return jax.device_get({
      'prior_samples': prior_samples(model, params, k1), 'images': x,
      'reconstructions': reconstructions(model, params, x, k2), **out})


# AIS and BDMC.


def _mean_se(values: np.ndarray) -> tuple[float, float]:
  """(mean, sd / √n) over images (0 for one image)."""
  n = len(values)
  sd = float(np.std(values, ddof=1)) if n > 1 else 0.0
  return float(np.mean(values)), sd / np.sqrt(n)


def _mc_se(se: np.ndarray) -> float:
  """√(Σ_b se_b²) / n: the Monte Carlo error of a mean over images."""
  return float(np.sqrt(np.sum(np.square(se))) / len(se))


def ais_summary(model: model_lib.Model, params: Params, images: np.ndarray,
                is_log_px: np.ndarray, is_log_px_se: np.ndarray,
                config: ais_lib.AISConfig, key: PRNGKey,
                log: Callable[[str], None] | None = None
                ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
  """AIS and IS side by side on the first n = ais_images images.

  Per image b, AIS from the encoder's q (`vae.ais.ais`, T =
  ais_temperatures, S = ais_chains) gives log p̂_AIS(x_b) ± se_b (delta
  method over chains); IS gives log p̂_IS(x_b) ± se'_b (K samples, given).
  Means over the n images, with two SEs each: over images (sd / √n: which
  images were drawn) and Monte Carlo (√(Σ_b se_b²) / n: the estimators'
  noise for these images),

    ais_log_px   = (1/n) Σ_b log p̂_AIS(x_b),
    is_log_px    = (1/n) Σ_b log p̂_IS(x_b)   (the same images),
    ais_minus_is = (1/n) Σ_b (log p̂_AIS - log p̂_IS)(x_b)
                   (SE: sd of the paired differences / √n).

  Both are stochastic lower bounds on log p(x); the larger is the tighter.

  Args:
    model: the model (continuous latents).
    params: its parameters.
    images: [N, d], N ≥ ais_images; the first ais_images are used.
    is_log_px: [N] IS estimates of the same images.
    is_log_px_se: [N] their delta-method SEs.
    config: the AIS settings.
    key: PRNG key of `vae.ais.ais`.
    log: progress lines.

  Returns:
    (summary of floats, per-image arrays of `vae.ais.ais` [n]).
  """
  n = min(config.ais_images, len(images))
  x = np.asarray(images[:n])
  if log is not None:
    log(f'AIS on {n} images: T={config.ais_temperatures}, '
        f'{config.ais_chains} chains, {config.ais_leapfrog} leapfrog steps')
  wall = time.time()
  per_image = ais_lib.ais(model, params, x, key,
                          batch_size=config.ais_batch_size, log=log,
                          num_temperatures=config.ais_temperatures,
                          **config.options())
  wall = time.time() - wall
  a, i = per_image['log_px'], np.asarray(is_log_px[:n], np.float64)
  i_se = np.asarray(is_log_px_se[:n], np.float64)
  summary: dict[str, float] = {}
  for name, v, se in (('ais', a, per_image['log_px_se']), ('is', i, i_se)):
    mean, se_images = _mean_se(v)
    summary.update({f'{name}_log_px': mean,
                    f'{name}_log_px_se_images': se_images,
                    f'{name}_log_px_se_mc': _mc_se(se)})
  diff, diff_se = _mean_se(a - i)
  summary.update(
      ais_minus_is=diff, ais_minus_is_se=diff_se,
      ais_ess=float(np.mean(per_image['ess'])),
      ais_acceptance=float(np.mean(per_image['acceptance'])),
      ais_images=n, ais_temperatures=config.ais_temperatures,
      ais_chains=config.ais_chains, ais_wall_s=wall)
  if log is not None:
    log(f'AIS took {wall:.1f} s: log p̂ {summary["ais_log_px"]:.3f} (IS '
        f'{summary["is_log_px"]:.3f}; AIS - IS {diff:.3f} ± {diff_se:.3f})')
  return summary, per_image


def bdmc_records(model: model_lib.Model, params: Params,
                 config: ais_lib.AISConfig, key: PRNGKey,
                 log: Callable[[str], None] | None = None) -> list[dict]:
  """The BDMC bracket on n = bdmc_images images simulated from the model.

  (x_b, z_b) with z_b ~ p(z), x_b ~ p(x|z_b) (`vae.ais.simulate`, key
  fold_in(key, 0)): z_b is an exact sample of p(z|x_b), so for each T in
  bdmc_temperatures (key fold_in(key, T)) forward AIS from q(z|x) and
  reverse AIS from z_b give (`vae.ais.bdmc_batch`)

    lower_b ≤ log p(x_b) ≤ upper_b   (in expectation),
    gap = (1/n) Σ_b (upper_b - lower_b),
    gap_one = (1/n) Σ_b (upper_one_b - lower_one_b)   (one-chain bracket),

  the error that remains in an AIS estimate at that T on such data
  (Grosse et al. 2015; Wu et al. 2017). Checks (one-sided, `stats.CHECKS`):
  E[gap] ≥ 0 and E[gap_one] ≥ 0 (exact), z = mean / (sd over images / √n).

  Returns:
    One row per T: kind 'bdmc', T, images, lower, upper, gap, gap_one (means
    over images) with their SEs over images, ESS and acceptance, wall_s.
  """
  n = config.bdmc_images
  x, z = ais_lib.simulate(model, params, jax.random.fold_in(key, 0), n)
  rows = []
  for t in config.bdmc_temperatures:
    if log is not None:
      log(f'BDMC on {n} simulated images: T={t}, {config.ais_chains} chains')
    wall = time.time()
    out = ais_lib.ais(model, params, np.asarray(x), jax.random.fold_in(key, t),
                      z_exact=z, batch_size=config.ais_batch_size,
                      num_temperatures=t, **config.options())
    row: dict[str, Any] = {'kind': 'bdmc', 'T': t, 'images': n}
    for name in ('lower', 'upper', 'gap', 'lower_one', 'upper_one',
                 'gap_one'):
      row[name], row[f'{name}_se'] = _mean_se(out[name])
    row.update(ess=float(np.mean(out['ess'])),
               acceptance=float(np.mean(out['acceptance'])),
               wall_s=time.time() - wall)
    row[stats.CHECKS] = [(row[g] / max(row[f'{g}_se'], 1e-12), 'lower')
                         for g in ('gap', 'gap_one')]
    if log is not None:
      log(f'  T={t}: lower {row["lower"]:.3f}, upper {row["upper"]:.3f}, '
          f'gap {row["gap"]:.3f} ± {row["gap_se"]:.3f} ({row["wall_s"]:.0f} s)')
    rows.append(row)
  return rows


class Evaluation(NamedTuple):
  """What `evaluate` returns.

  Attributes:
    summary: test_nll, test_nll_stderr, test_elbo, test_iwae_<k>, test_kl,
      test_elbo_infinite_images (images whose ELBO is -inf), active_units,
      eval_k, num_eval, split (nats; means over images); with AIS,
      `ais_summary`'s keys.
    latents: `latent_statistics` (activity, active_units, kl_per_dim).
    pictures: `pictures(...)` arrays, or None.
    timing: eval_wall_s and eval_cpu_s of the importance sampling (and
      ais_wall_s, bdmc_wall_s).
    brackets: `bdmc_records` (empty without BDMC).
    ais: without AIS None; else per image [n] `vae.ais.ais`'s 'log_px',
      'log_px_se', 'ess', 'acceptance' and the IS 'is_log_px',
      'is_log_px_se' of the same images.
    per_image: per evaluation image [n], in the order of `test_images`:
      'log_px' (log p̂(x_n), IS with K = eval_k), its 'log_px_se', 'elbo'
      and 'kl'; what paired comparisons of two models on the same images
      need (`vae.stats.paired_difference`).
  """
  summary: dict[str, Any]
  latents: dict[str, Any]
  pictures: dict[str, np.ndarray] | None
  timing: dict[str, float]
  brackets: list[dict] = []
  ais: dict[str, np.ndarray] | None = None
  per_image: dict[str, np.ndarray] | None = None


def evaluate(model: model_lib.Model, params: Params, dataset: data.Dataset,
             config: EvalConfig, seed: int = 0, train_k: int | None = None,
             split: str = 'test',
             log: Callable[[str], None] | None = None,
             progress: Callable[[int, int], None] | None = None,
             done: Sequence[Any] = (),
             on_batch: Callable[[int, Any], None] | None = None
             ) -> Evaluation:
  """Test NLL = -(1/N) Σ_n log p̂(x_n) (IS, K = eval_k), bounds, active units.

  Args:
    model: the model.
    params: its parameters.
    dataset: the data (`test_images` gives the evaluation images; the mean
      training image fills the inpainting).
    config: the evaluation settings.
    seed: keys are fold_in(PRNGKey(seed), 3) (IS), 4 (pictures), 5 (AIS)
      and 6 (BDMC).
    train_k: the training k (its IWAE_k is reported too, see `iwae_ks`).
    split: 'test' or 'validation'.
    log: progress lines.
    progress: called with (images done, N) after each batch of the
      importance sampling (`importance.importance_sampling`).
    done, on_batch: resume the importance sampling from the batches done
      by an interrupted call with the same arguments; each batch's outputs
      (`importance.importance_sampling`).

  Returns:
    The `Evaluation`.
  """
  images = test_images(dataset, split)[:config.num_eval]
  iwae_ks = config.iwae_ks(train_k)
  base = jax.random.PRNGKey(seed)
  if log is not None:
    log(f'evaluating on {len(images)} {split} images: importance sampling '
        f'with K={config.eval_k} ({min(config.eval_batch_size, len(images))} '
        f'images x {min(config.eval_chunk_size, config.eval_k)} samples per '
        'matmul)')
  wall, cpu = time.time(), time.process_time()
  per_image = importance.importance_sampling(
      model, params, images, jax.random.fold_in(base, 3), config.eval_k,
      iwae_ks=iwae_ks, batch_size=config.eval_batch_size,
      chunk_size=config.eval_chunk_size, log=log, progress=progress,
      done=done, on_batch=on_batch)
  wall, cpu = time.time() - wall, time.process_time() - cpu
  if log is not None:
    log(f'importance sampling took {wall:.1f} s wall, {cpu:.1f} s CPU')
  latents = latent_statistics(model, params, images)
  n = len(images)
  summary = {
      'test_nll': -per_image['log_px'].mean(),
      'test_nll_stderr': per_image['log_px'].std() / np.sqrt(n),
      'test_elbo': per_image['elbo'].mean(),
  }
  for k in iwae_ks:
    summary[f'test_iwae_{k}'] = per_image[f'iwae_{k}'].mean()
  infinite = int(np.sum(np.isneginf(per_image['elbo'])))
  summary.update(test_kl=per_image['kl'].mean(),
                 test_elbo_infinite_images=infinite,
                 active_units=latents['active_units'], eval_k=config.eval_k,
                 num_eval=n, split=split)
  if infinite and log is not None:
    finite = per_image['elbo'][np.isfinite(per_image['elbo'])]
    log(f'{infinite} of {n} images have ELBO = -inf (a draw of q where log '
        'p(z) or log p(x|z) is below the float range), so test_elbo is -inf '
        'and test_kl inf' + (f'; the other {finite.size} images: ELBO '
                             f'{finite.mean():.4f}.' if finite.size else '.'))
  summary = {k: (float(v) if isinstance(v, (float, np.floating)) else v)
             for k, v in summary.items()}
  timing = {'eval_wall_s': wall, 'eval_cpu_s': cpu}
  ais = None
  if config.ais.ais_images:
    extra, ais_out = ais_summary(model, params, images, per_image['log_px'],
                                 per_image['log_px_se'], config.ais,
                                 jax.random.fold_in(base, 5), log)
    timing['ais_wall_s'] = extra.pop('ais_wall_s')
    summary.update(extra)
    m = int(extra['ais_images'])
    ais = {**{k: ais_out[k] for k in ('log_px', 'log_px_se', 'ess',
                                      'acceptance')},
           'is_log_px': np.asarray(per_image['log_px'][:m]),
           'is_log_px_se': np.asarray(per_image['log_px_se'][:m])}
  brackets = []
  if config.ais.bdmc_images:
    brackets = bdmc_records(model, params, config.ais,
                            jax.random.fold_in(base, 6), log)
    timing['bdmc_wall_s'] = sum(r['wall_s'] for r in brackets)
  drawn = None
  if config.pictures:
    drawn = pictures(model, params, images,
                     np.asarray(dataset.train).mean(0),
                     jax.random.fold_in(base, 4))
  return Evaluation(summary, latents, drawn, timing, brackets, ais,
                    {k: np.asarray(per_image[k], np.float64)
                     for k in PER_IMAGE_KEYS})
