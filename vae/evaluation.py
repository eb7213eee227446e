"""Evaluating a trained VAE: test log-likelihood, bounds, active units, pictures.

The test log-likelihood is the importance-sampling estimate with q(z|x) as
proposal (Burda et al., 2015),

    log p(x) ≈ log (1/K) Σ_k w_k,   w_k = p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q,

a stochastic lower bound (= IWAE_K) that is tight as K → ∞ (K = 5000 by
default). `importance_sampling` computes it fast on CPU: a batch of B images
and a chunk of C samples per image are decoded in ONE matmul per layer
([C·B, d] rows), log-weights are accumulated with a running logsumexp in a
`lax.scan` over the K / C chunks, and the same samples also give the ELBO
(analytic KL) and IWAE_k for smaller k (K/k disjoint groups of k samples).
The Bernoulli log-likelihood is evaluated as
x·l - max(l, 0) - log1p(exp(-|l|)), cheaper than `jax.nn.softplus`.
"""

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

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


def test_images(dataset: data.Dataset, split: str = 'test') -> np.ndarray:
  """The binary evaluation images: as they are, or binarized once (dynamic)."""
  images = dataset.split(split)
  if dataset.binarization == 'dynamic':
    images = np.asarray(data.binarize(TEST_BINARIZATION_SEED, images))
  return images


def bernoulli_log_likelihood(x: Array, logits: Array) -> Array:
  """log p(x|l) = Σ_j x_j l_j - max(l_j, 0) - log1p(exp(-|l_j|)) (last axis)."""
  return jnp.sum(x * logits - jnp.maximum(logits, 0.0) -
                 jnp.log1p(jnp.exp(-jnp.abs(logits))), axis=-1)


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
  keys = jax.random.split(key, x.shape[0])
  return jax.vmap(lambda xi, k: image_vae.example_surrogate(
      model, params, xi, k, objective, 'pathwise', num_samples))(x, keys)


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
    logits = model.decoder.apply(params['decoder'],
                                 z.reshape(chunk_size * batch, -1))
    log_px_z = bernoulli_log_likelihood(
        x, logits.reshape(chunk_size, batch, -1))  # [C, B].
    lw = log_px_z + jnp.sum(prior.log_prob(z) - q.log_prob(z), -1)
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


def image_grid(images: np.ndarray, rows: int, cols: int,
               pad: int = 1) -> np.ndarray:
  """Tiles [rows·cols, 784] images into one [rows·29+1, cols·29+1] array."""
  images = np.asarray(images).reshape((-1,) + data.IMAGE_SHAPE)
  h, w = data.IMAGE_SHAPE
  grid = np.ones((rows * (h + pad) + pad, cols * (w + pad) + pad), np.float32)
  for i, image in enumerate(images[:rows * cols]):
    r, c = divmod(i, cols)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h,
         pad + c * (w + pad):pad + c * (w + pad) + w] = image
  return grid


def save_pictures(output_dir: str, model: image_vae.VAE, params: Params,
                  images: np.ndarray, pixel_mean: np.ndarray, key: PRNGKey,
                  num_images: int = 10) -> list[str]:
  """Writes prior_samples.png, reconstructions.png and inpainting.png.

  Args:
    output_dir: folder for the PNGs.
    model: the VAE.
    params: its parameters.
    images: test images (the first `num_images` are shown).
    pixel_mean: [784] mean training image (inpainting's fill-in).
    key: PRNG key.
    num_images: test images in the reconstruction and inpainting figures.

  Returns:
    The paths written.
  """
  import os  # pylint: disable=g-import-not-at-top
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from vae import results  # pylint: disable=g-import-not-at-top
  k1, k2, k3 = jax.random.split(key, 3)
  x = jnp.asarray(images[:num_images])
  n = x.shape[0]
  paths = []

  def save(grid, title, name, col_labels=None):
    fig, ax = plt.subplots(figsize=(grid.shape[1] / 29 * 0.9 + 0.6,
                                    grid.shape[0] / 29 * 0.9 + 0.6))
    ax.imshow(grid, cmap='gray', vmin=0, vmax=1, interpolation='nearest')
    ax.set_title(title, fontsize=8)
    ax.set_xticks([] if col_labels is None else
                  [14.5 + 29 * i for i in range(len(col_labels))])
    if col_labels is not None:
      ax.set_xticklabels(col_labels, fontsize=6, rotation=90)
    ax.set_yticks([])
    paths.append(results.save_figure(fig, os.path.join(output_dir, name)))

  samples = np.asarray(prior_samples(model, params, k1))
  save(image_grid(samples, 10, 10), 'samples from the prior: σ(D(z)), '
       'z ~ N(0, I)', 'prior_samples.png')
  recon = np.asarray(reconstructions(model, params, x, k2))
  pairs = np.stack([np.asarray(x), recon], 0)  # Row 0 inputs, row 1 recons.
  save(image_grid(pairs.reshape(2 * n, -1), 2, n),
       'top: test images; bottom: reconstructions σ(D(z)), z ~ q(z|x)',
       'reconstructions.png')
  out = inpaint(model, params, x, k3, jnp.asarray(pixel_mean, jnp.float32))
  cols = [np.asarray(x), np.asarray(out['masked']), np.asarray(out['mean'])]
  cols += [np.asarray(out['draws'][:, j]) for j in range(out['draws'].shape[1])]
  table = np.stack(cols, 1)  # [n, columns, 784]: one row per image.
  labels = ['original', 'observed top', 'weighted mean'] + [
      f'draw {j + 1}' for j in range(len(cols) - 3)]
  ess = np.asarray(out['ess'])
  save(image_grid(table.reshape(-1, table.shape[-1]), n, len(cols)),
       'inpainting the bottom half by importance sampling (K=1000; ESS '
       f'median {np.median(ess):.0f})', 'inpainting.png', labels)
  return paths


