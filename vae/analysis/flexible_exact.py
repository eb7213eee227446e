"""Exact log p(x) of a 2-D-latent flexible VAE by quadrature, against its bounds.

With a 2-D latent space the marginal likelihood of any trained model of
`vae.models.flexible_vae`,

    log p(x) = log ∫ p(x|z) p(z) dz  ≈  log Σ_g p(x|z_g) p(z_g) h²,

is a sum over a uniform grid z_g of spacing h on the box [-a, a]² (the
trapezoid rule: for a smooth integrand that vanishes at the box's edge its
error falls faster than any power of h), restricted to the rectangle where
the integrand matters. The error is stated and checked (`quadrature`): the
same sum on every other grid point (spacing 2h) differs from it by more
than the finer sum's own error, and the integrand's mass on the
rectangle's outer band bounds what it leaves out.

The prior's density p(z_g) is computed here in float64 numpy from the
model's parameters (`prior_log_density`), not by the `vae.distributions`
log-densities that the bounds use: the mixture weights are softmax(logits)
(MoG) or 1/K (VampPrior), and a VampPrior component that is an IAF has its
density by the change of variables with the Jacobian from `jax.jvp` of the
flow's forward map (not from the flow's own log-determinant). The decoder's
log p(x|z) is the model's own (Bernoulli: x·l - softplus(l) summed here).
So a wrong log-determinant of the IAF posterior (or prior), a wrong
full-covariance log-density, or wrong mixture weights move the
importance-sampling estimate and the ELBO but not the quadrature value
(`check_row`): the mean log p̂ over images must agree with it within its
standard error (two-sided), and each ELBO must lie below it (one-sided). A wrongly
normalized decoder moves both alike and is not seen here (its
normalization is tested over all binary images in tests/test_flexible_vae.py).
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special
from scipy import stats as sp_stats

from vae import distributions as dists
from vae import model as model_lib
from vae import stats
from vae import types
from vae.models import flexible_vae

Array = types.Array
Params = types.Params

# Each family checked: (posterior, prior, decoder) of `FlexibleVAE`.
FAMILIES = {
    'diagonal': ('diagonal', 'standard', 'factorized'),
    'full': ('full', 'standard', 'factorized'),
    'iaf': ('iaf', 'standard', 'factorized'),
    'mog': ('diagonal', 'mog', 'factorized'),
    'vamp': ('diagonal', 'vamp', 'factorized'),
    'autoregressive': ('diagonal', 'standard', 'autoregressive'),
    'iaf_vamp': ('iaf', 'vamp', 'factorized'),
    'iaf_vamp_base': ('iaf', 'vamp_base', 'factorized'),
}
NAMES = tuple(FAMILIES)
LATENT_DIM = 2
# The quadrature must be this much sharper than the importance-sampling
# estimate it judges: error ≤ QUADRATURE_SHARPNESS × se(log p̂) per image.
QUADRATURE_SHARPNESS = 0.1
# The outer band of the summed rectangle (EDGE_STEPS grid points wide)
# whose share of the integrand bounds the mass outside it.
EDGE_STEPS = 4
# Grid points whose term is below e^-RELEVANT of an image's largest one
# (on every fourth point) are left out of the sums when no image needs them.
RELEVANT = 30.0
# Grid points x images per decoder call (the autoregressive decoder holds
# [rows, d] floats per call).
MAX_ROWS = 2**15
_HALF_LOG_TWO_PI = 0.5 * np.log(2.0 * np.pi)


def family_model(name: str, data_dim: int, hidden_sizes: tuple[int, ...],
                 num_components: int, flow_steps: int, flow_hidden: int,
                 decoder_hidden_sizes: tuple[int, ...]
                 ) -> flexible_vae.FlexibleVAE:
  """The 2-D-latent `FlexibleVAE` of family `name` (one of NAMES)."""
  if name not in FAMILIES:
    raise ValueError(f'family: {name!r} is not one of {NAMES}.')
  posterior, prior, decoder = FAMILIES[name]
  return flexible_vae.FlexibleVAE(
      hidden_sizes=tuple(hidden_sizes), latent_dim=LATENT_DIM,
      data_dim=data_dim, posterior_type=posterior, prior_type=prior,
      decoder_type=decoder, num_components=num_components,
      flow_steps=flow_steps, flow_hidden=flow_hidden,
      ar_hidden_sizes=tuple(decoder_hidden_sizes))


def _normal_log_density(z: np.ndarray, loc: np.ndarray,
                        log_scale: np.ndarray) -> np.ndarray:
  """Σ_i log N(z_i; m_i, s_i²) over the last axis (float64, broadcast)."""
  u = (z - loc) * np.exp(-log_scale)
  return np.sum(-0.5 * u**2 - log_scale - _HALF_LOG_TWO_PI, -1)


def _full_log_density(z: np.ndarray, loc: np.ndarray,
                      tril: np.ndarray) -> np.ndarray:
  """log N(z; m_k, L_k L_kᵀ) for z [G, 2] and K components -> [G, K]."""
  out = []
  for m, chol in zip(loc, tril):
    y = np.linalg.solve(chol, (z - m).T)  # [2, G].
    out.append(-0.5 * np.sum(y**2, 0) - np.sum(np.log(np.diag(chol))) -
               2 * _HALF_LOG_TWO_PI)
  return np.stack(out, -1)


@jax.jit
def _flow_change_of_variables(flow: Any, z: Array
                              ) -> tuple[Array, Array, Array, Array]:
  """(z_0 = f⁻¹(z), log |det ∂f/∂z_0| by jvp, |f(z_0) - z|, whether the
  inverse is inside ±IAF_RANGE) for z [G, 1, 2] against a flow of batch
  [K, 2]: each [G, K, ...]."""
  z0, _, inside = flow.inverse_inside(z)  # [G, K, 2], [G, K].
  forward = lambda a: flow.forward(a)[0]
  image, col0 = jax.jvp(forward, (z0,), (jnp.zeros_like(z0).at[..., 0].set(
      1.0),))
  _, col1 = jax.jvp(forward, (z0,), (jnp.zeros_like(z0).at[..., 1].set(1.0),))
  det = col0[..., 0] * col1[..., 1] - col0[..., 1] * col1[..., 0]
  return (z0, jnp.log(jnp.abs(det)), jnp.max(jnp.abs(image - z), -1),
          inside)


def _component_log_densities(components: Any, z: np.ndarray
                             ) -> tuple[np.ndarray, float]:
  """log p_k(z) [G, K] of K components (batch [K, 2]) in float64, and the
  largest |f(f⁻¹(z)) - z| of a flow's inversion (0 otherwise)."""
  if isinstance(components, dists.Normal):
    loc = np.asarray(components.loc, np.float64)
    log_scale = np.asarray(components.log_scale, np.float64)
    return _normal_log_density(z[:, None, :], loc, log_scale), 0.0
  if isinstance(components, dists.MultivariateNormal):
    return _full_log_density(z, np.asarray(components.loc, np.float64),
                             np.asarray(components.scale_tril,
                                        np.float64)), 0.0
  if isinstance(components, dists.InverseAutoregressiveFlow):
    parts = [_flow_change_of_variables(components, jnp.asarray(
        z[i:i + 4096, None, :], jnp.float32)) for i in range(0, len(z), 4096)]
    z0, log_det, error, inside = (np.concatenate([np.asarray(p[j])
                                                  for p in parts])
                                  for j in range(4))
    base = _normal_log_density(z0.astype(np.float64),
                               np.asarray(components.loc, np.float64),
                               np.asarray(components.log_scale, np.float64))
    # Far out the inverse leaves ±IAF_RANGE (gate σ → 0): such a point counts
    # as density 0, as in the flow's own log_prob; that this loses no mass
    # is what the quadrature's ∫ p(z) dz = 1 checks. Elsewhere an overflow is
    # an infinite inversion error.
    log_q = np.where(inside & np.isfinite(base - log_det), base - log_det,
                     -np.inf)
    error = np.where(np.isfinite(error), error, np.inf)
    return log_q, float(np.max(np.where(inside, error, 0.0)))
  raise TypeError(f'no independent density for {type(components).__name__}.')


