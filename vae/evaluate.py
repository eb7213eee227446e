"""Evaluating a trained VAE: test log-likelihood, bounds, active units.

Returns numbers (and the arrays of pictures); writes no files.

The test log-likelihood is the importance-sampling estimate with q(z|x) as
proposal (Burda et al., 2015),

    log p(x) ≈ log (1/K) Σ_k w_k,   w_k = p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q,

a stochastic lower bound (= IWAE_K) that is tight as K → ∞ (K = 5000 by
default). `importance_sampling` computes it fast on CPU: a batch of B images
and a chunk of C samples per image are drawn together and decoded in
[c·B, d] matmuls (`image_vae.log_weights_blocked`: c·B ≈ 10^3 rows on CPU,
all C·B elsewhere), log-weights are accumulated with a running logsumexp in
a `lax.scan` over the K / C chunks, and the same samples also give the ELBO
(analytic KL) and IWAE_k for smaller k (K/k disjoint groups of k samples).
The Bernoulli log-likelihood is evaluated as
x·l - max(l, 0) - log1p(exp(-|l|)), cheaper than `jax.nn.softplus`
(`image_vae.bernoulli_log_likelihood`).
"""

import functools
import time
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vae import config as cfg
from vae import data
from vae import kl as kl_lib
from vae import types
from vae.models import image_vae

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey

# Active units (Burda et al., 2015): Cov_x(E_q[z_u | x]) > 1e-2.
ACTIVE_UNIT_THRESHOLD = 1e-2
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
      'added when it divides --eval_chunk_size).', min=1, max=10_000)
  num_eval: int | None = cfg.setting(
      None, 'Evaluate on the first num_eval test images (default: all).',
      min=1, max=10**6)
  pictures: bool = cfg.setting(
      True, 'Write prior samples, reconstructions and inpainting PNGs.')

  def check(self):
    """K = m·chunk; every k divides the chunk; rows per matmul bounded."""
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


# log p(x|l) = Σ_j x_j l_j - max(l_j, 0) - log1p(exp(-|l_j|)) (last axis).
bernoulli_log_likelihood = image_vae.bernoulli_log_likelihood


