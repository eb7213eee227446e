"""vae.evaluate: importance-sampled log p(x) against quadrature, bounds,
active units, picture arrays, settings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vae import ais
from vae import data
from vae import distributions as dists
from vae import evaluate
from vae import importance
from vae import kl as kl_lib
from vae.models import image_vae


@pytest.fixture(scope='module')
def model_params_images():
  """A random 1-D-latent VAE (so log p(x) is a 1-D integral) and 7 images."""
  model = image_vae.burda_vae(latent_dim=1, hidden_sizes=(8,))
  params = model.init(jax.random.PRNGKey(0))
  images = data.synthetic_images(7, seed=1)
  return model, params, images


@pytest.fixture(scope='module')
def is_out(model_params_images):
  model, params, images = model_params_images
  return importance.importance_sampling(
      model, params, images, jax.random.PRNGKey(1), num_samples=20000,
      iwae_ks=(1, 5, 50), batch_size=3, chunk_size=1000)  # Pads 7 to 9.


def _exact_log_px(model, params, images):
  """log ∫ p(x|z) N(z; 0, 1) dz by the trapezoid rule on [-10, 10]."""
  z = jnp.linspace(-10.0, 10.0, 4001)[:, None]
  logits = model.decoder_net.apply(params['decoder'], z)  # [Z, 784].
  log_joint = (jax.vmap(lambda x: jnp.sum(
      dists.Bernoulli(logits).log_prob(x), -1))(jnp.asarray(images))
               + jax.scipy.stats.norm.logpdf(z[:, 0]))  # [N, Z].
  dz = z[1, 0] - z[0, 0]
  return np.asarray(jax.nn.logsumexp(log_joint, -1) + jnp.log(dz))


def test_bernoulli_log_likelihood_matches_distribution():
  logits = jnp.array([[-100.0, -3.0, 0.0, 2.5, 100.0]] * 3)
  x = jnp.array([[0, 1, 1, 0, 1], [1, 0, 0, 1, 0], [0.2, 0.5, 1, 0, 0.7]])
  np.testing.assert_allclose(
      dists.bernoulli_log_likelihood(x, logits),
      jnp.sum(dists.Bernoulli(logits).log_prob(x), -1), rtol=1e-6)


def test_importance_sampling_converges_to_exact_log_px(model_params_images,
                                                       is_out):
  model, params, images = model_params_images
  exact = _exact_log_px(model, params, images)
  out = is_out
  assert set(out) == {'log_px', 'log_px_se', 'elbo', 'elbo_se', 'kl',
                      'iwae_1', 'iwae_5', 'iwae_50', 'iwae_1_se',
                      'iwae_5_se', 'iwae_50_se'}
  assert all(v.shape == (7,) for v in out.values())
  # The IS error at K = 20000 is about ±0.03 nats here (±0.1 at K = 2000).
  np.testing.assert_allclose(out['log_px'], exact, atol=0.1)
  assert abs(np.mean(out['log_px'] - exact)) < 0.05
  # Bounds (each averaged over 20000 samples): ELBO ≤ IWAE_5 ≤ IWAE_50 ≤ log p.
  assert np.all(out['elbo'] <= out['iwae_5'])
  assert np.all(out['iwae_5'] <= out['iwae_50'] + 1e-3)
  assert np.all(out['iwae_50'] <= exact + 0.02)
  np.testing.assert_allclose(out['iwae_1'], out['elbo'], atol=0.1)
  q = model.encoder(params, jnp.asarray(images))
  np.testing.assert_allclose(
      out['kl'], jnp.sum(kl_lib.kl_divergence(q, model.prior(params)), -1),
      rtol=1e-5)


def test_mean_bound_pads_and_agrees(model_params_images, is_out):
  model, params, images = model_params_images
  out = is_out
  # One IWAE_50 draw per image (7 padded to 9) vs averages over 20000.
  iwae = evaluate.mean_bound(model, params, images, jax.random.PRNGKey(3),
                               'iwae', 50, batch_size=3)
  assert iwae == pytest.approx(out['iwae_50'].mean(), abs=0.4)


def test_settings_are_checked_in_one_line():
  config = evaluate.EvalConfig(eval_iwae_ks=(1, 50))
  assert config.iwae_ks(5) == (1, 5, 50) and config.iwae_ks(3) == (1, 50)
  for kwargs, message in [
      (dict(eval_k=1000, eval_chunk_size=300), 'multiple of eval_chunk_size'),
      (dict(eval_k=1000, eval_iwae_ks=(1, 7)), '7 must divide'),
      (dict(eval_k=10**12), 'eval_k: must be <= 1000000'),
      (dict(eval_batch_size=10_000, eval_chunk_size=10_000),
       'rows per matmul'),
      (dict(num_eval=0), 'num_eval: must be >= 1')]:
    with pytest.raises(ValueError, match=message) as info:
      evaluate.EvalConfig(**kwargs)
    assert '\n' not in str(info.value)


def test_latent_statistics(model_params_images):
  model, params, images = model_params_images
  stats = evaluate.latent_statistics(model, params, images, batch_size=3)
  q = model.encoder(params, jnp.asarray(images))
  np.testing.assert_allclose(stats['activity'], np.var(np.asarray(q.loc), 0),
                             rtol=1e-4)
  assert stats['active_units'] == int(np.sum(stats['activity'] > 1e-2))
  np.testing.assert_allclose(
      stats['kl_per_dim'],
      np.mean(np.asarray(kl_lib.kl_divergence(q, model.prior(params))), 0),
      rtol=1e-5)


def test_test_images_binarizes_dynamic_datasets_once():
  grey = np.full((4, 784), 0.5, np.float32)
  ds = data.Dataset('mnist', grey, grey, grey, binarization='dynamic')
  a, b = evaluate.test_images(ds), evaluate.test_images(ds)
  assert set(np.unique(a)) <= {0.0, 1.0}
  np.testing.assert_array_equal(a, b)
  fixed = data.Dataset('synthetic', grey, grey, grey, binarization='fixed')
  np.testing.assert_array_equal(evaluate.test_images(fixed), grey)


def test_inpainting_keeps_the_top_half(model_params_images):
  model, params, images = model_params_images
  x = jnp.asarray(images)  # All 7, as `evaluate.pictures`: one compile.
  pixel_mean = jnp.full((784,), 0.2)
  out = evaluate.inpaint(model, params, x, jax.random.PRNGKey(0),
                         pixel_mean, 1000, 5)
  top = slice(0, 392)
  np.testing.assert_array_equal(out['masked'][:, top], x[:, top])
  np.testing.assert_allclose(out['masked'][:, 392:], 0.2)
  np.testing.assert_array_equal(out['mean'][:, top], x[:, top])
  assert out['draws'].shape == (7, 5, 784)
  np.testing.assert_array_equal(out['draws'][:, :, top],
                                jnp.broadcast_to(x[:, None, top], (7, 5, 392)))
  assert np.all((out['mean'] >= 0) & (out['mean'] <= 1))
  assert np.all((out['ess'] >= 1 - 1e-4) & (out['ess'] <= 1000 + 1e-2))


def test_evaluate_summarizes_importance_sampling(model_params_images,
                                                 is_out):
  model, params, images = model_params_images
  ds = data.Dataset('synthetic', images, images, images, 'fixed')
  config = evaluate.EvalConfig(eval_k=20000, eval_chunk_size=1000,
                               eval_batch_size=3, eval_iwae_ks=(1, 50))
  ev = evaluate.evaluate(model, params, ds, config, seed=4, train_k=5)
  assert config.iwae_ks(5) == (1, 5, 50)  # As `is_out`: compiled once.
  per_image = importance.importance_sampling(
      model, params, images, jax.random.fold_in(jax.random.PRNGKey(4), 3),
      20000, (1, 5, 50), batch_size=3, chunk_size=1000)
  s = ev.summary
  assert s['test_nll'] == pytest.approx(-per_image['log_px'].mean())
  assert s['test_iwae_5'] == pytest.approx(per_image['iwae_5'].mean())
  assert s['test_nll_stderr'] == pytest.approx(
      per_image['log_px'].std() / np.sqrt(7))
  assert s['test_nll'] == pytest.approx(-is_out['log_px'].mean(), abs=0.05)
  assert (s['eval_k'], s['num_eval'], s['split']) == (20000, 7, 'test')
  assert s['test_elbo'] <= s['test_iwae_5'] <= -s['test_nll'] + 1e-3
  assert s['active_units'] == ev.latents['active_units']
  assert set(ev.timing) == {'eval_wall_s', 'eval_cpu_s'}
  p = ev.pictures
  assert p['prior_samples'].shape == (100, 784)
  assert p['images'].shape == p['reconstructions'].shape == (7, 784)
  assert p['draws'].shape == (7, 5, 784)
  assert np.all((p['reconstructions'] >= 0) & (p['reconstructions'] <= 1))


def test_ais_beside_is_agrees_with_quadrature(model_params_images, is_out):
  """AIS (T = 100, 16 chains) on the 1-D-latent VAE: each image within 4
  of its SEs of the trapezoid-rule log p(x); the summary's means and SEs."""
  model, params, images = model_params_images
  exact = _exact_log_px(model, params, images)
  config = ais.AISConfig(ais_images=5, ais_temperatures=100,
                         ais_batch_size=5, ais_leapfrog=5)
  summary, per_image = evaluate.ais_summary(
      model, params, images, is_out['log_px'], is_out['log_px_se'], config,
      jax.random.PRNGKey(2))
  assert per_image['log_px'].shape == (5,)
  error = per_image['log_px'] - exact[:5]
  assert np.all(np.abs(error) < 4 * per_image['log_px_se'] + 0.02), error
  assert summary['ais_images'] == 5
  assert summary['ais_log_px'] == pytest.approx(per_image['log_px'].mean())
  assert summary['is_log_px'] == pytest.approx(is_out['log_px'][:5].mean())
  assert summary['ais_minus_is'] == pytest.approx(
      summary['ais_log_px'] - summary['is_log_px'])
  diff = per_image['log_px'] - is_out['log_px'][:5]
  assert summary['ais_minus_is_se'] == pytest.approx(
      np.std(diff, ddof=1) / np.sqrt(5))
  assert summary['ais_log_px_se_mc'] == pytest.approx(
      np.sqrt(np.sum(per_image['log_px_se']**2)) / 5)
  assert summary['ais_log_px_se_images'] == pytest.approx(
      np.std(per_image['log_px'], ddof=1) / np.sqrt(5))