def prior_log_density(model: flexible_vae.FlexibleVAE, params: Params,
                      z: np.ndarray) -> tuple[np.ndarray, float]:
  """log p(z) [G] at z [G, 2] in float64, independently of the log-densities
  of `vae.distributions` (module docstring); and the flow inversion error.

    standard  -|z|²/2 - log 2π
    mog       logsumexp_k (logits_k - logsumexp(logits) + log N(z; m_k, s_k²))
    vamp      logsumexp_k (log q(z|u_k)) - log K,  u_k = σ(a_k)
    vamp_base logsumexp_k (log N(z; μ(u_k), σ(u_k)²)) - log K (the IAF's base)
  """
  z = np.asarray(z, np.float64)
  if model.prior_type == 'standard':
    return -0.5 * np.sum(z**2, -1) - 2 * _HALF_LOG_TWO_PI, 0.0
  p = params['prior']
  if model.prior_type == 'mog':
    logits = np.asarray(p['logits'], np.float64)
    log_pi = logits - special.logsumexp(logits)
    comp = _normal_log_density(z[:, None, :], np.asarray(p['loc'], np.float64),
                               np.asarray(p['log_scale'], np.float64))
    return special.logsumexp(comp + log_pi, -1), 0.0
  u = jax.nn.sigmoid(jnp.asarray(p['pseudo_inputs']))
  q = model.encoder(params, u)
  if model.prior_type == 'vamp_base':
    q = q.base()
  comp, error = _component_log_densities(q, z)
  return special.logsumexp(comp, -1) - np.log(comp.shape[-1]), error


