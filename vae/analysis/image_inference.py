"""Inference in a trained image VAE, one image at a time: local Gaussian q's,
importance-sampled log p(x) by proposal and sample count, inference gaps.

A local q for image x_b is a Gaussian N(m_b, L_b L_bᵀ) with
L_b = diag(exp(s_b)) + strictly-lower(A_b), held as {'loc': m, 'log_diag':
s} ('diagonal') or with 'lower': A ('full_covariance'). With z = m + Lε,
ε ~ N(0, I),

    log q(z)      = Σ_j log N(ε_j; 0, 1) - Σ_j s_j,
    KL(q ‖ p(z))  = ½ (‖L‖²_F + ‖m‖² - D) - Σ_j s_j,
    ELBO(q; x)    = E_q[log p(x|z)] - KL(q ‖ p(z)),

and the prior is the local q with m = 0, s = 0. `fit` maximizes each
image's ELBO over its q by `vae.train` steps (pathwise gradient, decoder
fixed), `bounds` gives log p̂(x), IWAE_k and the ELBO of fixed q's from K
samples, `log_likelihood_by_k` the estimate log p̂_K(x) for K = 1, 2, 4, ...
from one stream of samples, and `gap_records` / `k_records` the checked
summaries (Cremer, Li & Duvenaud 2018; `vae.stats` tolerances).
"""

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.stats import norm

from vae import stats
from vae import train
from vae import types
from vae.models import image_vae
from vae.problems import importance_sampling as isl

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey
Local = dict[str, Array]

FAMILIES = ('diagonal', 'full_covariance')


def encoder_q(model: image_vae.VAE, params: Params, x: Array) -> Local:
  """The amortized q_φ(z|x_b) as a local q: m = μ_φ(x_b), s = log σ_φ(x_b)."""
  q = model.posterior(params, x)
  return {'loc': q.loc, 'log_diag': jnp.broadcast_to(q.log_scale,
                                                      q.loc.shape)}


def prior_q(batch_size: int, latent_dim: int) -> Local:
  """p(z) = N(0, I) as a local q for each of `batch_size` images."""
  zeros = jnp.zeros((batch_size, latent_dim), jnp.float32)
  return {'loc': zeros, 'log_diag': zeros}


def in_family(q: Local, family: str) -> Local:
  """q as a member of `family`: adds A = 0 for full_covariance.

  A diagonal q is a full-covariance one with A = 0 (the same density), so a
  fit in the larger family can start where the smaller one ended.
  """
  if family not in FAMILIES:
    raise ValueError(f'family must be one of {FAMILIES}, got {family!r}.')
  if family == 'diagonal' and 'lower' in q:
    raise ValueError('a full-covariance q is not a diagonal one.')
  if family == 'diagonal' or 'lower' in q:
    return q
  d = q['loc'].shape[-1]
  return {**q, 'lower': jnp.zeros(q['loc'].shape + (d,), q['loc'].dtype)}


def draw(q: Local, eps: Array) -> Array:
  """z = m + L ε for ε [B, S, D]: [B, S, D]."""
  z = q['loc'][:, None] + eps * jnp.exp(q['log_diag'])[:, None]
  if 'lower' in q:
    z = z + jnp.einsum('bij,bsj->bsi', jnp.tril(q['lower'], -1), eps)
  return z


def kl_to_prior(q: Local) -> Array:
  """KL(N(m, LLᵀ) ‖ N(0, I)) = ½(‖L‖²_F + ‖m‖² - D) - Σ_j s_j, per image."""
  s = q['log_diag']
  frob = jnp.sum(jnp.exp(2.0 * s), -1)
  if 'lower' in q:
    frob = frob + jnp.sum(jnp.tril(q['lower'], -1)**2, (-2, -1))
  mean_sq = jnp.sum(q['loc']**2, -1)
  return 0.5 * (frob + mean_sq - s.shape[-1]) - jnp.sum(s, -1)


def log_weights(model: image_vae.VAE, params: Params, x: Array, q: Local,
                eps: Array) -> tuple[Array, Array]:
  """(log w, log p(x|z)) [B, S] at z = m + Lε:

    log w = log p(x_b|z) + log p(z) - log q_b(z),
    log q_b(z) = Σ_j log N(ε_j; 0, 1) - Σ_j s_bj.
  """
  z = draw(q, eps)
  log_px = image_vae.bernoulli_log_likelihood(
      x[:, None], model.decoder.apply(params['decoder'], z))
  log_pz_over_q = jnp.sum(norm.logpdf(z) - norm.logpdf(eps), -1) + jnp.sum(
      q['log_diag'], -1)[:, None]
  return log_px + log_pz_over_q, log_px


@functools.partial(jax.jit, static_argnames=('model', 'num_steps',
                                             'num_samples', 'optimizer'))
