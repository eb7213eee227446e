"""Tests of vae.analysis.vae_gradients: a tiny VAE (784-8-2), few draws, fixed seeds."""

import jax
from jax import flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vae import data
from vae import model as model_lib
from vae.analysis import vae_gradients as vg

NUM_DRAWS = 100
BATCH = 4
ELBO_ESTIMATORS = ('pathwise', 'score', 'score_moving_average')


@pytest.fixture(scope='module')
def setup():
  images = data.synthetic_images(64)
  model = vg.small_vae(latent_dim=2, hidden_sizes=(8,),
                       pixel_mean=images.mean(0))
  params = model.init(jax.random.PRNGKey(0))
  zeros = {g: jnp.zeros_like(flatten_util.ravel_pytree(params[g])[0])
           for g in vg.GROUPS}
  return model, params, images, zeros


@pytest.fixture(scope='module')
def elbo_stats(setup):
  """ELBO, N=5, independent samples per estimator (no common random numbers)."""
  model, params, images, zeros = setup
  batch = jnp.asarray(images[:BATCH])
  baseline = jax.jit(vg.score_cost, static_argnums=(0, 4))(
      model, params, batch, jax.random.PRNGKey(100), 'elbo')
  fn = vg.draw_fn(model, 'elbo', ELBO_ESTIMATORS, 5, NUM_DRAWS, BATCH,
                  common_random_numbers=False)
  out = fn(params, batch, jax.random.PRNGKey(0), baseline, zeros)
  return jax.tree.map(np.asarray, out)


def _total_variance(stats, estimator, group='encoder'):
  return float(np.sum(stats['variance'][estimator][group], dtype=np.float64))


def test_score_function_variance_exceeds_pathwise_on_encoder(elbo_stats):
  pathwise = _total_variance(elbo_stats, 'pathwise')
  for est in ('score', 'score_moving_average'):
    assert _total_variance(elbo_stats, est) > 2 * pathwise, est


def test_moving_average_baseline_reduces_score_variance(elbo_stats):
  score = _total_variance(elbo_stats, 'score')
  assert _total_variance(elbo_stats, 'score_moving_average') < score / 3


def test_elbo_decoder_means_agree_within_standard_errors(elbo_stats):
  # Every ELBO estimator's decoder gradient is the MC average of
  # ∇_θ log p(x|z): same expectation. Independent draws -> z-scores ~ N(0,1).
  mean, var = elbo_stats['mean'], elbo_stats['variance']
  for est in ('score', 'score_moving_average'):
    se = np.sqrt((var['pathwise']['decoder'].astype(np.float64) +
                  var[est]['decoder']) / NUM_DRAWS)
    diff = mean['pathwise']['decoder'].astype(np.float64) - mean[est][
        'decoder']
    z = diff[se > 0] / se[se > 0]
    assert z.size > 7000
    assert np.max(np.abs(z)) < 5.0, est  # P(|z|>5) ~ 6e-7 per coordinate.


def test_dreg_encoder_snr_exceeds_iwae_pathwise(setup):
  # Rainforth et al. (2018): the pathwise IWAE encoder SNR decays with K;
  # DReG (Tucker et al. 2019) does not. Seeds 0-3 give ratios 1.3-1.5 here.
  model, params, images, zeros = setup
  fn = vg.draw_fn(model, 'iwae', ('pathwise', 'dreg'), 10, NUM_DRAWS, BATCH)
  out = fn(params, jnp.asarray(images[:BATCH]), jax.random.PRNGKey(0),
           jnp.float32(0.0), zeros)
  snr = {e: vg.summarize(out['mean'][e]['encoder'],
                         out['variance'][e]['encoder'],
                         out['cosine'][e]['encoder'], zeros['encoder'])['snr']
         for e in ('pathwise', 'dreg')}
  assert snr['dreg'] > 1.1 * snr['pathwise'], snr
  # Common random numbers: both estimators saw the same samples, so their
  # bound values and decoder gradients coincide.
  np.testing.assert_allclose(out['mean']['dreg']['bound'],
                             out['mean']['pathwise']['bound'], rtol=1e-5)
  np.testing.assert_allclose(out['mean']['dreg']['decoder'],
                             out['mean']['pathwise']['decoder'], rtol=1e-3,
                             atol=1e-4)


