"""vae.analysis.image_inference on a 2-D-latent VAE, against quadrature on a grid.

With two latent dimensions, log p(x) = log ∫ p(x|z) p(z) dz and ELBO(q) =
∫ q(z) log p(x|z) dz - KL(q ‖ p(z)) are integrals over a plane: a fine grid
gives them (float64) independently of the Monte Carlo code, and scipy's
optimizer on those integrals gives the best diagonal and full-covariance q.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize
from scipy import special
from scipy import stats as sp_stats

from vae import model as model_lib
from vae import optim
from vae import stats
from vae.analysis import image_inference as ii
from vae.models import image_vae


def quadrature(model, params, x, center, half_width, n=81):
  """log p(x|z) on an n x n grid around `center` [2]; (grid, values, h²)."""
  axis = np.linspace(-half_width, half_width, n)
  z = np.stack(np.meshgrid(axis, axis, indexing='ij'), -1).reshape(-1, 2)
  z = z + np.asarray(center, np.float64)
  logits = np.asarray(model.decoder_net.apply(
      params['decoder'], jnp.asarray(z, jnp.float32)), np.float64)
  ll = np.asarray(x, np.float64) @ logits.T - np.sum(
      np.logaddexp(0.0, logits), -1)
  return z, ll, (axis[1] - axis[0])**2


def log_marginal(z, ll, area):
  """log ∫ p(x|z) N(z; 0, I) dz by the grid sum."""
  return special.logsumexp(ll + sp_stats.norm.logpdf(z).sum(-1)) + np.log(
      area)


def elbo(z, ll, area, mean, cov):
  """∫ q(z) log p(x|z) dz - KL(N(mean, cov) ‖ N(0, I)) (closed-form KL)."""
  d = z - mean
  q = np.exp(-0.5 * np.sum(d @ np.linalg.inv(cov) * d, -1)) / (
      2 * np.pi * np.sqrt(np.linalg.det(cov)))
  kl = 0.5 * (np.trace(cov) + mean @ mean - 2 - np.linalg.slogdet(cov)[1])
  return float(np.sum(q * ll) * area - kl)


def _covariance(q, b):
  scale = np.diag(np.exp(np.asarray(q['log_diag'][b], np.float64)))
  if 'lower' in q:
    scale = scale + np.tril(np.asarray(q['lower'][b], np.float64), -1)
  return scale @ scale.T


@pytest.fixture(scope='module')
def setup():
  model = image_vae.burda_vae(latent_dim=2, hidden_sizes=(8,), data_dim=12)
  params = model.init(jax.random.PRNGKey(0))
  x = np.asarray(jax.random.bernoulli(jax.random.PRNGKey(1), 0.4, (3, 12)),
                 np.float32)
  grids = [quadrature(model, params, xi, (0.0, 0.0), 6.0) for xi in x]
  return model, params, x, grids


def test_log_q_and_kl_are_those_of_the_full_gaussian():
  key = jax.random.split(jax.random.PRNGKey(2), 4)
  q = ii.in_family({'loc': jax.random.normal(key[0], (2, 3)),
                    'log_diag': 0.3 * jax.random.normal(key[1], (2, 3))},
                   'full_covariance')
  q['lower'] = 0.5 * jax.random.normal(key[2], (2, 3, 3))
  model = image_vae.burda_vae(latent_dim=3, hidden_sizes=(4,), data_dim=6)
  params = model.init(jax.random.PRNGKey(3))

  @jax.jit
  def terms(q):
    dist = ii.distribution(q)
    z = dist.sample(key[3], (5,))  # [5, 2, 3].
    log_w, log_px = model_lib.log_weights(model, params, jnp.zeros((2, 6)),
                                          z, dist)
    return (log_w - log_px, z,
            model_lib.analytic_kl(dist, model.prior(params)))

  log_ratio, z, kl = terms(q)
  z = np.asarray(z, np.float64)
  for b in range(2):
    mean, cov = np.asarray(q['loc'][b], np.float64), _covariance(q, b)
    log_q = sp_stats.multivariate_normal(mean, cov).logpdf(z[:, b])
    np.testing.assert_allclose(
        log_ratio[:, b], sp_stats.norm.logpdf(z[:, b]).sum(-1) - log_q,
        rtol=1e-4, atol=1e-4)
    exact_kl = 0.5 * (np.trace(cov) + mean @ mean - 3 -
                      np.linalg.slogdet(cov)[1])
    np.testing.assert_allclose(kl[b], exact_kl, rtol=1e-5)
  with pytest.raises(ValueError, match='family'):
    ii.in_family(q, 'flow')
  with pytest.raises(ValueError, match='not a diagonal'):
    ii.in_family(q, 'diagonal')


def test_bounds_agree_with_quadrature(setup):
  model, params, x, grids = setup
  # The prior's tails are heavier than the posterior's (finite χ², so the
  # delta-method SE holds); the encoder's are not, and serve the ELBO only.
  for q in (ii.prior_q(3, 2), ii.encoder_q(model, params, x)):
    out = ii.bounds(model, params, jnp.asarray(x), q, jax.random.PRNGKey(4),
                    20_000, 1000, (1, 10))
    for b, (z, ll, area) in enumerate(grids):
      exact = log_marginal(z, ll, area)
      exact_elbo = elbo(z, ll, area, np.asarray(q['loc'][b], np.float64),
                        _covariance(q, b))
      assert abs(out['elbo'][b] - exact_elbo) < 4 * out['elbo_se'][b] + 1e-3
      assert abs(out['iwae_1'][b] - exact_elbo) < 4 * out['elbo_se'][b] + 1e-3
      assert exact_elbo - 0.01 < out['iwae_10'][b] < exact + 0.01
      assert out['log_px'][b] < exact + 4 * out['log_px_se'][b] + 1e-3
      if not q['loc'].any():
        assert abs(out['log_px'][b] - exact) < 4 * out['log_px_se'][b] + 1e-3
    assert 0 < np.min(out['log_px_se']) and np.max(out['elbo_se']) < 0.05


def _best(z, ll, area, full):
  """max over Gaussians q (diagonal or full) of the quadrature ELBO."""
  def neg(theta):
    chol = np.diag(np.exp(theta[2:4]))
    chol[1, 0] = theta[4] if full else 0.0
    return -elbo(z, ll, area, theta[:2], chol @ chol.T)
  return -optimize.minimize(neg, np.zeros(5), method='BFGS').fun


def test_fits_reach_the_best_gaussian_of_each_family(setup):
  model, params, x, grids = setup
  q = ii.encoder_q(model, params, x)
  adam = optim.OptimizerConfig(learning_rate=3e-2, lr_schedule='cosine',
                               lr_decay_rate=0.01)
  for family in ii.FAMILIES:
    q, curve = ii.fit(model, params, jnp.asarray(x), ii.in_family(q, family),
                      jax.random.PRNGKey(5), 400, 16, adam)
    assert curve.shape == (3, 400)
    for b, (z, ll, area) in enumerate(grids):
      fitted = elbo(z, ll, area, np.asarray(q['loc'][b], np.float64),
                    _covariance(q, b))
      best = _best(z, ll, area, family == 'full_covariance')
      assert best - 0.02 < fitted <= best + 1e-6
      assert best < log_marginal(z, ll, area)


def test_estimates_by_k_are_the_running_means_of_one_stream(setup):
  model, params, x, _ = setup
  q = ii.prior_q(3, 2)
  key = jax.random.PRNGKey(6)
  est, log_rho1 = ii.log_likelihood_by_k(model, params, jnp.asarray(x), q,
                                         key, 6, 16)

  @jax.jit
  def stream(keys):  # The same draws, chunk by chunk: q.sample [16, 3, 2].
    dist = ii.distribution(q)
    return jnp.concatenate([model_lib.log_weights(
        model, params, jnp.asarray(x), dist.sample(k, (16,)), dist)[0].T
                            for k in keys], 1)

  lw = np.asarray(stream(jax.random.split(key, 4)), np.float64)
  for j in range(7):
    np.testing.assert_allclose(
        est[:, j], special.logsumexp(lw[:, :2**j], 1) - j * np.log(2),
        rtol=1e-5)
  w = np.exp(lw - lw.max(1, keepdims=True))
  np.testing.assert_allclose(
      log_rho1, np.log(64 * np.sum(w**2, 1) / np.sum(w, 1)**2), rtol=1e-4)


def _fake_bounds(elbo_mean, n=50, seed=0):
  rng = np.random.default_rng(seed)
  e = elbo_mean + rng.normal(0, 1.0, n)
  return {'elbo': e, 'elbo_se': np.full(n, 0.05),
          'log_px': e + 2.0, 'log_px_se': np.full(n, 0.05)}


def _gap_records(*args):
  return stats.mark_disagreements(ii.gap_records(*args))


def _k_records(*args):
  return stats.mark_disagreements(ii.k_records(*args))


def test_gap_records_flag_a_fit_that_lost_elbo():
  good = {'amortized': _fake_bounds(-100), 'diagonal': _fake_bounds(-98)}
  rows = _gap_records(good, ('diagonal',))
  assert not any(r['disagrees'] for r in rows)
  gap = rows[-1]
  np.testing.assert_allclose(gap['amortization_gap'], 2.0, atol=0.5)
  bad = {'amortized': _fake_bounds(-100), 'diagonal': _fake_bounds(-101)}
  assert _gap_records(bad, ('diagonal',))[-1]['disagrees']


def test_a_flexible_encoder_may_beat_a_family_it_is_not_in():
  # A flow (or full-covariance) q_φ better than the best diagonal q: the
  # negative amortization gap is no disagreement when the diagonal family
  # does not hold q_φ, and still is one when it does.
  flow = {'amortized': _fake_bounds(-100), 'diagonal': _fake_bounds(-101)}
  rows = _gap_records(flow, ('diagonal',), ())
  assert not any(r['disagrees'] for r in rows)
  assert rows[-1]['amortization_gap'] < -0.5
  assert _gap_records(flow, ('diagonal',), ('diagonal',))[-1]['disagrees']


def test_encoder_q_moment_matches_a_full_covariance_encoder():
  from vae import distributions as dists  # pylint: disable=import-outside-toplevel
  from vae.models import flexible_vae  # pylint: disable=import-outside-toplevel
  model = flexible_vae.make(
      image_vae.ModelConfig(hidden_sizes=(8,), latent_dim=3),
      flexible_vae.FamilyConfig(posterior='full'))
  params = model.init(jax.random.PRNGKey(0))
  x = jax.random.bernoulli(jax.random.PRNGKey(1), 0.3, (4, 784)).astype(
      jnp.float32)
  q = model.encoder(params, x)
  assert isinstance(q, dists.MultivariateNormal)
  assert ii.encoder_family(model, params, x) == 'full_covariance'
  with pytest.raises(ValueError, match='pass a key'):
    ii.encoder_q(model, params, x)
  s = 20_000
  local = ii.encoder_q(model, params, x, jax.random.PRNGKey(2), s)
  sd = np.sqrt(np.einsum('bij,bij->bi', q.scale_tril, q.scale_tril))
  # Means within 5 SEs (sd/√S); sds within 5 SEs of a Gaussian sd
  # (sd/√(2S)).
  np.testing.assert_array_less(np.abs(local['loc'] - q.loc), 5 * sd / s**.5)
  np.testing.assert_array_less(np.abs(np.exp(local['log_diag']) - sd),
                               5 * sd / (2 * s)**.5)
  diag = image_vae.make(image_vae.ModelConfig(hidden_sizes=(8,),
                                              latent_dim=3))
  p = diag.init(jax.random.PRNGKey(0))
  assert ii.encoder_family(diag, p, x) == 'diagonal'
  exact = ii.encoder_q(diag, p, x)  # No key needed: its own parameters.
  np.testing.assert_array_equal(exact['loc'], diag.encoder(p, x).loc)


def test_k_records_flag_estimates_that_fall_or_overshoot():
  rng = np.random.default_rng(0)
  ref = {'log_px': rng.normal(-90, 5, 40), 'log_px_se': np.full(40, 0.01)}
  rising = ref['log_px'][:, None, None] - 8.0 / np.arange(1, 6) + rng.normal(
      0, 0.01, (40, 3, 5))
  rows = _k_records({'prior': rising}, ref, 4)
  assert not any(r['disagrees'] for r in rows)
  assert [r['K'] for r in rows] == [1, 2, 4, 8, 16]
  assert _k_records({'prior': rising[..., ::-1]}, ref, 4)[1]['disagrees']
  assert _k_records({'prior': rising + 8.0}, ref, 4)[-1]['disagrees']
  # Importance sampling from q: below the reference for K < K_ref.
  assert _k_records({'encoder': rising + 8.0}, ref, 16)[-2]['disagrees']
