"""vae.missing: masks, the MIWAE bound, and each imputation method against
the closed-form p(x_miss | x_obs) of the linear-Gaussian model.

Tolerances are Bonferroni thresholds of the checks in each test at α = 0.01
(`stats.z_threshold`), on z-scores from standard errors of independent
draws (`linear_gaussian.gaussian_moment_z`); seeds are fixed.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import missing_data
from experiments.common import runner
from vae import missing
from vae import model as model_lib
from vae import optim
from vae import stats
from vae.models import image_vae
from vae.problems import linear_gaussian as lg

N = 2000  # Independent draws per check.
MASK = np.array([True, True, True, False, False, False])  # 3 of 6 hidden.


@pytest.fixture(scope='module')
def problem():
  """An orthogonal 6-D, 2-latent pPCA (WᵀW diagonal: the posterior is a
  diagonal Gaussian, so the encoder can be exact) and one data point."""
  _, _, ortho, (x,) = lg.draw_problem(jax.random.PRNGKey(0), 6, 2, 0.5, (1,),
                                      (4,))
  return ortho, np.asarray(x[0]), lg.LinearGaussianVAE(6, 2)


def _passes(*zs):
  z = np.concatenate([np.ravel(v) for v in zs])
  return np.all(np.abs(z) < stats.z_threshold(len(z))), np.round(z, 2)


# Masks.


def test_masks_hide_what_they_say():
  key = jax.random.PRNGKey(1)
  top = np.asarray(missing.make_masks('top_half', key, 3, 784))
  assert top.shape == (3, 784) and top.dtype == bool
  assert top[0].reshape(28, 28)[:14].all() and not top[0].reshape(
      28, 28)[14:].any()
  left = np.asarray(missing.make_masks('left_half', key, 1, 784))[0]
  assert left.reshape(28, 28)[:, :14].all() and not left.reshape(
      28, 28)[:, 14:].any()
  for kind, frac in (('random_50', 0.5), ('random_80', 0.8)):
    m = np.asarray(missing.make_masks(kind, key, 5, 784))
    assert (m.sum(1) == round(frac * 784)).all()
    assert not (m[0] == m[1]).all()  # A subset per image.
  mcar = np.asarray(missing.make_masks('mcar', key, 200, 784, rate=0.3))
  assert abs(mcar.mean() - 0.3) < 5 * np.sqrt(0.3 * 0.7 / mcar.size)
  # Row i depends on (key, i) only: a fixed pattern per image.
  more = np.asarray(missing.make_masks('random_50', key, 8, 784))
  assert (more[:5] == np.asarray(missing.make_masks('random_50', key, 5,
                                                     784))).all()


@pytest.mark.parametrize('bad, message', [
    (np.ones((2, 6), bool), 'row 0 of 2 hides every coordinate'),
    (np.zeros((2, 6), bool), 'row 0 of 2 hides no coordinate'),
    (np.array([MASK, np.zeros(6, bool)]), 'row 1 of 2 hides no coordinate'),
    (np.zeros((2, 6)), 'need a boolean'),
])
def test_bad_masks_are_refused_in_one_line(bad, message):
  with pytest.raises(ValueError, match=message) as e:
    missing.check_mask(bad, 6)
  assert '\n' not in str(e.value)


def test_bad_mask_settings_are_refused_in_one_line():
  key = jax.random.PRNGKey(0)
  for call, message in [
      (lambda: missing.make_masks('bottom', key, 1, 4), 'not one of'),
      (lambda: missing.make_masks('mcar', key, 1, 4, rate=0.0), 'in \\(0, 1'),
      (lambda: missing.make_masks('top_half', key, 1, 10), 'not a square'),
      (lambda: missing.pseudo_gibbs(None, None, None, None, key,
                                    num_chains=1, num_steps=5, burn_in=5),
       'burn_in < num_steps')]:
    with pytest.raises(ValueError, match=message) as e:
      call()
    assert '\n' not in str(e.value)


# The MIWAE bound.


def test_miwae_without_a_mask_is_iwae_and_hides_x_miss(problem):
  ortho, x0, model = problem
  params = lg.vae_params(ortho, 1.5)
  x = jnp.asarray(np.stack([x0, x0 + 1.0]))
  key = jax.random.PRNGKey(2)
  none = jnp.zeros(x.shape, bool)
  np.testing.assert_allclose(
      missing.miwae_bounds(model, params, x, none, key, 7),
      model_lib.pathwise_bounds(model, params, x, key, 'iwae', 1.0, 7),
      rtol=1e-6)
  m = jnp.asarray(np.tile(MASK, (2, 1)))
  changed = jnp.where(m, 100.0, x)
  np.testing.assert_array_equal(
      missing.miwae_bounds(model, params, x, m, key, 7),
      missing.miwae_bounds(model, params, changed, m, key, 7))


def test_miwae_approaches_log_p_x_obs_from_below(problem):
  """E[MIWAE_K] ≤ log p(x_obs) = log N(x_o; b_o, C_oo), within its SE of
  it at K = 1000, and the ELBO (K = 1) below it by more than its SE."""
  ortho, x0, model = problem
  params = lg.vae_params(ortho, 1.5)
  obs = ~MASK
  cov = np.asarray(lg.marginal_covariance(ortho), np.float64)[np.ix_(obs, obs)]
  r = x0[obs] - np.asarray(ortho.bias)[obs]
  log_p_obs = -0.5 * (r @ np.linalg.solve(cov, r) + np.linalg.slogdet(cov)[1]
                      + 3 * np.log(2 * np.pi))
  x = jnp.tile(x0, (200, 1))
  m = jnp.tile(MASK, (200, 1))
  key = jax.random.PRNGKey(3)
  for k, tight in ((1, False), (1000, True)):
    b = np.asarray(missing.miwae_bounds(model, params, x, m, key, k,
                                        ortho.bias), np.float64)
    z = (b.mean() - log_p_obs) / (b.std() / np.sqrt(len(b)))
    assert (abs(z) < 4) if tight else (z < -4), (k, z)


# Imputation against the closed form.


def _sir_draws(model, params, x0, fill_value, key):
  """N independent SIR draws (each from its own K = 1000 proposals)."""
  out = missing.importance_impute(
      model, params, jnp.tile(x0, (N, 1)), jnp.tile(MASK, (N, 1)), key,
      num_samples=1000, num_draws=1, fill_value=fill_value)
  return np.asarray(out['draws'][:, 0])[:, MASK], out


def test_sir_matches_the_conditional_gaussian(problem):
  """SIR with a proposal twice as wide as the posterior (finite-variance
  weights): N draws' mean and covariance match p(x_miss|x_obs), and the
  mean of log p̂(x_miss|x_obs) matches log N(x_miss; μ, Σ) within its SE."""
  ortho, x0, model = problem
  mean, cov = lg.conditional(ortho, x0, MASK)
  draws, out = _sir_draws(model, lg.vae_params(ortho, 2.0), x0, ortho.bias,
                          jax.random.PRNGKey(4))
  cond = np.asarray(out['cond_ll'], np.float64)
  ll_z = (cond.mean() - lg.log_conditional(ortho, x0, MASK)) / (
      cond.std() / np.sqrt(N))
  ok, z = _passes(*lg.gaussian_moment_z(draws, mean, cov), ll_z)
  assert ok, z
  # The delta-method SE of one estimate agrees with the spread of N.
  assert 0.7 < float(np.mean(out['cond_ll_se'])) / cond.std() < 1.3
  assert 100 < float(np.mean(out['ess'])) <= 1000


@pytest.mark.parametrize('method', ['mwg', 'pseudo_gibbs'])
def test_gibbs_with_the_exact_posterior_encoder_is_exact(problem, method):
  """With q(z|x) = p(z|x) pseudo-Gibbs is the exact Gibbs sampler and MWG
  accepts every proposal: the final states of N chains match p(x_miss |
  x_obs)."""
  ortho, x0, model = problem
  params = lg.vae_params(ortho, 1.0)
  run = {'mwg': missing.metropolis_gibbs,
         'pseudo_gibbs': missing.pseudo_gibbs}[method]
  out = run(model, params, jnp.asarray(x0[None]), jnp.asarray(MASK[None]),
            jax.random.PRNGKey(5), num_chains=N, num_steps=40, burn_in=20)
  ok, z = _passes(*lg.gaussian_moment_z(
      np.asarray(out['draws'][0])[:, MASK], *lg.conditional(ortho, x0, MASK)))
  assert ok, z
  assert float(out['acceptance'][0]) > 0.999


def test_mwg_is_exact_where_pseudo_gibbs_is_not(problem):
  """With q 1.5 times wider than the posterior, MWG still matches p(x_miss |
  x_obs) (acceptance < 1), while pseudo-Gibbs matches its own stationary law
  (`pseudo_gibbs_stationary`, a Lyapunov equation), whose covariance is not
  the conditional's: its variances are off by far more than their SEs."""
  ortho, x0, model = problem
  params = lg.vae_params(ortho, 1.5)
  mean, cov = lg.conditional(ortho, x0, MASK)
  args = (model, params, jnp.asarray(x0[None]), jnp.asarray(MASK[None]),
          jax.random.PRNGKey(6))
  mwg = missing.metropolis_gibbs(*args, num_chains=N, num_steps=60,
                                 burn_in=30)
  pg = missing.pseudo_gibbs(*args, num_chains=N, num_steps=60, burn_in=30)
  mwg_draws = np.asarray(mwg['draws'][0])[:, MASK]
  pg_draws = np.asarray(pg['draws'][0])[:, MASK]
  pg_mean, pg_cov = lg.pseudo_gibbs_stationary(params, x0, MASK)
  ok, z = _passes(*lg.gaussian_moment_z(mwg_draws, mean, cov),
                  *lg.gaussian_moment_z(pg_draws, pg_mean, pg_cov))
  assert ok, z
  assert 0.2 < float(mwg['acceptance'][0]) < 0.95
  _, cov_z = lg.gaussian_moment_z(pg_draws, mean, cov)
  assert np.max(np.abs(cov_z)) > 10, cov_z


