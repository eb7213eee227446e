"""vae.ais against independent answers; tolerances from standard errors.

  * the linear-Gaussian model, log p(x) = log N(x; b, WWᵀ + σ²I) in closed
    form (`vae.problems.linear_gaussian`), wrapped as a `vae.model.Model`
    with a deliberately poor encoder q (shifted, 1.5x too wide);
  * a 2-D-latent image VAE, log p(x) by grid quadrature (float64);
  * AIS beside IS with the same proposal and the same number of samples,
    and BDMC's bracket on data simulated from the model.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import stat_checks as sc
from tests.test_image_inference import log_marginal, quadrature
from vae import ais
from vae import distributions as dists
from vae import importance
from vae import stats
from vae.models import image_vae
from vae.models import sigmoid_belief_net
from vae.problems import linear_gaussian as lg

Z = sc.NUM_SE


@dataclasses.dataclass(frozen=True)
class LinearGaussian:
  """p(z) = N(0, I), p(x|z) = N(Wz + b, σ²I), q(z|x) = N(Ax + c, diag s²)."""
  latent_dim: int
  data_dim: int

  def init(self, key, data_mean=None):
    raise NotImplementedError('parameters come from `problem`.')

  def prior(self, params):
    return dists.standard_normal((self.latent_dim,))

  def decoder(self, params, z):
    loc = z @ params['weight'].T + params['bias']
    return dists.Normal(loc, jnp.broadcast_to(params['log_noise'], loc.shape))

  def encoder(self, params, x):
    loc = x @ params['enc_w'].T + params['enc_b']
    return dists.Normal(loc, jnp.broadcast_to(params['enc_log_s'],
                                              loc.shape))


def problem(latent_dim=4, data_dim=10, seed=0, shift=0.3, widen=1.5):
  """(model, params, truth): q's mean is the posterior mean + shift in each
  coordinate, its scales `widen` times the posterior's marginal ones."""
  truth = lg.random_model(jax.random.PRNGKey(seed), data_dim, latent_dim,
                          0.5)
  w, s2 = truth.weight, truth.noise_variance
  cov = jnp.linalg.inv(jnp.eye(latent_dim) + w.T @ w / s2)
  gain = cov @ w.T / s2
  params = {'weight': w, 'bias': truth.bias,
            'log_noise': truth.log_noise_scale, 'enc_w': gain,
            'enc_b': shift - gain @ truth.bias,
            'enc_log_s': 0.5 * jnp.log(jnp.diag(cov)) + jnp.log(widen)}
  return LinearGaussian(latent_dim, data_dim), params, truth


def _z(estimate, exact, se):
  """z of the mean error over data points, se from the per-point ses."""
  err = np.asarray(estimate, np.float64) - exact
  return np.mean(err) / (np.sqrt(np.sum(np.asarray(se)**2)) / len(err))


def test_schedule_ends_and_is_increasing():
  for kind in ais.SCHEDULES:
    b = ais.schedule(10, kind)
    assert b[0] == 0.0 and b[-1] == 1.0 and np.all(np.diff(b) > 0)
  sig = np.diff(ais.schedule(100))  # Dense near both ends.
  assert sig[0] < sig[50] / 5 and sig[-1] < sig[50] / 5


@pytest.mark.parametrize('bad, match', [
    ({'num_temperatures': 1}, 'num_temperatures: 1 must be an integer >= 2'),
    ({'step_size': 0.0}, 'step_size: 0.0 must be'),
    ({'step_size': -1.0}, 'step_size: -1.0 must be'),
    ({'num_chains': 0}, 'num_chains: 0'),
    ({'num_leapfrog': 0}, 'num_leapfrog: 0'),
    ({'target_acceptance': 1.0}, 'target_acceptance'),
    ({'schedule_kind': 'cosine'}, 'schedule'),
])
def test_bad_settings_are_refused_in_one_line(bad, match):
  model, params, truth = problem()
  x = jnp.zeros((2, model.data_dim))
  options = {'num_temperatures': 5, **bad}
  with pytest.raises(ValueError, match=match) as err:
    ais.ais_batch(model, params, x, jax.random.PRNGKey(0), **options)
  assert '\n' not in str(err.value)


def test_discrete_latents_are_refused_in_one_line():
  model = sigmoid_belief_net.SBN(latent_dim=3, data_dim=5)
  params = model.init(jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match='continuous latents: the prior is '
                     'Bernoulli') as err:
    ais.ais_batch(model, params, jnp.zeros((2, 5)), jax.random.PRNGKey(0),
                  num_temperatures=5)
  assert '\n' not in str(err.value)


@pytest.fixture(scope='module')
def linear_gaussian():
  model, params, truth = problem()
  x, z = lg.sample_data(truth, jax.random.PRNGKey(1), 100)
  return model, params, x, z, np.asarray(lg.log_marginal(truth, x),
                                         np.float64)