def fit(model: image_vae.VAE, params: Params, x: Array, q: Local,
        key: PRNGKey, num_steps: int, num_samples: int,
        optimizer: train.OptimizerConfig) -> tuple[Local, Array]:
  """max_q Σ_b ELBO(q_b; x_b) over local q's, the decoder fixed.

  Each step t (key split(key, num_steps)[t]) estimates, for every image,

    ELBO_b ≈ (1/S) Σ_s log p(x_b | m_b + L_b ε_bs) - KL(q_b ‖ p(z)),

  and takes one `train.make_step` step on -Σ_b ELBO_b (pathwise gradient;
  the images' q's do not interact).

  Returns:
    (the fitted q, each image's ELBO estimate at each step [B, num_steps]).
  """
  opt = train.make_optimizer(optimizer, num_steps)
  shape = x.shape[:1] + (num_samples, model.latent_dim)

  def loss(qp, batch, k, baseline):
    del batch, baseline
    _, log_px = log_weights(model, params, x, qp, jax.random.normal(k, shape))
    elbo = jnp.mean(log_px, -1) - kl_to_prior(qp)
    return -jnp.sum(elbo), {'elbo': elbo}

  state, aux = train.fit(train.make_step(loss, opt), train.init_state(q, opt),
                         None, jax.random.split(key, num_steps))
  return state.params, aux['elbo'].T


def _chunks(num_samples: int, chunk_size: int) -> int:
  chunk = min(chunk_size, num_samples)
  if num_samples % chunk:
    raise ValueError(f'num_samples={num_samples} must be a multiple of '
                     f'chunk_size={chunk}.')
  return chunk


@functools.partial(jax.jit, static_argnames=('model', 'num_samples',
                                             'chunk_size', 'iwae_ks'))