def test_train_checkpoints_equal_a_python_loop(setup, monkeypatch):
  """`vae.train`-based checkpoints equal the documented loop, step by step.

  Blocks of 3 steps per `fit` call: [0, 3) crosses an epoch (2 steps each),
  [3, 4) starts inside one.
  """
  model, _, images, _ = setup
  monkeypatch.setattr(vg, '_BLOCK_FLOATS', 3 * 32 * 784)
  key, decay, steps = jax.random.PRNGKey(7), 0.5, (0, 4)
  cks = vg.train_checkpoints(model, images, steps, key, optax.adam(1e-2),
                             batch_size=32, baseline_objectives=('elbo',),
                             baseline_decay=decay)
  assert [c.step for c in cks] == list(steps)
  init_key, order_key, step_key, cost_key = jax.random.split(key, 4)
  seed = int(jax.random.randint(order_key, (), 0, 2**31 - 1))
  params = model.init(init_key)
  opt = optax.adam(1e-2)
  opt_state = opt.init(params)
  cost = lambda p, x, k: vg.score_cost(model, p, x, k, 'elbo')
  b = jax.jit(cost)(params, data.epoch_batches(images, 32, seed, 0)[0],
                    cost_key)

  @jax.jit
  def step(params, opt_state, b, x, t):
    loss_key, c_key = jax.random.split(jax.random.fold_in(step_key, t))
    grads = jax.grad(lambda p: -model_lib.batch_surrogate(
        model, p, x, loss_key, 'elbo', 'pathwise', 1))(params)
    b = decay * b + (1 - decay) * cost(params, x, c_key)
    updates, opt_state = opt.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, b

  for t in range(4):
    if t in steps:
      ck = cks[steps.index(t)]
      np.testing.assert_allclose(ck.baselines['elbo'], b, rtol=1e-5)
      jax.tree.map(lambda u, v: np.testing.assert_allclose(
          u, v, rtol=1e-4, atol=1e-6), ck.params, params)
    x = data.epoch_batches(images, 32, seed, t // 2)[t % 2]  # 2 per epoch.
    params, opt_state, b = step(params, opt_state, b, x, t)
  jax.tree.map(lambda u, v: np.testing.assert_allclose(
      u, v, rtol=1e-4, atol=1e-6), cks[-1].params, params)


def test_summarize_on_known_values():
  s = vg.summarize(np.array([1.0, -2.0, 0.0]), np.array([4.0, 1.0, 0.0]),
                   0.75, np.array([2.0, -4.0, 0.0]))
  assert s['total_variance'] == 5.0 and s['num_params'] == 3
  assert s['snr'] == pytest.approx((0.5 + 2.0) / 2)  # zero-std coordinate out.
  assert s['snr_median'] == pytest.approx(1.25)
  assert s['cosine_to_reference'] == 0.75
  assert s['cosine_of_mean_to_reference'] == pytest.approx(1.0)
  assert s['mean_norm'] == pytest.approx(np.sqrt(5.0))


def test_pooled_bias_against_the_formula():
  means = {'u1': np.array([1.0, 0.0]), 'u2': np.array([0.0, 1.0]),
           'b': np.array([3.0, 3.0]), 'other': np.array([9.0, 9.0])}
  tvar = {'u1': 10.0, 'u2': 30.0, 'b': 2.0, 'other': 1.0}
  out = vg.pooled_bias(means, tvar, ['u1', 'u2'], ['u1', 'u2', 'b'], 10)
  # Weights D / tr Σ = 1 and 1/3: reference (0.75, 0.25), tr Σ_r = 0.75.
  ref = np.array([0.75, 0.25])
  assert out['other'] is None
  assert out['u1'] == pytest.approx((np.sum((means['u1'] - ref)**2) - 1.0,
                                     1.0))
  assert out['b'] == pytest.approx((np.sum((means['b'] - ref)**2) - 0.95,
                                    0.95))


def test_plan_skips_small_n_and_adds_the_reference_estimator():
  plan = vg.plan({'elbo': ('score', 'score_rloo'), 'iwae': ('vimco',)},
                 [1, 4])
  assert plan['elbo', 1] == ('score',)
  assert plan['elbo', 4] == ('score', 'score_rloo', 'pathwise')
  assert plan['iwae', 1] == ('dreg',)
  assert plan['iwae', 4] == ('vimco', 'dreg')


def test_bad_arguments_raise(setup):
  model, _, images, _ = setup
  with pytest.raises(ValueError, match='no score-function cost'):
    vg.score_cost(model, None, images[:2], jax.random.PRNGKey(0), 'iwae')
  with pytest.raises(ValueError, match='non-negative'):
    vg.train_checkpoints(model, images, [-1], jax.random.PRNGKey(0),
                         optax.adam(1e-3))
  with pytest.raises(ValueError, match='reference_draws'):
    vg.study(model, [], images[:2], {'elbo': ('pathwise',)}, [1], 10, 0, 0)