def test_ais_agrees_with_the_closed_form(linear_gaussian):
  """T = 1000, S = 16: each data point within its se (Bonferroni over 40),
  the mean error within NUM_SE ses of the mean, acceptance near 0.65."""
  model, params, x, _, exact = linear_gaussian
  out = ais.ais_batch(model, params, x[:40], jax.random.PRNGKey(2),
                      num_temperatures=1000, num_chains=16, num_leapfrog=5)
  exact = exact[:40]
  est, se = np.asarray(out['log_px']), np.asarray(out['log_px_se'])
  z = (est - exact) / se
  assert np.all(np.abs(z) < stats.z_threshold(len(z))), z
  assert abs(_z(est, exact, se)) < Z
  assert np.all(np.abs(np.asarray(out['acceptance']) - 0.65) < 0.1)
  assert np.all(np.asarray(out['ess']) > 8)  # Of 16 chains.


def test_more_temperatures_beat_is_and_stay_lower_bounds(linear_gaussian):
  """Same proposal, S = 8 samples: error(IS) > error(T=10) > error(T=100)
  on average over 100 data points (each of the 3 orderings by the
  one-sided Bonferroni z of the paired differences), and each mean lies
  below exact + NUM_SE ses."""
  model, params, x, _, exact = linear_gaussian
  s = 8
  errors = [np.asarray(importance.importance_batch(
      model, params, x, jax.random.PRNGKey(3), num_samples=s)['log_px']) -
            exact]
  for t in (10, 100):
    errors.append(np.asarray(ais.ais_batch(
        model, params, x, jax.random.PRNGKey(4), num_temperatures=t,
        num_chains=s, num_leapfrog=5)['log_px']) - exact)
  n = len(exact)
  t = stats.z_threshold(3, side='upper')
  for worse, better in ((0, 1), (1, 2), (0, 2)):
    diff = errors[better] - errors[worse]
    assert np.mean(diff) > t * np.std(diff, ddof=1) / np.sqrt(n), (
        [np.mean(e) for e in errors])
  for e in errors:  # Stochastic lower bounds.
    assert np.mean(e) < Z * np.std(e, ddof=1) / np.sqrt(n)


def test_ais_agrees_with_quadrature_on_a_2d_image_vae():
  """burda_vae(2, (8,), 12): encoder q and the prior as proposals, each
  data point within its se (Bonferroni) of log ∫ p(x|z) p(z) dz."""
  model = image_vae.burda_vae(latent_dim=2, hidden_sizes=(8,), data_dim=12)
  params = model.init(jax.random.PRNGKey(0))
  x = np.asarray(jax.random.bernoulli(jax.random.PRNGKey(1), 0.4, (6, 12)),
                 np.float32)
  exact = np.array([log_marginal(*quadrature(model, params, xi, (0.0, 0.0),
                                             7.0, n=141)) for xi in x])
  for proposal in (None, importance.prior_proposal(model, params, len(x))):
    out = ais.ais_batch(model, params, jnp.asarray(x), jax.random.PRNGKey(2),
                        proposal, num_temperatures=100, num_chains=16,
                        num_leapfrog=5)
    est, se = np.asarray(out['log_px']), np.asarray(out['log_px_se'])
    assert np.all(np.abs(est - exact) / se < stats.z_threshold(
        2 * len(x))), (est, exact, se)
    assert abs(_z(est, exact, se)) < Z


def test_bdmc_brackets_the_closed_form_and_the_gap_shrinks():
  """Data simulated from the model (`ais.simulate`), 20 data points, S = 16:
  both brackets (S chains, one chain) hold on average within NUM_SE ses,
  and the one-chain gap falls with T = 10, 100, 1000 (by NUM_SE ses)."""
  model, params, truth = problem(seed=5)
  x, z = ais.simulate(model, params, jax.random.PRNGKey(6), 20)
  exact = np.asarray(lg.log_marginal(truth, x), np.float64)
  n = len(exact)
  gaps = []
  for t in (10, 100, 1000):
    out = ais.bdmc_batch(model, params, x, z, jax.random.PRNGKey(7),
                         num_temperatures=t, num_chains=16, num_leapfrog=5)
    for name, sign in (('lower', 1), ('upper', -1), ('lower_one', 1),
                       ('upper_one', -1)):
      e = np.asarray(out[name]) - exact
      assert sign * np.mean(e) < Z * np.std(e, ddof=1) / np.sqrt(n), (
          t, name, np.mean(e))
    gaps.append(np.asarray(out['gap_one']))
  for wide, narrow in zip(gaps, gaps[1:]):
    diff = wide - narrow
    assert np.mean(diff) > Z * np.std(diff, ddof=1) / np.sqrt(len(diff)), (
        [np.mean(g) for g in gaps])


def test_ais_over_batches_is_ais_batch_per_batch(linear_gaussian):
  model, params, x, z, _ = linear_gaussian
  options = {'num_temperatures': 4, 'num_chains': 3, 'num_leapfrog': 2}
  key = jax.random.PRNGKey(8)
  whole = ais.ais(model, params, np.asarray(x[:5]), key, batch_size=3,
                  **options)
  first = ais.ais_batch(model, params, x[:3], jax.random.fold_in(key, 0),
                        **options)
  np.testing.assert_allclose(whole['log_px'][:3], first['log_px'],
                             rtol=1e-6)
  assert whole['log_weights'].shape == (5, 3)
  both = ais.ais(model, params, np.asarray(x[:5]), key, z_exact=z[:5],
                 batch_size=3, **options)
  assert np.all(np.isfinite(both['upper'])) and both['gap'].shape == (5,)
