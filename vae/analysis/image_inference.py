"""Inference in a trained image VAE, one image at a time: local Gaussian q's,
importance-sampled log p(x) by proposal and sample count, inference gaps.

A local q for image x_b is a Gaussian N(m_b, L_b L_bᵀ) with
L_b = diag(exp(s_b)) + strictly-lower(A_b), held by its unconstrained
parameters {'loc': m, 'log_diag': s} ('diagonal', a `dists.Normal`) or
with 'lower': A ('full_covariance', a `dists.MultivariateNormal`)
(`distribution`). `fit` maximizes each image's

    ELBO(q; x) = E_q[log p(x|z)] - KL(q ‖ p(z))

over its q by `vae.optim` steps (pathwise gradient, decoder fixed);
`bounds` gives log p̂(x), IWAE_k and the ELBO of fixed q's and
`log_likelihood_by_k` the estimate log p̂_K(x) for K = 1, 2, 4, ... from
one stream of samples, both from the one importance-sampling engine
(`vae.importance`, the q as its proposal); `gap_records` / `k_records` the
checked summaries (Cremer, Li & Duvenaud 2018; `vae.stats` tolerances).
"""

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from vae import distributions as dists
from vae import importance
from vae import model as model_lib
from vae import optim
from vae import stats
from vae import types

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey
Local = dict[str, Array]

FAMILIES = ('diagonal', 'full_covariance')


def distribution(q: Local | None) -> Any:
  """The Gaussian of local parameters: Normal(m, s) for a diagonal q, else
  `MultivariateNormal.from_unconstrained(m, s, A)`; None (the model's own
  encoder, for `importance.importance_batch`) for None."""
  if q is None:
    return None
  if 'lower' in q:
    return dists.MultivariateNormal.from_unconstrained(
        q['loc'], q['log_diag'], q['lower'])
  return dists.Normal(q['loc'], q['log_diag'])


def encoder_q(model: model_lib.Model, params: Params, x: Array,
              key: PRNGKey | None = None, num_samples: int = 256) -> Local:
  """The amortized q_φ(z|x_b) as a diagonal local q (a fit's start).

  A diagonal Gaussian encoder gives its own m = μ_φ(x_b), s = log σ_φ(x_b).
  Any other q (full covariance, a flow) gives the moment-matched diagonal
  Gaussian of `num_samples` draws z_s ~ q_φ(z|x_b) (`key` required):
  m = mean_s z_s, s = log sd_s z_s. The amortized q itself is evaluated
  with `bounds(q=None)`, not through this.
  """
  q = model.encoder(params, x)
  if isinstance(q, dists.Normal):
    return {'loc': q.loc, 'log_diag': jnp.broadcast_to(q.log_scale,
                                                        q.loc.shape)}
  if key is None:
    raise ValueError(f'encoder_q: a {type(q).__name__} encoder is moment-'
                     'matched from samples; pass a key.')
  z = q.sample(key, (num_samples,))  # [S, B, D].
  return {'loc': z.mean(0), 'log_diag': jnp.log(z.std(0, ddof=1))}


def encoder_family(model: model_lib.Model, params: Params,
                   x: Array) -> str | None:
  """The smallest of `FAMILIES` that holds the encoder's q (None: none
  does, e.g. a flow)."""
  q = jax.eval_shape(model.encoder, params, x[:1])
  if isinstance(q, dists.Normal):
    return 'diagonal'
  if isinstance(q, dists.MultivariateNormal):
    return 'full_covariance'
  return None


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


@functools.partial(jax.jit, static_argnames=('model', 'num_steps',
                                             'num_samples', 'optimizer'))
def fit(model: model_lib.Model, params: Params, x: Array, q: Local,
        key: PRNGKey, num_steps: int, num_samples: int,
        optimizer: optim.OptimizerConfig) -> tuple[Local, Array]:
  """max_q Σ_b ELBO(q_b; x_b) over local q's, the decoder fixed.

  Each step t (key split(key, num_steps)[t]) estimates, for every image,

    ELBO_b ≈ (1/S) Σ_s log p(x_b | z_bs) - KL(q_b ‖ p(z)),  z_bs ~ q_b
    (reparameterized: z = m_b + L_b ε; where p(z) has no closed-form KL,
    (1/S) Σ_s log p(x_b, z_bs)/q_b(z_bs)),

  and takes one `optim.make_step` step on -Σ_b ELBO_b (pathwise gradient;
  the images' q's do not interact).

  Returns:
    (the fitted q, each image's ELBO estimate at each step [B, num_steps]).
  """
  opt = optim.make_optimizer(optimizer, num_steps)

  def loss(qp, batch, k, baseline):
    del batch, baseline
    dist = distribution(qp)
    z = dist.sample(k, (num_samples,))  # [S, B, D].
    log_w, log_px = model_lib.log_weights(model, params, x, z, dist)
    kl = model_lib.analytic_kl(dist, model.prior(params))
    # A prior without a closed-form KL (mog, vamp): the Monte Carlo ELBO.
    elbo = jnp.mean(log_w, 0) if kl is None else jnp.mean(log_px, 0) - kl
    return -jnp.sum(elbo), {'elbo': elbo}

  state, aux = optim.fit(optim.make_step(loss, opt), optim.init_state(q, opt),
                         None, jax.random.split(key, num_steps))
  return state.params, aux['elbo'].T


