"""Posterior collapse in numbers: I_q(x; z) and the ELBO-surgery split of KL.

Over N evaluation images x_1..x_N (x uniform over them), the average KL of
the ELBO splits exactly (Hoffman & Johnson 2016, "ELBO surgery") as

    KL̄ = (1/N) Σ_n KL(q(z|x_n) ‖ p(z)) = I_q(x; z) + KL(q(z) ‖ p(z)),
    q(z) = (1/N) Σ_n q(z|x_n)              (the aggregate posterior),
    I_q(x; z) = (1/N) Σ_n E_{q(z|x_n)}[log q(z|x_n) - log q(z)] ≤ log N.

A decoder that ignores z drives I_q to 0 (every q(z|x_n) the same); what
is left of KL̄ then is the mismatch KL(q(z) ‖ p(z)) of the aggregate
posterior to the prior, information the decoder never uses.
`mutual_information` estimates the three terms by Monte Carlo with their
standard errors; the active units (Burda et al.'s covariance criterion)
come from `vae.evaluate.latent_statistics`.
"""

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vae import model as model_lib
from vae import types

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey

# Samples z whose aggregate density q(z) is evaluated in one call: a block
# of b samples against the N posteriors is a [b, N, D] array.
MAX_BLOCK_ELEMENTS = 2**24


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _terms(model: model_lib.Model, params: Params, x: Array, key: PRNGKey,
           num_samples: int, block: int) -> tuple[Array, Array, Array]:
  """log q(z_ns|x_n), log q(z_ns), log p(z_ns), each [N, S]."""
  q = model.encoder(params, x)
  n = x.shape[0]
  z = model_lib.sample_per_example(q, key, num_samples)  # [N, S, D].
  own = model_lib.event_log_prob(model_lib.expand(q, 1), z)
  log_p = model_lib.event_log_prob(model.prior(params), z)
  flat = z.reshape((-1, z.shape[-1]))
  rows = flat.shape[0]
  pad = -(-rows // block) * block - rows
  blocks = jnp.concatenate([flat, jnp.zeros((pad, flat.shape[1]),
                                            flat.dtype)])
  every = model_lib.expand(q, 0)  # Batch [1, N, D].

  def aggregate(zb):  # log (1/N) Σ_m q(z|x_m) for zb [b, D].
    return jax.nn.logsumexp(model_lib.event_log_prob(every, zb[:, None]),
                            -1) - math.log(n)

  agg = jax.lax.map(aggregate, blocks.reshape((-1, block, flat.shape[1])))
  return own, agg.reshape(-1)[:rows].reshape(own.shape), log_p


def _mean_mc_se(values: np.ndarray) -> tuple[float, float]:
  """(mean, Monte Carlo SE) of g [N, S]: the mean over n and s, and
  √(Σ_n s_n² / S) / N with s_n² the sample variance over the S draws of
  image n (draws are independent across images and within an image)."""
  n, s = values.shape
  var = values.var(1, ddof=1) if s > 1 else np.full(n, np.nan)
  return float(values.mean()), float(np.sqrt(var.sum() / s) / n)


def mutual_information(model: model_lib.Model, params: Params,
                       images: np.ndarray | Array, key: PRNGKey,
                       num_samples: int = 10) -> dict[str, Any]:
  """I_q(x; z), KL(q(z) ‖ p(z)) and KL̄ with their Monte Carlo SEs.

  Draw z_ns ~ q(z|x_n), s = 1..S, for each of the N images (the encoder's
  samples, `model.sample_per_example`), and evaluate the aggregate
  posterior exactly, log q(z_ns) = logsumexp_m log q(z_ns|x_m) - log N
  (all N components: O(N² S D)). Then

    Î     = (1/NS) Σ_ns [log q(z_ns|x_n) - log q(z_ns)],
    KL̂_m  = (1/NS) Σ_ns [log q(z_ns) - log p(z_ns)],
    KL̂̄    = (1/NS) Σ_ns [log q(z_ns|x_n) - log p(z_ns)] = Î + KL̂_m

  (the split holds draw by draw, so exactly, up to float rounding).

  Bias. Given the N images each estimate is unbiased for its quantity over
  the empirical distribution of those images (x uniform on x_1..x_N): the
  aggregate density is computed exactly, not sampled, so the only error is
  the Monte Carlo error of the z draws, whose SE is √(Σ_n s_n² / S) / N
  (s_n² the variance over image n's S draws; draws independent). As an
  estimate of the mutual information under the data distribution, I_q over
  N images is biased low: q(z) includes the component q(z|x_n) of the image
  z came from, so its expectation over image sets is the InfoNCE lower bound
  with N samples (Poole et al. 2019), ≤ log N; the bias vanishes as N grows
  when I ≪ log N. The SEs here do not include the sampling of the images.

  Needs a q whose `event_log_prob` broadcasts samples [b, 1, D] against a
  batch [1, N, D] (a Gaussian q).

  Args:
    model: the model.
    params: its parameters.
    images: [N, d] evaluation images.
    key: PRNG key of the draws.
    num_samples: S ≥ 2 draws per image.

  Returns:
    {'mutual_information', 'mutual_information_se', 'marginal_kl',
     'marginal_kl_se', 'kl_mc', 'kl_mc_se', 'log_n', 'num_images',
     'num_samples'}: nats (floats), log N, N and S.
  """
  if num_samples < 2:
    raise ValueError(f'num_samples: {num_samples}; the Monte Carlo SE needs '
                     'at least 2 draws per image.')
  x = jnp.asarray(images, jnp.float32)
  n = x.shape[0]
  block = max(1, min(n * num_samples, MAX_BLOCK_ELEMENTS // max(
      n * model.latent_dim, 1)))
  own, agg, log_p = (np.asarray(a, np.float64) for a in _terms(
      model, params, x, key, num_samples, block))
  mi, mi_se = _mean_mc_se(own - agg)
  kl_m, kl_m_se = _mean_mc_se(agg - log_p)
  kl, kl_se = _mean_mc_se(own - log_p)
  return {'mutual_information': mi, 'mutual_information_se': mi_se,
          'marginal_kl': kl_m, 'marginal_kl_se': kl_m_se, 'kl_mc': kl,
          'kl_mc_se': kl_se, 'log_n': math.log(n), 'num_images': n,
          'num_samples': num_samples}