@pytest.mark.parametrize('kwargs, message', [
    (dict(ais_temperatures=1), 'ais_temperatures: must be >= 2'),
    (dict(ais_step_size=0.0), 'ais_step_size: must be > 0'),
    (dict(ais_step_size=-1.0), 'ais_step_size: must be > 0'),
    (dict(ais_chains=0), 'ais_chains: must be >= 1'),
    (dict(bdmc_temperatures=(1, 10)), 'bdmc_temperatures'),
    (dict(ais_images=-1), 'ais_images: must be >= 0')])
def test_ais_settings_are_refused_in_one_line(kwargs, message):
  with pytest.raises(ValueError, match=message) as info:
    ais.AISConfig(**kwargs)
  assert '\n' not in str(info.value)


def test_ais_on_more_images_than_evaluated_is_refused():
  with pytest.raises(ValueError, match='ais_images: 20 is more than') as info:
    evaluate.EvalConfig(num_eval=10, ais=ais.AISConfig(ais_images=20))
  assert '\n' not in str(info.value)
  assert evaluate.EvalConfig().ais.ais_images == 0  # Off by default.


class _HalfNormal:
  """p(z) = 2 N(z; 0, 1) on z > 0 (log p(z) = -inf below 0)."""

  def event_log_prob(self, z):
    log_p = jnp.log(2.0) + jax.scipy.stats.norm.logpdf(z[..., 0])
    return jnp.where(z[..., 0] > 0, log_p, -jnp.inf)

  def sample(self, key, shape):
    return jnp.abs(jax.random.normal(key, tuple(shape) + (1,)))