def test_mwg_with_the_fixed_masked_proposal_is_exact(problem):
  """MWG proposing from q(z|x̃) at every step (a fixed independence
  proposal, 3 times as wide as the posterior, since it must cover p(z|x̂)
  for every completion x̂) also matches p(x_miss|x_obs), after more steps."""
  ortho, x0, model = problem
  out = missing.metropolis_gibbs(
      model, lg.vae_params(ortho, 3.0), jnp.asarray(x0[None]),
      jnp.asarray(MASK[None]), jax.random.PRNGKey(8), num_chains=N,
      num_steps=200, burn_in=100, fill_value=ortho.bias, proposal='masked')
  ok, z = _passes(*lg.gaussian_moment_z(
      np.asarray(out['draws'][0])[:, MASK], *lg.conditional(ortho, x0, MASK)))
  assert ok, z
  assert 0.05 < float(out['acceptance'][0]) < 0.5
  with pytest.raises(ValueError, match='not completed or masked'):
    missing.metropolis_gibbs(model, None, None, None, None, num_chains=1,
                             num_steps=2, burn_in=0, proposal='x')


def test_imputation_never_reads_the_missing_values(problem):
  ortho, x0, model = problem
  params = lg.vae_params(ortho, 1.5)
  x = jnp.asarray(x0[None])
  m = jnp.asarray(MASK[None])
  other = jnp.where(m, -50.0, x)
  key = jax.random.PRNGKey(7)
  for run in (lambda v: missing.importance_impute(
      model, params, v, m, key, num_samples=50, num_draws=3),
              lambda v: missing.pseudo_gibbs(model, params, v, m, key,
                                             num_chains=3, num_steps=5,
                                             burn_in=1),
              lambda v: missing.metropolis_gibbs(model, params, v, m, key,
                                                 num_chains=3, num_steps=5,
                                                 burn_in=1),
              lambda v: missing.metropolis_gibbs(model, params, v, m, key,
                                                 num_chains=3, num_steps=5,
                                                 burn_in=1,
                                                 proposal='masked')):
    a, b = run(x), run(other)
    for name in ('draws', 'mean', 'ess'):
      np.testing.assert_array_equal(a[name], b[name])


