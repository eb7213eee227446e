"""Tests of vae.variance_study: a tiny VAE (784-8-2), few draws, fixed seeds."""

import jax
from jax import flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from vae import data
from vae import variance_study as vs

NUM_DRAWS = 100
BATCH = 4
ELBO_ESTIMATORS = ('pathwise', 'score', 'score_moving_average', 'score_rloo')


@pytest.fixture(scope='module')
def setup():
  images = data.load_split('synthetic', 'train', num_examples=64)
  model = vs.small_vae(latent_dim=2, hidden_sizes=(8,),
                       pixel_mean=images.mean(0))
  params = model.init(jax.random.PRNGKey(0))
  zeros = {g: jnp.zeros_like(flatten_util.ravel_pytree(params[g])[0])
           for g in vs.GROUPS}
  return model, params, jnp.asarray(images[:BATCH]), zeros


@pytest.fixture(scope='module')
def elbo_stats(setup):
  """ELBO, N=5, independent samples per estimator (no common random numbers)."""
  model, params, batch, zeros = setup
  baseline = jax.jit(vs.score_cost, static_argnums=(0, 4))(
      model, params, batch, jax.random.PRNGKey(100), 'elbo')
  fn = vs.draw_fn(model, 'elbo', ELBO_ESTIMATORS, 5, NUM_DRAWS, BATCH,
                  common_random_numbers=False)
  out = fn(params, batch, jax.random.PRNGKey(0), baseline, zeros)
  return jax.tree.map(np.asarray, out)


def _total_variance(stats, estimator, group='encoder'):
  return vs.summarize(stats[estimator][group])['total_variance']


def test_score_function_variance_exceeds_pathwise_on_encoder(elbo_stats):
  pathwise = _total_variance(elbo_stats, 'pathwise')
  for est in ('score', 'score_moving_average', 'score_rloo'):
    assert _total_variance(elbo_stats, est) > 2 * pathwise, est


def test_baseline_and_rloo_reduce_score_variance(elbo_stats):
  score = _total_variance(elbo_stats, 'score')
  assert _total_variance(elbo_stats, 'score_moving_average') < score / 3
  assert _total_variance(elbo_stats, 'score_rloo') < score / 3


def test_elbo_decoder_means_agree_within_standard_errors(elbo_stats):
  # Every ELBO estimator's decoder gradient is the MC average of
  # ∇_θ log p(x|z): same expectation. Independent draws -> z-scores ~ N(0,1).
  ref = elbo_stats['pathwise']['decoder']
  for est in ('score', 'score_moving_average', 'score_rloo'):
    other = elbo_stats[est]['decoder']
    se = np.sqrt((np.asarray(ref['variance'], np.float64) +
                  np.asarray(other['variance'], np.float64)) / NUM_DRAWS)
    diff = np.asarray(ref['mean'], np.float64) - np.asarray(other['mean'])
    z = diff[se > 0] / se[se > 0]
    assert z.size > 7000
    assert np.max(np.abs(z)) < 5.0, est  # P(|z|>5) ~ 6e-7 per coordinate.


def test_dreg_encoder_snr_exceeds_iwae_pathwise(setup):
  # Rainforth et al. (2018): the pathwise IWAE encoder SNR decays with K;
  # DReG (Tucker et al. 2019) does not. Seeds 0-3 give ratios 1.3-1.5 here.
  model, params, batch, zeros = setup
  fn = vs.draw_fn(model, 'iwae', ('pathwise', 'dreg'), 10, NUM_DRAWS, BATCH)
  out = fn(params, batch, jax.random.PRNGKey(0), jnp.float32(0.0), zeros)
  snr = {e: vs.summarize(out[e]['encoder'])['snr'] for e in out}
  assert snr['dreg'] > 1.1 * snr['pathwise'], snr
  # Common random numbers: both estimators saw the same samples, so their
  # bound values and decoder gradients coincide.
  np.testing.assert_allclose(out['dreg']['bound'], out['pathwise']['bound'],
                             rtol=1e-5)
  np.testing.assert_allclose(out['dreg']['decoder']['mean'],
                             out['pathwise']['decoder']['mean'], rtol=1e-3,
                             atol=1e-4)


def test_chunked_moments_match_numpy():
  rng = np.random.default_rng(0)
  x = rng.normal(3.0, 2.0, size=(12, 5)).astype(np.float32)
  ref = rng.normal(size=5).astype(np.float32)
  acc = (jnp.zeros(5), jnp.zeros(5))
  dots, sqs = [], []
  for i in range(3):
    mean, m2, dot, sq = vs._chunk_stats(jnp.asarray(x[4 * i:4 * i + 4]),
                                        jnp.asarray(ref))
    acc = vs._merge(acc, (mean, m2), 4 * i, 4)
    dots.append(dot)
    sqs.append(sq)
  np.testing.assert_allclose(acc[0], x.mean(0), rtol=1e-5)
  np.testing.assert_allclose(acc[1] / 11, x.var(0, ddof=1), rtol=1e-4)
  np.testing.assert_allclose(np.concatenate(dots), x @ ref, rtol=1e-5)
  np.testing.assert_allclose(np.concatenate(sqs), (x**2).sum(1), rtol=1e-5)


def test_chunk_is_a_divisor_within_budget():
  assert vs._chunk(200, 16 * 784) == 50
  assert vs._chunk(200, 16 * 20 * 784) == 25
  assert vs._chunk(7, 10) == 7
  assert vs._chunk(97, 16 * 20 * 784) == 1  # prime: one draw per chunk.


def test_summarize():
  stats = {'mean': np.array([1.0, -2.0, 0.0]),
           'variance': np.array([4.0, 1.0, 0.0]),
           'cosines': np.array([0.5, 1.0]), 'cosine_of_mean': 0.9}
  s = vs.summarize(stats)
  assert s['total_variance'] == 5.0
  assert s['snr'] == pytest.approx((0.5 + 2.0) / 2)  # zero-std coordinate out.
  assert s['cosine_to_reference'] == 0.75
  assert s['num_params'] == 3


def test_plan_skips_small_n_and_adds_the_reference_estimator():
  plan = vs._plan({'elbo': ('score', 'score_rloo'), 'iwae': ('vimco',)},
                  [1, 4])
  assert plan['elbo', 1] == ('score',)
  assert plan['elbo', 4] == ('score', 'score_rloo', 'pathwise')
  assert plan['iwae', 1] == ('dreg',)
  assert plan['iwae', 4] == ('vimco', 'dreg')


def test_bad_arguments_raise(setup):
  model, _, batch, _ = setup
  with pytest.raises(ValueError, match='num_draws must be >= 2'):
    vs.draw_fn(model, 'elbo', ('pathwise',), 1, 1, BATCH)
  with pytest.raises(ValueError, match='no score-function cost'):
    vs.score_cost(model, None, batch, jax.random.PRNGKey(0), 'iwae')
  with pytest.raises(ValueError, match='non-negative'):
    vs.train_checkpoints(model, np.zeros((8, 784)), [-1],
                         jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match='reference_draws'):
    vs.study(model, [], batch, {'elbo': ('pathwise',)}, [1], 10, 0, 0)