def _pad(images: np.ndarray, batch_size: int) -> tuple[np.ndarray, int]:
  """Images padded with zeros to whole batches, [num_batches, B, d]; n."""
  n = len(images)
  padded = -(-n // batch_size) * batch_size
  images = np.concatenate(
      [np.asarray(images, np.float32),
       np.zeros((padded - n,) + images.shape[1:], np.float32)])
  return images.reshape((-1, batch_size) + images.shape[1:]), n


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _batch_bounds(model, params, x, key, objective, num_samples):
  # The bounds of example_surrogate(x_b, split(key, B)[b], 'pathwise').
  noise = image_vae.batch_noise(key, x.shape[0], num_samples,
                                model.latent_dim)
  return image_vae.pathwise_bounds(model, params, x, noise, objective)


def mean_bound(model: image_vae.VAE, params: Params, images: np.ndarray,
               key: PRNGKey, objective: str = 'elbo', num_samples: int = 1,
               batch_size: int = 500) -> float:
  """(1/N) Σ_n L_k(x_n): the mean ELBO or IWAE_k bound (β = 1) of `images`.

  Args:
    model: the VAE.
    params: its parameters.
    images: [N, d] binary images.
    key: PRNG key (batch b uses fold_in(key, b)).
    objective: 'elbo', 'elbo_mc_kl' or 'iwae'.
    num_samples: k.
    batch_size: images per jitted call.

  Returns:
    The mean bound in nats.
  """
  batches, n = _pad(images, min(batch_size, len(images)))
  values = [_batch_bounds(model, params, b, jax.random.fold_in(key, i),
                          objective, num_samples)
            for i, b in enumerate(batches)]
  return float(np.concatenate([np.asarray(v) for v in values])[:n].mean())


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6))
def _importance_batch(model: image_vae.VAE, params: Params, x: Array,
                      key: PRNGKey, num_samples: int, chunk_size: int,
                      iwae_ks: tuple[int, ...]) -> dict[str, Array]:
  """Per-image log p(x), ELBO and IWAE_k for a batch x [B, d] (see module)."""
  q = model.posterior(params, x)  # Batch shape [B, D].
  prior = model.prior()
  num_chunks = num_samples // chunk_size
  batch = x.shape[0]

  def body(carry, chunk_key):
    log_sum, recon_sum, iwae_sums = carry
    z = q.sample(chunk_key, (chunk_size,))  # [C, B, D].
    lw, log_px_z = image_vae.log_weights_blocked(model, params, x, q, z)
    log_sum = jnp.logaddexp(log_sum, jax.nn.logsumexp(lw, 0))
    iwae_sums = tuple(
        s + jnp.sum(jax.nn.logsumexp(lw.reshape(chunk_size // k, k, batch), 1)
                    - jnp.log(float(k)), 0)
        for s, k in zip(iwae_sums, iwae_ks))
    return (log_sum, recon_sum + jnp.sum(log_px_z, 0), iwae_sums), None

  zeros = jnp.zeros((batch,), jnp.float32)
  init = (jnp.full((batch,), -jnp.inf, jnp.float32), zeros,
          tuple(zeros for _ in iwae_ks))
  (log_sum, recon_sum, iwae_sums), _ = jax.lax.scan(
      body, init, jax.random.split(key, num_chunks))
  kl = jnp.sum(kl_lib.kl_divergence(q, prior), -1)
  out = {'log_px': log_sum - jnp.log(float(num_samples)),
         'elbo': recon_sum / num_samples - kl, 'kl': kl}
  for k, s in zip(iwae_ks, iwae_sums):
    out[f'iwae_{k}'] = s / (num_samples // k)
  return out


def importance_sampling(model: image_vae.VAE, params: Params,
                        images: np.ndarray, key: PRNGKey,
                        num_samples: int = 5000,
                        iwae_ks: Sequence[int] = (),
                        batch_size: int = 100, chunk_size: int = 100,
                        log: Callable[[str], None] | None = None
                        ) -> dict[str, np.ndarray]:
  """Per-image importance-sampled log p(x), ELBO and IWAE_k bounds.

    log_px   = log (1/K) Σ_{k≤K} w_k                       (IS estimate, K)
    elbo     = (1/K) Σ_k log p(x|z_k) - KL(q(z|x) ‖ p(z))
    iwae_k   = (k/K) Σ_{groups g} log (1/k) Σ_{j∈g} w_j     (K/k groups)

  all from the same K samples z ~ q(z|x).

  Args:
    model: the VAE.
    params: its parameters.
    images: [N, d] binary images.
    key: PRNG key (batch b uses fold_in(key, b)).
    num_samples: K; a multiple of chunk_size (or smaller).
    iwae_ks: the k of the IWAE_k bounds to report; each must divide the
      chunk size.
    batch_size: images decoded together.
    chunk_size: samples per image decoded together (batch_size·chunk_size
      rows per matmul; about 10^4 is fast on CPU).
    log: if given, called with a progress line about every tenth of the way.

  Returns:
    {'log_px', 'elbo', 'kl', 'iwae_<k>'...}: float64 arrays [N].
  """
  chunk = min(chunk_size, num_samples)
  if num_samples % chunk:
    raise ValueError(f'num_samples={num_samples} must be a multiple of '
                     f'chunk_size={chunk}.')
  iwae_ks = tuple(int(k) for k in iwae_ks)
  for k in iwae_ks:
    if k < 1 or chunk % k:
      raise ValueError(f'IWAE k={k} must divide the chunk size {chunk}.')
  batch_size = min(batch_size, len(images))
  batches, n = _pad(images, batch_size)
  outs = []
  for i, b in enumerate(batches):
    outs.append(_importance_batch(model, params, b, jax.random.fold_in(key, i),
                                  num_samples, chunk, iwae_ks))
    if log is not None and (i + 1) % max(1, len(batches) // 10) == 0:
      jax.block_until_ready(outs[-1])
      log(f'  importance sampling: {min((i + 1) * batch_size, n)}/{n} images')
  return {name: np.concatenate([np.asarray(o[name], np.float64)
                                for o in outs])[:n] for name in outs[0]}


@functools.partial(jax.jit, static_argnums=0)
def _encoder_stats(model, params, x):
  q = model.posterior(params, x)
  return q.loc, kl_lib.kl_divergence(q, model.prior())


def latent_statistics(model: image_vae.VAE, params: Params,
                      images: np.ndarray, batch_size: int = 1000,
                      threshold: float = ACTIVE_UNIT_THRESHOLD
                      ) -> dict[str, np.ndarray | int]:
  """Activity A_u = Cov_x(E_q[z_u|x]), active units, mean KL per dimension.

    A_u = Var_x(μ_u(x)),  active = #{u: A_u > threshold},
    KL_u = (1/N) Σ_n KL(q(z_u|x_n) ‖ N(0, 1)).

  Args:
    model: the VAE.
    params: its parameters.
    images: [N, d].
    batch_size: images per call.
    threshold: activity threshold (Burda et al.: 1e-2).

  Returns:
    {'activity': [D], 'active_units': int, 'kl_per_dim': [D]}.
  """
  batches, n = _pad(images, min(batch_size, len(images)))
  locs, kls = zip(*[_encoder_stats(model, params, b) for b in batches])
  loc = np.concatenate([np.asarray(v) for v in locs])[:n].astype(np.float64)
  kl = np.concatenate([np.asarray(v) for v in kls])[:n].astype(np.float64)
  activity = loc.var(0)
  return {'activity': activity,
          'active_units': int(np.sum(activity > threshold)),
          'kl_per_dim': kl.mean(0)}


# Pictures.


@functools.partial(jax.jit, static_argnums=0)
def prior_samples(model: image_vae.VAE, params: Params, key: PRNGKey,
                  ) -> Array:
  """σ(D(z)), z ~ N(0, I): pixel probabilities of 100 prior samples."""
  z = jax.random.normal(key, (100, model.latent_dim))
  return jax.nn.sigmoid(model.decoder.apply(params['decoder'], z))


@functools.partial(jax.jit, static_argnums=0)
def reconstructions(model: image_vae.VAE, params: Params, x: Array,
                    key: PRNGKey) -> Array:
  """σ(D(z)), z ~ q(z|x): pixel probabilities of one reconstruction each."""
  z = model.posterior(params, x).sample(key)
  return jax.nn.sigmoid(model.decoder.apply(params['decoder'], z))


@functools.partial(jax.jit, static_argnums=(0, 5, 6))
def inpaint(model: image_vae.VAE, params: Params, x: Array, key: PRNGKey,
            pixel_mean: Array, num_samples: int = 1000, num_draws: int = 5
            ) -> dict[str, Array]:
  """Fills the bottom half of images from their top half by importance sampling.

  The encoder sees x̃ = (top half of x, pixel mean below); with z_k ~ q(z|x̃),

    w_k ∝ p(x_top | z_k) p(z_k) / q(z_k | x̃),
    E[x_bottom | x_top] ≈ Σ_k w̄_k σ(D(z_k))_bottom   (w̄: normalized w),

  and `num_draws` z's resampled with probabilities w̄ show single
  completions.

  Args:
    model: the VAE.
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
    q = model.posterior(params, mi)
    z = q.sample(k1, (num_samples,))
    logits = model.decoder.apply(params['decoder'], z)
    log_top = bernoulli_log_likelihood(xi * top, logits * top)
    lw = log_top + jnp.sum(model.prior().log_prob(z) - q.log_prob(z), -1)
    w = jax.nn.softmax(lw)
    probs = jax.nn.sigmoid(logits)
    idx = jax.random.categorical(k2, lw, shape=(num_draws,))
    fill = lambda p: top * xi + (1 - top) * p
    return (fill(w @ probs), jax.vmap(fill)(probs[idx]),
            1.0 / jnp.sum(w**2))

  b = x.shape[0]
  mean, draws, ess = jax.vmap(one)(x, masked,
                                   jax.random.split(sample_key, b),
                                   jax.random.split(draw_key, b))
  return {'masked': masked, 'mean': mean, 'draws': draws, 'ess': ess}


def pictures(model: image_vae.VAE, params: Params, images: np.ndarray,
             pixel_mean: np.ndarray, key: PRNGKey, num_images: int = 10
             ) -> dict[str, np.ndarray]:
  """Pixel probabilities to look at: prior samples, reconstructions, inpainting.

  With k1, k2, k3 = split(key, 3) and x the first `num_images` images:
  'prior_samples' σ(D(z)), z ~ N(0, I) (100, k1); 'images' x;
  'reconstructions' σ(D(z)), z ~ q(z|x) (k2); and `inpaint(x, k3)`'s
  'masked', 'mean', 'draws' and 'ess'.
  """
  k1, k2, k3 = jax.random.split(key, 3)
  x = jnp.asarray(images[:num_images])
  out = inpaint(model, params, x, k3, jnp.asarray(pixel_mean, jnp.float32))
  return jax.device_get({
      'prior_samples': prior_samples(model, params, k1), 'images': x,
      'reconstructions': reconstructions(model, params, x, k2), **out})


class Evaluation(NamedTuple):
  """What `evaluate` returns.

  Attributes:
    summary: test_nll, test_nll_stderr, test_elbo, test_iwae_<k>, test_kl,
      active_units, eval_k, num_eval, split (nats; means over images).
    latents: `latent_statistics` (activity, active_units, kl_per_dim).
    pictures: `pictures(...)` arrays, or None.
    timing: eval_wall_s and eval_cpu_s of the importance sampling.
  """
  summary: dict[str, Any]
  latents: dict[str, Any]
  pictures: dict[str, np.ndarray] | None
  timing: dict[str, float]


def evaluate(model: image_vae.VAE, params: Params, dataset: data.Dataset,
             config: EvalConfig, seed: int = 0, train_k: int | None = None,
             split: str = 'test',
             log: Callable[[str], None] | None = None) -> Evaluation:
  """Test NLL = -(1/N) Σ_n log p̂(x_n) (IS, K = eval_k), bounds, active units.

  Args:
    model: the VAE.
    params: its parameters.
    dataset: the data (`test_images` gives the evaluation images; the mean
      training image fills the inpainting).
    config: the evaluation settings.
    seed: keys are fold_in(PRNGKey(seed), 3) (IS) and 4 (pictures).
    train_k: the training k (its IWAE_k is reported too, see `iwae_ks`).
    split: 'test' or 'validation'.
    log: progress lines.

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
  per_image = importance_sampling(
      model, params, images, jax.random.fold_in(base, 3), config.eval_k,
      iwae_ks=iwae_ks, batch_size=config.eval_batch_size,
      chunk_size=config.eval_chunk_size, log=log)
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
  summary.update(test_kl=per_image['kl'].mean(),
                 active_units=latents['active_units'], eval_k=config.eval_k,
                 num_eval=n, split=split)
  summary = {k: (float(v) if isinstance(v, (float, np.floating)) else v)
             for k, v in summary.items()}
  drawn = None
  if config.pictures:
    drawn = pictures(model, params, images,
                     np.asarray(dataset.train).mean(0),
                     jax.random.fold_in(base, 4))
  return Evaluation(summary, latents, drawn, {'eval_wall_s': wall,
                                              'eval_cpu_s': cpu})