# Training.


def test_miwae_training_raises_the_bound_on_images():
  """`train_miwae` (optim.fit epochs of `miwae_loss`) on 400 synthetic
  16-pixel images with 50% of the pixels hidden: the bound rises."""
  rng = np.random.RandomState(0)
  protos = rng.rand(4, 16) < 0.5
  x = (protos[rng.randint(4, size=400)] ^ (rng.rand(400, 16) < 0.05)).astype(
      np.float32)
  model = image_vae.burda_vae(2, (16,), data_dim=16)
  masks = missing.make_masks('random_50', jax.random.PRNGKey(0), 400, 16)
  rows = []
  missing.train_miwae(model, x, masks, optim.OptimizerConfig(
      learning_rate=0.01), num_samples=5, batch_size=40, epochs=15, seed=0,
                      on_epoch=rows.append)
  assert rows[-1]['train_bound'] > rows[0]['train_bound'] + 0.5, rows
  with pytest.raises(ValueError, match='hides every coordinate'):
    missing.train_miwae(model, x, np.ones((400, 16), bool),
                        optim.OptimizerConfig(), num_samples=1,
                        batch_size=40, epochs=1, seed=0)


# The experiment.


def test_the_experiment_runs_strict_with_every_exact_check_passing(tmp_path):
  """A tiny strict run: part 1's rows all agree (and are not vacuous),
  part 2 gives a row per model × mask × method and a figure per model ×
  mask."""
  config = missing_data.Config(
      exact_draws=1000, epochs=1, batch_size=100, impute_images=4,
      impute_masks=('top_half', 'mcar'), sir_samples=50, gibbs_chains=2,
      gibbs_steps=6, gibbs_burn_in=2, figure_images=2,
      model=image_vae.ModelConfig(hidden_sizes=(32,), latent_dim=4))
  records = runner.run_point('missing_data', config, 0, str(tmp_path),
                             strict=True)
  checked = [r for r in records if 'disagrees' in r]
  assert len(checked) == 4 * 6 and not any(r['disagrees'] for r in checked)
  images = [r for r in records if r['section'] == 'images']
  assert len(images) == 2 * 2 * 4
  assert all(0.0 <= r['pixel_accuracy'] <= 1.0 for r in images)
  assert all(0.0 < r['acceptance'] <= 1.0 for r in images
             if r['method'] in ('mwg', 'mwg_masked'))
  assert len([f for f in os.listdir(tmp_path)
              if f.startswith('completions_')]) == 4