def iwae_ks_for(eval_k: int, chunk_size: int, ks: Sequence[int | str],
                train_k: int | None = None) -> tuple[int, ...]:
  """Checks the IS settings; the sorted IWAE k's (plus train_k if it fits).

  Raises:
    ValueError: eval_k is not a multiple of the chunk size, or a k does not
      divide the chunk size.
  """
  chunk = min(chunk_size, eval_k)
  if eval_k % chunk:
    raise ValueError(f'eval_k={eval_k} must be a multiple of the chunk size '
                     f'{chunk}.')
  try:
    ks = [int(k) for k in ks]
  except ValueError:
    raise ValueError(f'IWAE k values must be integers, got {ks}.') from None
  bad = [k for k in ks if k < 1 or chunk % k]
  if bad:
    raise ValueError(f'IWAE k values {bad} must divide the chunk size '
                     f'{chunk}.')
  if train_k is not None and chunk % train_k == 0:
    ks.append(train_k)
  return tuple(sorted(set(ks)))


def evaluate(model: image_vae.VAE, params: Params, dataset: data.Dataset,
             seed: int = 0, *, eval_k: int = 5000,
             iwae_ks: Sequence[int] = (1, 5, 50), batch_size: int = 100,
             chunk_size: int = 100, num_eval: int | None = None,
             split: str = 'test', output_dir: str | None = None,
             pictures: bool = True,
             log: Callable[[str], None] = print
             ) -> tuple[dict[str, float | int], dict[str, float]]:
  """Test NLL = -(1/N) Σ log p̂(x_n) (IS, K = eval_k), bounds, active units.

  Args:
    model: the VAE.
    params: its parameters.
    dataset: the data (`test_images` gives the evaluation images).
    seed: keys are fold_in(PRNGKey(seed), 3) (IS) and 4 (pictures).
    eval_k: K.
    iwae_ks: the k of the reported IWAE_k bounds.
    batch_size: see `importance_sampling`.
    chunk_size: see `importance_sampling`.
    num_eval: evaluate the first `num_eval` images (None: all).
    split: 'test' or 'validation'.
    output_dir: if given, write latents.json (activity, KL per dimension)
      and, with `pictures`, the PNGs of `save_pictures` there.
    pictures: write the PNGs.
    log: progress lines.

  Returns:
    (summary, timing): summary has test_nll, test_nll_stderr, test_elbo,
    test_iwae_<k>, test_kl, active_units, eval_k, num_eval (nats, means
    over images; 'test' is the split's name); timing has eval_wall_s and
    eval_cpu_s of the importance sampling.
  """
  import os  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  images = test_images(dataset, split)[:num_eval]
  base = jax.random.PRNGKey(seed)
  log(f'evaluating on {len(images)} {split} images: importance sampling '
      f'with K={eval_k} ({min(batch_size, len(images))} images x '
      f'{min(chunk_size, eval_k)} samples per matmul)')
  wall, cpu = time.time(), time.process_time()
  per_image = importance_sampling(
      model, params, images, jax.random.fold_in(base, 3), eval_k,
      iwae_ks=iwae_ks, batch_size=batch_size, chunk_size=chunk_size, log=log)
  wall, cpu = time.time() - wall, time.process_time() - cpu
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
                 active_units=latents['active_units'], eval_k=eval_k,
                 num_eval=n, split=split)
  summary = {k: (float(v) if isinstance(v, (float, np.floating)) else v)
             for k, v in summary.items()}
  if output_dir is not None:
    from vae import results  # pylint: disable=g-import-not-at-top
    results.write_json(os.path.join(output_dir, 'latents.json'), {
        'activity': latents['activity'], 'kl_per_dim': latents['kl_per_dim'],
        'active_unit_threshold': ACTIVE_UNIT_THRESHOLD})
    if pictures:
      pixel_mean = np.asarray(dataset.train).mean(0)
      save_pictures(output_dir, model, params, images, pixel_mean,
                    jax.random.fold_in(base, 4))
  return summary, {'eval_wall_s': wall, 'eval_cpu_s': cpu}