@functools.partial(jax.jit, static_argnames='model')
def _log_likelihood(model: flexible_vae.FlexibleVAE, params: Params, x: Array,
                    z: Array) -> Array:
  """log p(x_b|z_g) [G, B] for grid points z [G, 2] and images x [B, d]."""
  dec = model.decoder(params, z[:, None, :])
  if isinstance(dec, dists.Bernoulli):  # Σ_j x_j l_j - softplus(l_j).
    logits = dec.logits[:, 0, :]
    return (jnp.matmul(logits, x.T, precision=jax.lax.Precision.HIGHEST) -
            jnp.sum(jax.nn.softplus(logits), -1, keepdims=True))
  return model_lib.event_log_prob(dec, x)


def log_likelihood_grid(model: flexible_vae.FlexibleVAE, params: Params,
                        x: np.ndarray, z: np.ndarray) -> np.ndarray:
  """log p(x_b|z_g) [G, B] in blocks of grid points (float64 out)."""
  block = max(1, min(len(z), MAX_ROWS // len(x)))
  padded = -(-len(z) // block) * block
  zp = np.concatenate([z, np.zeros((padded - len(z), 2))]).astype(np.float32)
  xj = jnp.asarray(x, jnp.float32)
  parts = [np.asarray(_log_likelihood(model, params, xj, jnp.asarray(
      zp[i:i + block])), np.float64) for i in range(0, padded, block)]
  return np.concatenate(parts)[:len(z)]


def _box(model: flexible_vae.FlexibleVAE, params: Params, x: np.ndarray,
         axis: np.ndarray, stride: int) -> tuple[slice, slice]:
  """The index ranges (along `axis`, each of even length - 1) of the part of
  the grid where the integrand matters: on every `stride`-th point, where
  some image's l_g is within RELEVANT nats of its largest, widened by two
  coarse steps and clipped to the box."""
  coarse = np.arange(0, len(axis), stride)
  z = np.stack(np.meshgrid(axis[coarse], axis[coarse], indexing='ij'),
               -1).reshape(-1, 2)
  values = (log_likelihood_grid(model, params, x, z) +
            prior_log_density(model, params, z)[0][:, None])
  values = np.where(np.isnan(values), -np.inf, values)
  keep = np.any(values > values.max(0) - RELEVANT, -1).reshape(
      len(coarse), len(coarse))
  ranges = []
  for a in (keep.any(1), keep.any(0)):
    idx = coarse[np.flatnonzero(a)]
    lo = max(0, idx.min() - 2 * stride)
    hi = min(len(axis) - 1, idx.max() + 2 * stride)
    if (hi - lo) % 2:
      hi = hi + 1 if hi < len(axis) - 1 else hi
      lo = lo - 1 if (hi - lo) % 2 else lo
    ranges.append(slice(lo, hi + 1))
  return ranges[0], ranges[1]


def quadrature(model: flexible_vae.FlexibleVAE, params: Params,
               x: np.ndarray, half_width: float, points: int
               ) -> dict[str, Any]:
  """log p(x) of each image x [B, d] by the grid sum, with its error.

  The grid has spacing h = 2a/(points - 1) over [-a, a]² (`grid`; points
  odd); the sums run over the rectangle of it where the integrand matters
  (`_box`: found on every fourth point; the rest of the box holds less
  than e^-RELEVANT of any image's largest term per point). A flow
  component whose inverse leaves ±IAF_RANGE at a point counts as density 0
  there (as in its own log_prob); a nonfinite residual |f(f⁻¹(z)) - z|
  elsewhere makes 'inversion_error' infinite (`check_row` then refuses to
  judge). With l_g =
  log p(x|z_g) + log p(z_g) there:

    log_px          = logsumexp_g l_g + 2 log h
    log_px_coarse   = the same over every other point (spacing 2h)
    edge_mass       = Σ_{g on the rectangle's outer band} e^{l_g} / Σ_g e^{l_g}
    quadrature_error = |log_px - log_px_coarse| + edge_mass

  (a bound on log_px's error: the coarse sum's error exceeds the fine
  one's, and the mass outside the rectangle is below that of its outer
  band, EDGE_STEPS points wide, for an integrand that decays outward).

  Returns:
    {'log_px', 'log_px_coarse', 'edge_mass', 'quadrature_error'}: float64
    [B]; 'inversion_error' (a flow component's largest |f(f⁻¹(z)) - z|),
    'spacing' h, 'half_width' a, 'points', 'grid_points' (summed).
  """
  if points % 2 == 0 or points < 3:
    raise ValueError(f'quadrature_points: {points} must be odd and ≥ 3 (the '
                     'coarse grid is every other point).')
  axis = np.linspace(-half_width, half_width, points)
  h = float(axis[1] - axis[0])
  rows, cols = _box(model, params, x, axis, 4)
  n1, n2 = len(axis[rows]), len(axis[cols])
  z = np.stack(np.meshgrid(axis[rows], axis[cols], indexing='ij'),
               -1).reshape(-1, 2)
  log_prior, inversion_error = prior_log_density(model, params, z)
  values = log_likelihood_grid(model, params, x, z) + log_prior[:, None]
  total = special.logsumexp(values, 0)
  grid_values = values.reshape(n1, n2, -1)
  coarse = grid_values[::2, ::2].reshape(-1, values.shape[-1])
  band = np.zeros((n1, n2), bool)
  band[:EDGE_STEPS], band[-EDGE_STEPS:] = True, True
  band[:, :EDGE_STEPS], band[:, -EDGE_STEPS:] = True, True
  log_px = total + 2 * np.log(h)
  log_px_coarse = special.logsumexp(coarse, 0) + 2 * np.log(2 * h)
  edge_mass = np.exp(special.logsumexp(grid_values[band], 0) - total)
  return {'log_px': log_px, 'log_px_coarse': log_px_coarse,
          'edge_mass': edge_mass,
          'quadrature_error': np.abs(log_px - log_px_coarse) + edge_mass,
          'inversion_error': inversion_error, 'spacing': h,
          'half_width': float(half_width), 'points': int(points),
          'grid_points': int(n1 * n2)}


def check_row(quad: dict[str, Any], estimates: dict[str, np.ndarray]
              ) -> dict[str, Any]:
  """One row comparing the bounds of B images with their exact log p(x).

  `estimates` is `vae.importance.importance_sampling`'s output on the same
  images (K samples of the encoder's q). With E_b the quadrature value of
  image b, d_b = log p̂_b - E_b and means over the B images:

    SE       = max(√(Σ_b se_b²)/B, sd_b(d_b)/√B)
    is_z     = Φ⁻¹(T_{B-1}(mean d / SE))         checked two-sided
    z_elbo_b = (ELBO_b - E_b) / se(ELBO_b)       checked one-sided per image
                                                 ('upper': the ELBO lies below)

  (`stats.CHECKS`, for `stats.mark_disagreements`; T_{B-1} is Student's t
  distribution function, so that is_z is the normal z of the same tail).
  log p̂ is checked on the mean, with the larger of the delta-method SE and
  the SE from the images' spread of the actual errors: a single image's
  delta-method SE √(ρ̂/K) is itself unreliable when the weights are
  heavy-tailed (a q lighter-tailed than the posterior somewhere), so that
  an occasional image lies 4-5 of its SEs below E_b (the per-image z are
  reported as is_z_max_abs, not checked). A planted error in log q or
  log p(z) moves every d_b alike and shows in the mean. The ELBO's
  integrand log w is light-tailed, so its per-image SE holds. The row also
  `disagrees`, as a deterministic check, when the quadrature is not sharp
  enough to judge: quadrature_error > QUADRATURE_SHARPNESS × se(log p̂_b)
  for some image, or a flow inverted with an error above 1e-3.
  """
  exact = np.asarray(quad['log_px'], np.float64)
  est = {k: np.asarray(v, np.float64) for k, v in estimates.items()}
  n = len(exact)
  z_is = (est['log_px'] - exact) / est['log_px_se']
  z_elbo = (est['elbo'] - exact) / est['elbo_se']
  mean_se = lambda se: float(np.sqrt(np.sum(se**2)) / n)
  is_se, elbo_se = mean_se(est['log_px_se']), mean_se(est['elbo_se'])
  diff = est['log_px'] - exact
  spread_se = float(np.std(diff, ddof=1) / np.sqrt(n)) if n > 1 else 0.0
  check_se = max(is_se, spread_se)
  t = float(diff.mean() / check_se)
  # The normal z of t's tail, from its log (finite however large t is).
  is_z = (float(np.sign(t) * -special.ndtri_exp(sp_stats.t.logsf(
      abs(t), n - 1))) if n > 1 else t)
  sharp = bool(np.all(quad['quadrature_error'] <= QUADRATURE_SHARPNESS *
                      est['log_px_se']) and quad['inversion_error'] < 1e-3)
  return {
      'images': n, 'log_px_exact': float(exact.mean()),
      'log_px_is': float(est['log_px'].mean()), 'log_px_is_se': is_se,
      'log_px_is_spread_se': spread_se, 'is_z': is_z,
      'is_z_max_abs': float(np.max(np.abs(z_is))),
      'elbo': float(est['elbo'].mean()), 'elbo_se': elbo_se,
      'elbo_z_max': float(np.max(z_elbo)),
      'gap': float(exact.mean() - est['elbo'].mean()),
      'kl': float(est['kl'].mean()),
      'quadrature_error': float(np.max(quad['quadrature_error'])),
      'edge_mass': float(np.max(quad['edge_mass'])),
      'min_log_px_se': float(np.min(est['log_px_se'])),
      'inversion_error': quad['inversion_error'],
      'quadrature_sharp': sharp, 'disagrees': not sharp,
      stats.CHECKS: ([(is_z, 'two-sided')] +
                     [(float(v), 'upper') for v in z_elbo])}