def bounds(model: model_lib.Model, params: Params, x: Array, q: Local | None,
           key: PRNGKey, num_samples: int, chunk_size: int = 100,
           iwae_ks: tuple[int, ...] = ()) -> dict[str, Array]:
  """Per image, from K samples of its q (`importance.importance_batch`; q
  None: the model's own encoder q_φ(z|x), whatever its family):

    log_px    = log (1/K) Σ_k w_k                 (IS estimate = IWAE_K)
    log_px_se = √(Σ_k w_k² / (Σ_k w_k)² - 1/K)     (delta method, √(ρ̂/K))
    elbo      = (1/K) Σ_k log p(x|z_k) - KL(q ‖ p(z))
    elbo_se   = sd_k(log p(x|z_k)) / √K
    iwae_<k>  = (k/K) Σ_g log (1/k) Σ_{j∈g} w_j     (K/k groups; k | C)

  Returns:
    {name: [B]}.
  """
  out = importance.importance_batch(
      model, params, x, key, distribution(q), num_samples=num_samples,
      chunk_size=chunk_size, iwae_ks=tuple(iwae_ks))
  del out['kl']
  return out


def log_likelihood_by_k(model: model_lib.Model, params: Params, x: Array,
                        q: Local | None, key: PRNGKey,
                        max_log2_samples: int,
                        chunk_size: int = 1024) -> tuple[Array, Array]:
  """log p̂_K(x_b) = log (1/K) Σ_{k≤K} w_k for K = 2^0 ... 2^max, one stream.

  The first K of 2^max weights w_k = p(x, z_k)/q(z_k), z_k ~ q_b, give the
  estimate with K samples (so estimates at different K are nested, as a
  sampler that keeps drawing would give them); weights are drawn in chunks
  of C = min(chunk_size, 2^max) (a power of 2; `importance.importance_batch`
  with nested=True).

  Returns:
    (estimates [B, max + 1], log(1 + ρ̂) [B] with ρ̂ = K Σw²/(Σw)² - 1 over
    all K = 2^max weights: 1 + ρ̂ = 1 + K se², se of `bounds`).
  """
  k_max = 2**max_log2_samples
  out = importance.importance_batch(
      model, params, x, key, distribution(q), num_samples=k_max,
      chunk_size=min(chunk_size, k_max), nested=True)
  return out['log_px_by_k'], jnp.log1p(k_max * out['log_px_se']**2)


def batched(fn, batch_size: int, key: PRNGKey, x: np.ndarray,
            q: Local | None,
            log: Callable[[str], None] | None = None, **kwargs):
  """fn(x_i, q_i, fold_in(key, i), **kwargs) over batches i of the images
  (`vae.importance.over_batches`: the last batch padded to full size).

  Args:
    fn: a function of x, q and key (keywords) and `kwargs`.
    batch_size: images per call.
    key: PRNG key.
    x: images [N, d].
    q: their local q's (leading axis N), or None.
    log: if given, called with a progress line about every tenth of the way.
    **kwargs: passed to fn.

  Returns:
    The batches' outputs (numpy pytrees), the images' rows concatenated.
  """
  return importance.over_batches(
      lambda b, k, q_i: fn(x=b, q=q_i, key=k, **kwargs), x, key, batch_size,
      q, log=log, label='images')


def _z(diff, se: float) -> float:
  return float(np.mean(diff) / max(se, 1e-12))


def _se(*terms) -> float:
  """√(Σ_b Σ_terms se_b²) / B: the Monte Carlo error of a mean over images."""
  return math.sqrt(sum(float(np.sum(np.square(t))) for t in terms)) / len(
      terms[0])


def _checks(rows: list[dict]) -> list[dict]:
  """min_z and the one-sided checks z ≥ 0 ('lower': `stats.CHECKS`)."""
  for r in rows:
    zs = r.pop('z')
    r['min_z'] = min(zs) if zs else None
    r[stats.CHECKS] = [(z, 'lower') for z in zs]
  return rows


