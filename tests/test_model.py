"""Tests for vae.model (bounds and surrogates of any model), vae.importance
and vae.models.image_vae, on a VAE small enough to integrate exactly."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae import data as data_lib
from vae import distributions as dists
from vae import evaluate
from vae import importance
from vae import kl as kl_lib
from vae import model as model_lib
from vae import optim
from vae import train
from vae.estimators import registry
from vae.models import image_vae


@pytest.fixture(scope='module')
def tiny():
  """A 1-D latent VAE on 12-pixel data: log p(x) by quadrature over z."""
  model = image_vae.burda_vae(latent_dim=1, hidden_sizes=(8,), data_dim=12)
  params = model.init(jax.random.PRNGKey(0))
  x = (jax.random.uniform(jax.random.PRNGKey(1), (4, 12)) < 0.3).astype(
      jnp.float32)
  return model, params, x


@functools.partial(jax.jit, static_argnums=0)
def exact_log_px(model, params, x):
  """log ∫ p(x|z) N(z; 0, 1) dz on a dense grid (trapezoid, |z| <= 10)."""
  z = jnp.linspace(-10.0, 10.0, 20001)[:, None]
  logits = model.decoder_net.apply(params['decoder'], z)  # [G, 12].
  log_lik = jax.vmap(lambda xi: jnp.sum(
      xi * logits - jax.nn.softplus(logits), -1))(x)
  log_prior = -0.5 * z[:, 0]**2 - 0.5 * jnp.log(2 * jnp.pi)
  dz = z[1, 0] - z[0, 0]
  return jax.nn.logsumexp(log_lik + log_prior, axis=-1) + jnp.log(dz)


def test_importance_sampling_converges_to_the_exact_log_likelihood(tiny):
  """log p̂ within 5 of its own delta-method SEs of quadrature, for the
  encoder's q and for the prior as proposals; the SE itself is checked
  against the spread of independent estimates."""
  model, params, x = tiny
  exact = np.asarray(exact_log_px(model, params, x))
  run = functools.partial(importance.importance_sampling, model, params,
                          np.asarray(x), num_samples=4000, chunk_size=500)
  for proposal in (None, importance.prior_proposal(model, params, 4)):
    out = run(jax.random.PRNGKey(2), proposal=proposal)
    assert np.all(np.abs(out['log_px'] - exact) < 5 * out['log_px_se'] +
                  1e-4), (out['log_px'], exact, out['log_px_se'])
  assert np.all(out['log_px_se'] < 0.05)  # Tight enough to catch errors.
  # Chunk size changes only which random numbers are used: both converge.
  one_chunk = run(jax.random.PRNGKey(2), chunk_size=4000)['log_px']
  enc = run(jax.random.PRNGKey(2))
  assert np.all(np.abs(one_chunk - enc['log_px']) <
                5 * np.sqrt(2) * enc['log_px_se'] + 1e-4)
  # 40 independent K = 100 estimates: their sd matches the SEs each run
  # reports (delta method for log p̂; sd / √groups for the ELBO and
  # IWAE_10) within the sd's own sampling error (~1/√(2·39) relative, ×4).
  small = [run(jax.random.PRNGKey(10 + i), num_samples=100, chunk_size=100,
               iwae_ks=(10,)) for i in range(40)]
  for name in ('log_px', 'elbo', 'iwae_10'):
    sd = np.std([s[name] for s in small], axis=0, ddof=1)
    se = np.mean([s[name + '_se'] for s in small], axis=0)
    np.testing.assert_allclose(sd, se, rtol=4 / np.sqrt(2 * 39), err_msg=name)
  with pytest.raises(ValueError, match='multiple'):
    run(jax.random.PRNGKey(4), num_samples=1000, chunk_size=300)


def test_importance_bounds_are_ordered_and_nested_estimates_match(tiny):
  """From one stream: ELBO < IWAE_1-ish < IWAE_8 < log p̂ on average, the
  mean of IWAE_1 = the MC-KL ELBO's value (same weights), and the nested
  estimate at K = 2^max is log p̂ itself."""
  model, params, x = tiny
  out = importance.importance_sampling(
      model, params, np.asarray(x), jax.random.PRNGKey(6), num_samples=1024,
      chunk_size=256, iwae_ks=(1, 8), nested=True)
  exact = np.asarray(exact_log_px(model, params, x))
  assert np.all(out['elbo'] + 3 * out['elbo_se'] < out['iwae_8'])
  assert np.all(out['iwae_8'] < exact)
  # IWAE_1 averages log w; the ELBO with analytic KL has the same mean:
  # their difference is Monte Carlo noise of the KL part (~ elbo_se).
  assert np.all(np.abs(out['iwae_1'] - out['elbo']) < 5 * out['elbo_se'])
  np.testing.assert_allclose(out['log_px_by_k'][:, -1], out['log_px'],
                             rtol=1e-5)
  assert out['log_px_by_k'].shape == (4, 11)


def test_bounds_are_ordered(tiny):
  """E[ELBO] < E[IWAE_5] < E[IWAE_50] < log p(x), over 2000 draws."""
  model, params, x = tiny

  @jax.jit
  def bounds(params):
    keys = jax.random.split(jax.random.PRNGKey(3), 2000)
    return [jnp.mean(jax.vmap(lambda key: model_lib.batch_surrogate(
        model, params, x, key, objective, 'pathwise', k))(keys))
            for objective, k in (('elbo', 1), ('iwae', 5), ('iwae', 50))]

  elbo, iwae5, iwae50 = bounds(params)
  assert elbo < iwae5 < iwae50 < float(jnp.mean(exact_log_px(model, params,
                                                             x)))


def test_each_surrogate_branch_gives_gradients_for_both_networks(tiny):
  """Every branch of `surrogate_objective` on the model: the analytic-KL
  ELBO, the Monte Carlo KL integrand, STL, and each IWAE surrogate (the
  E_q[f] estimators themselves are checked against exact gradients in
  the registry tests)."""
  model, params, x = tiny
  cases = [('elbo', 'pathwise'), ('elbo', 'score'),
           ('elbo_mc_kl', 'pathwise'), ('elbo_mc_kl', 'score_rloo'),
           ('elbo_mc_kl', 'stl')] + [
               ('iwae', est) for est in registry.names('iwae', 'continuous')]

  @jax.jit  # One program for all the cases: one compilation.
  def values_and_grads(params):
    return [jax.value_and_grad(model_lib.batch_surrogate, argnums=1)(
        model, params, x, jax.random.PRNGKey(5), objective, est, 3, 1.0, 0.0)
            for objective, est in cases]

  for case, (value, grads) in zip(cases, values_and_grads(params)):
    assert np.isfinite(value), case
    for group in ('encoder', 'decoder'):
      leaves = jax.tree_util.tree_leaves(grads[group])
      assert all(np.all(np.isfinite(g)) for g in leaves), (case, group)
      assert sum(float(jnp.sum(g**2)) for g in leaves) > 0, (case, group)


def test_model_config_builds_the_burda_architecture():
  config = image_vae.ModelConfig()
  model = image_vae.make(config)
  assert model == image_vae.burda_vae()  # Hashable, equal: one compile.
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0))
  count = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))
  assert count == config.num_params() == 217_300 + 207_984
  small = image_vae.ModelConfig(hidden_sizes=(8, 3), latent_dim=2)
  shapes = jax.eval_shape(image_vae.make(small, 12).init,
                          jax.random.PRNGKey(0))
  assert sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes)) == (
      small.num_params(12))
  for kwargs, message in [(dict(latent_dim=10**8), 'latent_dim: must be <='),
                          (dict(hidden_sizes=(200, 0)), 'hidden_sizes'),
                          (dict(activation='tahn'), 'activation')]:
    with pytest.raises(ValueError, match=message):
      image_vae.ModelConfig(**kwargs)


def test_init_params_sets_the_output_bias_to_the_mean_logit(tiny):
  model, _, x = tiny
  key = jax.random.PRNGKey(7)
  mean = np.linspace(0.0, 1.0, 12)
  params = model.init(key, mean)
  p = np.clip(mean, 1e-3, 1 - 1e-3)
  np.testing.assert_allclose(params['decoder']['params']['logits']['bias'],
                             np.log(p / (1 - p)), rtol=1e-5)
  plain = model.init(key)
  for path in (('encoder',), ('decoder', 'params', 'trunk')):
    a, b = params, plain
    for part in path:
      a, b = a[part], b[part]
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(u, v)


def test_batch_objective_cost_is_the_score_function_cost(tiny):
  """f̄ = S̄ + β KL for 'elbo' and f̄ = S̄ for 'elbo_mc_kl'; same S̄."""
  model, params, x = tiny
  key, b = jax.random.PRNGKey(8), jnp.float32(-3.0)

  @jax.jit
  def values(params):
    kl = jnp.mean(jnp.sum(kl_lib.kl_divergence(
        model.encoder(params, x), model.prior(params)), -1))
    return kl, [(model_lib.batch_objective(
        model, params, x, key, objective, 'score_moving_average', 2, 0.5, b),
                 model_lib.batch_surrogate(
        model, params, x, key, objective, 'score_moving_average', 2, 0.5, b))
                for objective in ('elbo', 'elbo_mc_kl')]

  kl, (((elbo, cost), elbo_alone), ((mc, mc_cost), mc_alone)) = values(
      params)
  assert float(elbo) == pytest.approx(float(elbo_alone), rel=1e-6)
  assert float(mc) == pytest.approx(float(mc_alone), rel=1e-6)
  assert float(cost) == pytest.approx(float(elbo + 0.5 * kl), rel=1e-5)
  assert float(mc_cost) == pytest.approx(float(mc), rel=1e-6)


@dataclasses.dataclass(frozen=True)
class LinearGaussian:
  """A fourth model, defined here in ten lines: the 1-D linear-Gaussian

    p(z) = N(0, 1),  p(x|z) = N(w z + b, σ²),  q(z|x) = N(c x + d, s²),

  whose log p(x) = log N(x; b, w² + σ²) is known in closed form."""
  latent_dim: int = 1
  data_dim: int = 1

  def init(self, key, data_mean=None):
    del data_mean
    return {'w': jnp.ones(1), 'b': jnp.zeros(1), 'log_sigma': jnp.zeros(1),
            'c': jnp.full(1, 0.1), 'd': jnp.zeros(1), 'log_s': jnp.zeros(1),
            'unused': jax.random.normal(key, ())}

  def prior(self, params):
    return dists.standard_normal((1,))

  def encoder(self, params, x):
    loc = params['c'] * x + params['d']
    return dists.Normal(loc, jnp.broadcast_to(params['log_s'], loc.shape))

  def decoder(self, params, z):
    return dists.Normal(params['w'] * z + params['b'], params['log_sigma'])


def test_a_new_model_trains_evaluates_and_importance_samples(tmp_path):
  """The one trainer, evaluator and IS engine on a model defined inline:
  training raises the ELBO and moves (b, w² + σ²) toward the data's mean
  and variance (the maximum-likelihood fit); the evaluator's log p̂ agrees
  with the closed form within 5 of its Monte Carlo standard errors."""
  rng = np.random.RandomState(0)
  x = (1.0 + 2.0 * rng.randn(3000, 1)).astype(np.float32)
  data = data_lib.Dataset('toy', x[:2000], x[2000:2500], x[2500:], 'none')
  model = LinearGaussian()
  config = train.TrainConfig(batch_size=100, epochs=40, test_every=20)
  result = train.train(model, data, optim.OptimizerConfig(learning_rate=0.05),
                       config, seed=0, checkpoint_dir=str(tmp_path),
                       log=lambda s: None)
  rows = result.history
  assert rows[-1]['test_bound'] > rows[0]['train_bound'] + 0.1
  p = result.state.params
  var = float(p['w'][0]**2 + np.exp(2 * p['log_sigma'][0]))
  assert abs(float(p['b'][0]) - x[:2000].mean()) < 0.1
  assert abs(var / x[:2000].var() - 1) < 0.1
  ev = evaluate.evaluate(model, p, data, evaluate.EvalConfig(
      eval_k=500, eval_chunk_size=100, eval_iwae_ks=(1, 10),
      pictures=False), seed=1)
  exact = -np.mean(np.asarray(dists.Normal.from_scale(
      p['b'], np.sqrt(var)).log_prob(data.test)))
  per_image = importance.importance_sampling(
      model, p, data.test, jax.random.PRNGKey(3), 500, chunk_size=100)
  se = np.sqrt(np.sum(per_image['log_px_se']**2)) / len(data.test)
  assert abs(ev.summary['test_nll'] - exact) < 5 * se + 1e-4
  assert abs(-per_image['log_px'].mean() - exact) < 5 * se + 1e-4
  assert ev.summary['test_elbo'] < -ev.summary['test_nll']