class _HalfLine:
  """p(z) half-normal, p(x|z) = N(x; z, 1), q(z|x) = N(x/2, 1):
  p(x) = 2 N(x; 0, 2) Φ(x/√2) (the posterior is N(x/2, 1/2) cut at 0).
  At x ≤ 2 thousands of draws of q fall below 0; at x = 10, none."""
  latent_dim = 1

  def prior(self, params):
    return _HalfNormal()

  def decoder(self, params, z):
    return dists.Normal(z, jnp.zeros_like(z))

  def encoder(self, params, x):
    return dists.Normal(x / 2, jnp.zeros_like(x))


_HALF_LINE_X = np.array([[-1.0], [0.5], [2.0], [10.0]], np.float32)


def _half_line_log_px(x):
  x = np.asarray(x, np.float64)[:, 0]
  return (np.log(2.0) + stats.norm.logpdf(x, scale=np.sqrt(2.0))
          + stats.norm.logcdf(x / np.sqrt(2.0)))


def test_samples_outside_the_prior_give_elbo_minus_inf_not_nan():
  out = importance.importance_batch(
      _HalfLine(), {}, jnp.asarray(_HALF_LINE_X), jax.random.PRNGKey(0),
      num_samples=4000, chunk_size=200, iwae_ks=(1, 50))
  exact = _half_line_log_px(_HALF_LINE_X)
  # Where a log w is -inf, so are the ELBO and IWAE_1, and KL = +inf (the
  # Chan update gave (-inf) - (-inf) = NaN); log p̂ stays finite.
  for name in ('elbo', 'iwae_1'):
    np.testing.assert_array_equal(out[name][:3], -np.inf)
  np.testing.assert_array_equal(out['kl'][:3], np.inf)
  np.testing.assert_array_equal(out['elbo_se'][:3], np.inf)
  # x = 10: q(z < 0) = 3e-7; ELBO finite, below log p.
  assert np.isfinite(out['elbo'][3]) and out['elbo'][3] < exact[3]
  z = (np.asarray(out['log_px']) - exact) / np.asarray(out['log_px_se'])
  assert np.all(np.abs(z) < 4), z
  # IWAE_50 is finite unless all 50 draws of a group fall below 0.
  finite = np.isfinite(out['iwae_50'])
  assert finite[1:].all()
  assert np.all(out['iwae_50'][finite] <= exact[finite]
                + 4 * out['iwae_50_se'][finite])


def test_evaluate_counts_the_images_whose_elbo_is_minus_inf():
  x = _HALF_LINE_X
  dataset = data.Dataset('synthetic', x, x, x, binarization='fixed')
  config = evaluate.EvalConfig(eval_k=1000, eval_chunk_size=100,
                               eval_iwae_ks=(1,))
  lines = []
  ev = evaluate.evaluate(_HalfLine(), {}, dataset, config, log=lines.append)
  assert ev.summary['test_elbo_infinite_images'] == 3
  assert ev.summary['test_elbo'] == -np.inf
  assert ev.summary['test_kl'] == np.inf
  assert np.isfinite(ev.summary['test_nll'])
  assert ('3 of 4 images have ELBO = -inf' in lines[-1] and
          f'the other 1 images: ELBO {ev.per_image["elbo"][3]:.4f}.'
          in lines[-1])