def gap_records(per_q: dict[str, dict[str, np.ndarray]],
                families: tuple[str, ...],
                encoder_in: tuple[str, ...] | None = None) -> list[dict]:
  """Means over images of each q's `bounds`, and the gaps of each family.

  per_q['amortized'] holds the encoder's q, per_q[f] the fitted q*_f
  (families in the order they were fitted, each from the last). With
  log p̂ = the largest mean log_px over the q's (each a stochastic lower
  bound on log p(x)):

    approximation_gap  = log p̂ - ELBO(q*_f),
    amortization_gap   = ELBO(q*_f) - ELBO(q_φ)   (Cremer et al. 2018),
    gain_over_previous = ELBO(q*_f) - ELBO(q* of the family before).

  Checks (one-sided z, `stats.CHECKS`, for `stats.mark_disagreements`; SE
  the Monte Carlo error √(Σ_b se_b²)/B of the per-image estimates): each q's
  E[IWAE_K] ≥ its ELBO (Burda et al. 2015), and the approximation gap, the
  amortization gap and the gain are ≥ 0 (each fit starts from the last q).
  The amortization gap is checked only for the families in `encoder_in`
  (default: all), those that hold the encoder's own q: a q_φ outside a
  family (a flow; a full covariance against the diagonal family) may beat
  that family's best member, and its gap is then negative by rights.
  """
  encoder_in = families if encoder_in is None else encoder_in
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
             ] + ([amortization[1]] if f in encoder_in else []) +
             ([gain[1]] if previous else [])})
    previous = v
  return _checks(rows)



def ais_gap_records(per_q: dict[str, dict[str, np.ndarray]],
                    families: tuple[str, ...], ais: dict[str, np.ndarray],
                    bdmc_gap: float | None = None,
                    bdmc_gap_se: float | None = None) -> list[dict]:
  """The gaps of `gap_records` with AIS as the reference log p(x).

  On the first n images (n = len(ais['log_px'])), per family f,

    approximation_gap = (1/n) Σ_b (log p̂_AIS(x_b) - ELBO(q*_f; x_b)),
    amortization_gap  = (1/n) Σ_b (ELBO(q*_f) - ELBO(q_φ))(x_b),
    inference_gap     = (1/n) Σ_b (log p̂_AIS - ELBO(q_φ))(x_b),
    ais_minus_is      = (1/n) Σ_b (log p̂_AIS - log p̂_IS)(x_b)

  (log p̂_IS: the best q's IS estimate, as in `gap_records`), each with its
  SE over images (sd / √n) and the approximation gap with its Monte Carlo
  SE √(Σ_b se_b²)/n. AIS is a stochastic lower bound too; `bdmc_gap` (the
  BDMC bracket's width on data simulated from the model at the same T,
  `vae.evaluate.bdmc_records`), if given, is carried as the uncertainty
  that remains: log p(x) is estimated to lie within about that much above
  log p̂_AIS. Check (one-sided, `stats.CHECKS`): approximation gap ≥ 0.

  Returns:
    One row per family, kind 'gap_ais'.
  """
  n = len(ais['log_px'])
  sub = {k: {a: np.asarray(v[:n], np.float64) for a, v in d.items()}
         for k, d in per_q.items()}
  best = max(sub, key=lambda k: float(np.mean(sub[k]['log_px'])))
  px, px_se = np.asarray(ais['log_px']), np.asarray(ais['log_px_se'])
  enc = sub['amortized']

  def mean_se(v):
    return float(np.mean(v)), (float(np.std(v, ddof=1) / math.sqrt(n))
                               if n > 1 else 0.0)

  rows = []
  for f in families:
    v = sub[f]
    approx, approx_se = mean_se(px - v['elbo'])
    amort, amort_se = mean_se(v['elbo'] - enc['elbo'])
    diff, diff_se = mean_se(px - sub[best]['log_px'])
    mc = _se(px_se, v['elbo_se'])
    rows.append({
        'kind': 'gap_ais', 'family': f, 'images': n,
        'log_px_ais': float(np.mean(px)), 'log_px_ais_se_mc': _se(px_se),
        'log_px_is': float(np.mean(sub[best]['log_px'])),
        'log_px_is_from': best, 'ais_minus_is': diff,
        'ais_minus_is_se': diff_se,
        'elbo_optimal_q': float(np.mean(v['elbo'])),
        'elbo_amortized': float(np.mean(enc['elbo'])),
        'approximation_gap': approx, 'approximation_gap_se': approx_se,
        'approximation_gap_se_mc': mc,
        'amortization_gap': amort, 'amortization_gap_se': amort_se,
        'inference_gap': float(np.mean(px - enc['elbo'])),
        'bdmc_gap': bdmc_gap, 'bdmc_gap_se': bdmc_gap_se,
        'z': [_z(px - v['elbo'], mc)]})
  return _checks(rows)


def k_records(estimates: dict[str, np.ndarray], reference: dict[str,
                                                                np.ndarray],
              reference_k: int) -> list[dict]:
  """log p̂_K(x) - log p̂_ref(x) per proposal and K = 2^0, 2^1, ...

  estimates[p]: [B, R, n] `log_likelihood_by_k` of proposal p ('prior' or
  'encoder') in R independent streams; reference: `bounds` of the encoder's
  q with K_ref = reference_k independent samples (log_px, log_px_se). Per
  (p, K): mean, sd and RMSE over the B·R draws of log p̂_K - log p̂_ref.
  Checks (one-sided z, `stats.CHECKS`, for `stats.mark_disagreements`):

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
  return _checks(rows)