def bounds(model: image_vae.VAE, params: Params, x: Array, q: Local,
           key: PRNGKey, num_samples: int, chunk_size: int = 100,
           iwae_ks: tuple[int, ...] = ()) -> dict[str, Array]:
  """Per image, from K samples z_k = m + Lε_k (chunks of C, a `lax.scan`):

    log_px    = log (1/K) Σ_k w_k                 (IS estimate = IWAE_K)
    log_px_se = √(Σ_k w_k² / (Σ_k w_k)² - 1/K)     (delta method, √(ρ̂/K))
    elbo      = (1/K) Σ_k log p(x|z_k) - KL(q ‖ p(z))
    elbo_se   = sd_k(log p(x|z_k)) / √K
    iwae_<k>  = (k/K) Σ_g log (1/k) Σ_{j∈g} w_j     (K/k groups; k | C)

  Sums of log p(x|z_k) are taken about log p(x|m) (rounding).

  Returns:
    {name: [B]}.
  """
  chunk = _chunks(num_samples, chunk_size)
  shape = x.shape[:1] + (chunk, model.latent_dim)
  shift = log_weights(model, params, x, q, jnp.zeros(shape[:1] + (1,) +
                                                     shape[2:]))[1][:, 0]

  def body(carry, k):
    lse, lse2, s1, s2, iw = carry
    lw, lp = log_weights(model, params, x, q, jax.random.normal(k, shape))
    d = lp - shift[:, None]
    iw = tuple(a + jnp.sum(jax.nn.logsumexp(lw.reshape(
        shape[0], chunk // j, j), -1), -1) for a, j in zip(iw, iwae_ks))
    return (jnp.logaddexp(lse, jax.nn.logsumexp(lw, -1)),
            jnp.logaddexp(lse2, jax.nn.logsumexp(2.0 * lw, -1)),
            s1 + jnp.sum(d, -1), s2 + jnp.sum(d**2, -1), iw), None

  zero = jnp.zeros(shape[:1])
  init = (zero - jnp.inf, zero - jnp.inf, zero, zero,
          tuple(zero for _ in iwae_ks))
  (lse, lse2, s1, s2, iw), _ = jax.lax.scan(
      body, init, jax.random.split(key, num_samples // chunk))
  k = float(num_samples)
  mean = s1 / k
  out = {'log_px': lse - jnp.log(k),
         'log_px_se': jnp.sqrt(jnp.maximum(jnp.exp(lse2 - 2 * lse) - 1 / k,
                                           0.0)),
         'elbo': shift + mean - kl_to_prior(q),
         'elbo_se': jnp.sqrt(jnp.maximum(s2 / k - mean**2, 0.0) / k)}
  for a, j in zip(iw, iwae_ks):
    out[f'iwae_{j}'] = (a - (num_samples // j) * math.log(j)) * j / k
  return out


@functools.partial(jax.jit, static_argnames=('model', 'max_log2_samples',
                                             'chunk_size'))
def log_likelihood_by_k(model: image_vae.VAE, params: Params, x: Array,
                        q: Local, key: PRNGKey, max_log2_samples: int,
                        chunk_size: int = 1024) -> tuple[Array, Array]:
  """log p̂_K(x_b) = log (1/K) Σ_{k≤K} w_k for K = 2^0 ... 2^max, one stream.

  The first K of 2^max weights w_k = p(x, z_k)/q(z_k), z_k ~ q_b, give the
  estimate with K samples (so estimates at different K are nested, as a
  sampler that keeps drawing would give them); weights are drawn in chunks
  of C = min(chunk_size, 2^max) (a power of 2) under `lax.scan`.

  Returns:
    (estimates [B, max + 1], log(1 + ρ̂) [B] with ρ̂ = K Σw²/(Σw)² - 1 over
    all 2^max weights).
  """
  k_max = 2**max_log2_samples
  chunk = _chunks(k_max, chunk_size)
  if chunk & (chunk - 1):
    raise ValueError(f'chunk_size={chunk} must be a power of 2.')
  shape = x.shape[:1] + (chunk, model.latent_dim)
  keys = jax.random.split(key, k_max // chunk)

  def sums(_, k):
    lw = log_weights(model, params, x, q, jax.random.normal(k, shape))[0]
    return None, (jax.nn.logsumexp(lw, -1), jax.nn.logsumexp(2.0 * lw, -1))

  first = log_weights(model, params, x, q, jax.random.normal(keys[0],
                                                             shape))[0]
  _, (rest, rest2) = jax.lax.scan(sums, None, keys[1:])
  lse = jnp.concatenate([jax.nn.logsumexp(first, -1)[None], rest])
  lse2 = jnp.concatenate([jax.nn.logsumexp(2.0 * first, -1)[None], rest2])
  cum = jax.lax.cumlogsumexp(lse, axis=0)  # [K_max / C, B].
  small = isl.running_log_mean_exp(first)[:, [2**i - 1 for i in range(
      chunk.bit_length())]]
  large = [cum[2**i - 1] - math.log(2**i * chunk) for i in range(
      1, (k_max // chunk).bit_length())]
  total = jax.nn.logsumexp(lse, 0)
  log_rho1 = jax.nn.logsumexp(lse2, 0) - 2 * total + math.log(k_max)
  return jnp.concatenate([small] + [v[:, None] for v in large], 1), log_rho1


def batched(fn, batch_size: int, key: PRNGKey, x: np.ndarray, q: Local,
            log: Callable[[str], None] | None = None, **kwargs):
  """fn(x_i, q_i, fold_in(key, i), **kwargs) over batches i of the images.

  Args:
    fn: a function of x, q and key (keywords) and `kwargs`.
    batch_size: images per call.
    key: PRNG key.
    x: images [N, d].
    q: their local q's (leading axis N).
    log: if given, called with a progress line about every tenth of the way.
    **kwargs: passed to fn.

  Returns:
    The batches' outputs (numpy pytrees) concatenated along their first
    axis, the images'.
  """
  outs, starts = [], range(0, len(x), batch_size)
  for i, start in enumerate(starts):
    part = slice(start, start + batch_size)
    outs.append(jax.device_get(fn(
        x=jnp.asarray(x[part]), q=jax.tree.map(lambda a: a[part], q),
        key=jax.random.fold_in(key, i), **kwargs)))
    if log is not None and (i + 1) % max(1, len(starts) // 10) == 0:
      log(f'  {min(start + batch_size, len(x))}/{len(x)} images')
  return jax.tree.map(lambda *a: np.concatenate(a), *outs)


def _z(diff, se: float) -> float:
  return float(np.mean(diff) / max(se, 1e-12))


def _se(*terms) -> float:
  """√(Σ_b Σ_terms se_b²) / B: the Monte Carlo error of a mean over images."""
  return math.sqrt(sum(float(np.sum(np.square(t))) for t in terms)) / len(
      terms[0])


def _mark(rows: list[dict], alpha: float) -> list[dict]:
  """min_z and disagrees (min_z below the Bonferroni threshold of all z)."""
  threshold = stats.z_threshold(max(1, sum(len(r['z']) for r in rows)),
                                alpha)
  for r in rows:
    zs = r.pop('z')
    r['min_z'] = min(zs) if zs else None
    if zs:
      r['disagrees'] = bool(r['min_z'] < -threshold)
  return rows


def gap_records(per_q: dict[str, dict[str, np.ndarray]],
                families: tuple[str, ...], alpha: float = 0.01
                ) -> list[dict]:
  """Means over images of each q's `bounds`, and the gaps of each family.

  per_q['amortized'] holds the encoder's q, per_q[f] the fitted q*_f
  (families in the order they were fitted, each from the last). With
  log p̂ = the largest mean log_px over the q's (each a stochastic lower
  bound on log p(x)):

    approximation_gap  = log p̂ - ELBO(q*_f),
    amortization_gap   = ELBO(q*_f) - ELBO(q_φ)   (Cremer et al. 2018),
    gain_over_previous = ELBO(q*_f) - ELBO(q* of the family before).

  Checks (`disagrees`, one-sided, Bonferroni over all checks; SE the Monte
  Carlo error √(Σ_b se_b²)/B of the per-image estimates): each q's
  E[IWAE_K] ≥ its ELBO (Burda et al. 2015), and the approximation gap, the
  amortization gap and the gain are ≥ 0 (each fit starts from the last q).
  """
  best = max(per_q, key=lambda n: float(np.mean(per_q[n]['log_px'])))
  px, enc = per_q[best], per_q['amortized']
  rows = [{'kind': 'q', 'q': name, **{k: float(np.mean(a)) for k, a in
                                      v.items() if not k.endswith('_se')},
           'log_px_se': _se(v['log_px_se']), 'elbo_se': _se(v['elbo_se']),
           'z': [_z(v['log_px'] - v['elbo'], _se(v['log_px_se'],
                                                  v['elbo_se']))]}
          for name, v in per_q.items()]
  previous = None
  for f in families:
    v = per_q[f]
    gap = lambda a, b: (float(np.mean(a['elbo'] - b['elbo'])),
                        _z(a['elbo'] - b['elbo'], _se(a['elbo_se'],
                                                      b['elbo_se'])))
    amortization, gain = gap(v, enc), gap(v, previous or enc)
    rows.append({
        'kind': 'gap', 'family': f, 'log_px': float(np.mean(px['log_px'])),
        'log_px_from': best, 'elbo_optimal_q': float(np.mean(v['elbo'])),
        'elbo_amortized': float(np.mean(enc['elbo'])),
        'approximation_gap': float(np.mean(px['log_px'] - v['elbo'])),
        'amortization_gap': amortization[0],
        'gain_over_previous': gain[0] if previous else None,
        'inference_gap': float(np.mean(px['log_px'] - enc['elbo'])),
        'z': [_z(px['log_px'] - v['elbo'], _se(px['log_px_se'],
                                                v['elbo_se'])),
              amortization[1]] + ([gain[1]] if previous else [])})
    previous = v
  return _mark(rows, alpha)


def k_records(estimates: dict[str, np.ndarray], reference: dict[str,
                                                                np.ndarray],
              reference_k: int, alpha: float = 0.01) -> list[dict]:
  """log p̂_K(x) - log p̂_ref(x) per proposal and K = 2^0, 2^1, ...

  estimates[p]: [B, R, n] `log_likelihood_by_k` of proposal p ('prior' or
  'encoder') in R independent streams; reference: `bounds` of the encoder's
  q with K_ref = reference_k independent samples (log_px, log_px_se). Per
  (p, K): mean, sd and RMSE over the B·R draws of log p̂_K - log p̂_ref.
  Checks (`disagrees`, Bonferroni over all checks):

    every p:  E log p̂_K ≥ E log p̂_{K/2}   (paired; Burda et al. 2015, Thm 1)
    encoder:  E log p̂_K ≤ E log p̂_ref for K ≤ K_ref, ≥ for K ≥ K_ref
    prior:    E log p̂_K ≤ log p(x) ≈ log p̂_ref + se_ref²/2

  the last with the delta-method bias ρ/(2K_ref) = se_ref²/2 of the
  reference (approximate: ρ̂ is itself estimated). SEs: the sd of paired
  differences / √(B·R); for comparisons with the reference √(Σ_b (var_r/R +
  se_ref,b²))/B.
  """
  ref, ref_se = reference['log_px'], reference['log_px_se']
  rows = []
  for p, est in estimates.items():
    for j in range(est.shape[-1]):
      k, e = 2**j, est[..., j]
      d = e - ref[:, None]
      r = {'kind': 'per_K', 'proposal': p, 'K': k,
           'mean_minus_reference': float(np.mean(d)),
           'sd': float(np.std(d)), 'rmse': float(np.sqrt(np.mean(d**2))),
           'z': []}
      if j:
        step = (e - est[..., j - 1]).ravel()
        r['z'].append(_z(step, float(np.std(step)) / math.sqrt(step.size)))
      se = _se(np.std(e, 1, ddof=1) / math.sqrt(e.shape[1]), ref_se)
      if p == 'prior':
        r['z'].append(_z(ref + ref_se**2 / 2 - e.mean(1), se))
      else:
        r['z'] += ([_z(-d, se)] if k <= reference_k else []) + (
            [_z(d, se)] if k >= reference_k else [])
      rows.append(r)
  return _mark(rows, alpha)
