"""vae.models.sigmoid_belief_net and vae.analysis.discrete_latents on it,
against exact enumeration over the latents.

With 3 Bernoulli latents, q(b|x) has 8 configurations, so the ELBO, the
2-sample IWAE bound, their exact gradients, and the exact mean and variance
of the score-function estimators (over 8 samples or 64 pairs) are sums.
Measured moments come from `discrete_latents.encoder_gradient_moments`
(`vae.moments`), bounds from `vae.evaluate.mean_bound`.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vae import evaluate
from vae import kl as kl_lib
from vae import optim
from vae import stats
from vae.analysis import discrete_latents as dl
from vae.models import networks
from vae.models import sigmoid_belief_net as sbn

D, LATENTS, DRAWS, BASELINE = 5, 3, 20000, -3.0
CONFIGS = jnp.array(list(itertools.product([0.0, 1.0], repeat=LATENTS)))
MODEL = sbn.SBN(LATENTS, D)


@pytest.fixture(autouse=True, scope='module')
def x64():
  with jax.enable_x64(True):
    yield


@pytest.fixture(scope='module')
def setup(x64):
  del x64
  params = MODEL.init(jax.random.PRNGKey(0))
  params['prior_logits'] = jnp.array([0.3, -0.5, 0.1])
  x = jnp.array([1.0, 0.0, 1.0, 1.0, 0.0])
  return params, x


def _flat(tree):
  return jnp.concatenate([jnp.ravel(g) for g in jax.tree.leaves(tree)])


def _log_q(params, x, b):
  return jnp.sum(MODEL.encoder(params, x).log_prob(b), -1)


def _log_lik(params, x, b):
  """log p(x|b) = Σ_i x_i l_i - softplus(l_i), l = D_θ(b)."""
  return jnp.sum(MODEL.decoder(params, b).log_prob(x))


def _kl(params, x):
  return jnp.sum(kl_lib.kl_divergence(MODEL.encoder(params, x),
                                      MODEL.prior(params)))


def _exact_elbo(params, x):
  """Σ_b q(b|x) log p(x|b) - KL(q ‖ p), by enumeration."""
  q = jnp.exp(jax.vmap(lambda b: _log_q(params, x, b))(CONFIGS))
  recon = jax.vmap(lambda b: _log_lik(params, x, b))(CONFIGS)
  return q @ recon - _kl(params, x)


def _log_joint(params, x, b):
  return _log_lik(params, x, b) + jnp.sum(
      MODEL.prior(params).log_prob(b))


def _exact_iwae2(params, x):
  """E_{b1, b2 ~ q} log ½(w1 + w2), by enumerating the 64 pairs."""
  log_q = jax.vmap(lambda b: _log_q(params, x, b))(CONFIGS)
  log_w = jax.vmap(lambda b: _log_joint(params, x, b))(CONFIGS) - log_q
  pair = jnp.logaddexp(log_w[:, None], log_w[None, :]) - jnp.log(2.0)
  return jnp.sum(jnp.exp(log_q[:, None] + log_q[None, :]) * pair)


def _grad(fn, params, x):
  return _flat(jax.grad(fn)(params, x)['encoder'])


def _pairs(params, x, estimator):
  """Exact (mean, variance, μ4) of a 2-sample score estimator: 64 pairs.

  With s_k = ∇_φ log q(b_k|x), f_k = log p(x|b_k) and the analytic
  ∇_φ KL: score ½Σ_k f_k s_k; score_moving_average ½Σ_k (f_k - c) s_k;
  score_rloo ½Σ_k (f_k - f_{other}) s_k; each minus ∇_φ KL.
  """
  s = jax.vmap(lambda b: _flat(jax.grad(lambda p: _log_q(p, x, b))(
      params)['encoder']))(CONFIGS)
  f = jax.vmap(lambda b: _log_lik(params, x, b))(CONFIGS)
  q = jnp.exp(jax.vmap(lambda b: _log_q(params, x, b))(CONFIGS))
  c = {'score': 0.0, 'score_moving_average': BASELINE}.get(estimator)
  f1, f2 = f[:, None, None], f[None, :, None]
  if c is None:
    g = 0.5 * ((f1 - f2) * s[:, None] + (f2 - f1) * s[None, :])
  else:
    g = 0.5 * ((f1 - c) * s[:, None] + (f2 - c) * s[None, :])
  g = g - _grad(_kl, params, x)
  w = (q[:, None] * q[None, :])[..., None]
  mean = jnp.sum(w * g, (0, 1))
  return (mean, jnp.sum(w * (g - mean)**2, (0, 1)),
          jnp.sum(w * (g - mean)**4, (0, 1)))


def _measured(params, x, estimator, baseline=BASELINE):
  return dl.encoder_gradient_moments(
      MODEL, params, x[None], jax.random.PRNGKey(1), jnp.asarray(baseline), 0.5,
      estimator=estimator, num_samples=2, num_draws=DRAWS)


def _max_z(measured, exact_mean):
  se = np.sqrt(np.asarray(measured['variance']) / DRAWS)
  return np.max(np.abs(np.asarray(measured['mean'] - exact_mean)) / se)


@pytest.mark.parametrize('estimator', ['score', 'score_moving_average',
                                       'score_rloo'])
def test_score_estimators_mean_and_variance_equal_enumeration(setup,
                                                              estimator):
  params, x = setup
  mean, var, m4 = _pairs(params, x, estimator)
  np.testing.assert_allclose(mean, _grad(_exact_elbo, params, x), rtol=1e-9)
  out = _measured(params, x, estimator)
  threshold = stats.z_threshold(2 * mean.size, alpha=1e-3)
  assert _max_z(out, mean) < threshold
  z = stats.variance_z(out['variance'], var, m4, DRAWS, mean=mean)
  assert np.max(np.abs(z)) < threshold, (estimator, z)


def test_disarm_matches_the_exact_elbo_gradient(setup):
  params, x = setup
  out = _measured(params, x, 'disarm')
  assert _max_z(out, _grad(_exact_elbo, params, x)) < stats.z_threshold(
      18, alpha=1e-3)
  # DisARM's variance is far below the plain score function's (same cost).
  score_var = _pairs(params, x, 'score')[1]
  assert np.sum(out['variance']) < 0.5 * np.sum(score_var)


def test_vimco_matches_the_exact_iwae2_gradient(setup):
  params, x = setup
  out = _measured(params, x, 'vimco')
  assert _max_z(out, _grad(_exact_iwae2, params, x)) < stats.z_threshold(
      18, alpha=1e-3)


def test_relaxed_estimators_are_biased(setup):
  params, x = setup
  exact = _grad(_exact_elbo, params, x)
  for estimator in ('straight_through', 'gumbel_softmax'):
    assert _max_z(_measured(params, x, estimator), exact) > 10.0, estimator


def test_trainer_improves_the_elbo_and_keeps_the_moving_average():
  with jax.enable_x64(False):  # optim.TrainState keeps a float32 baseline.
    _check_trainer()


def _check_trainer():
  rng = np.random.default_rng(0)
  protos = rng.random((3, 16)) < 0.5
  x = jnp.asarray(protos[rng.integers(0, 3, 200)] ^ (rng.random((200, 16)) <
                                                      0.05), jnp.float32)
  model = sbn.SBN(4, 16)
  params = model.init(jax.random.PRNGKey(4), jnp.mean(x, 0))
  init_state, run_steps = dl.make_trainer(
      model, x, 'disarm', optax.adam(3e-2), batch_size=20, ma_decay=0.5)
  state = jax.jit(init_state)(params)
  assert isinstance(state, optim.TrainState)
  np.testing.assert_allclose(state.baseline,
                             dl.initial_baseline(model, params, x),
                             rtol=1e-5)
  key = jax.random.PRNGKey(5)
  before = evaluate.mean_bound(model, params, x, key, 'elbo', 8)
  state, values = jax.jit(run_steps)(state, jax.random.split(key, 300))
  after = evaluate.mean_bound(model, state.params, x, key, 'elbo', 8)
  assert values.shape == (300,) and np.all(np.isfinite(values))
  assert after > before + 1.0 and int(state.step) == 300
  # With decay ½ the baseline tracks the recent reconstruction terms.
  assert abs(float(state.baseline) - float(values[-1])) < 10.0
  with pytest.raises(ValueError, match='unknown estimator'):
    dl.surrogate(model, params, x[:1], key, 'arm', 2)


def test_leaky_relu_networks_equal_numpy():
  """E_φ, D_θ with a hidden layer: h = max(a, s·a), a = 2x-1 W_0 + b_0."""
  model = sbn.SBN(LATENTS, D, (4,), activation='leaky_relu',
                  negative_slope=0.3)
  params = model.init(jax.random.PRNGKey(3))
  x = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
  b = np.array([1.0, 0.0, 1.0])

  def mlp(net, v):
    layers = (net['params']['trunk']['hidden_0'], net['params']['logits'])
    (w0, b0), (w1, b1) = ((np.asarray(lay['kernel']), np.asarray(lay['bias']))
                          for lay in layers)
    a = v @ w0 + b0
    return np.where(a > 0, a, 0.3 * a) @ w1 + b1

  enc, log_lik = jax.jit(lambda p: (
      model.encoder(p, x).logits,
      jnp.sum(model.decoder(p, b).log_prob(x))))(params)
  np.testing.assert_allclose(enc, mlp(params['encoder'], 2 * x - 1),
                             rtol=1e-12)
  logits = mlp(params['decoder'], b)
  np.testing.assert_allclose(  # Σ_i x_i l_i - log(1 + e^{l_i}).
      log_lik, np.sum(x * logits - np.log1p(np.exp(logits))), rtol=1e-12)
  # P = Σ_l (m_l n_l + n_l) for the encoder 5 -> 4 -> 3.
  assert networks.num_params(params['encoder']) == 5 * 4 + 4 + 4 * 3 + 3


@jax.jit
def _exact_bounds(params, x):
  """log p(x); ELBO and Var_q[log p(x|b)]; IWAE_2 and its variance."""
  log_q = jax.vmap(lambda b: _log_q(params, x, b))(CONFIGS)
  f = jax.vmap(lambda b: _log_lik(params, x, b))(CONFIGS)
  log_joint = jax.vmap(lambda b: _log_joint(params, x, b))(CONFIGS)
  log_w = log_joint - log_q
  pair = jnp.logaddexp(log_w[:, None], log_w[None, :]) - jnp.log(2.0)
  weight = jnp.exp(log_q[:, None] + log_q[None, :])
  iwae2 = jnp.sum(weight * pair)
  recon = jnp.exp(log_q) @ f
  return {'log_px': jax.nn.logsumexp(log_joint), 'elbo': _exact_elbo(
      params, x), 'var_f': jnp.exp(log_q) @ (f - recon)**2, 'iwae2': iwae2,
          'var_iwae2': jnp.sum(weight * (pair - iwae2)**2)}


def test_evaluate_in_chunks_equals_enumeration(setup, monkeypatch):
  """ELBO_S and IWAE_2 averaged over N rows against their exact moments.

  ELBO_S(x) = (1/S) Σ_s log p(x|b_s) - KL has mean ELBO(x) and variance
  Var_q[log p(x|b)] / S; IWAE_2's mean and variance sum over the 64 pairs;
  ELBO ≤ IWAE_2 ≤ log p(x). Rows go through `mean_bound` in chunks of 3
  (and a remainder).
  """
  params, x = setup
  monkeypatch.setattr(evaluate, 'mean_bound', functools.partial(
      evaluate.mean_bound, batch_size=3))
  n, s = 3001, 2
  xs = jnp.broadcast_to(x, (n, D))
  out = dl.evaluate(MODEL, params, xs, xs, jax.random.PRNGKey(8),
                    eval_samples=s, iwae_samples=2)
  exact = _exact_bounds(params, x)
  threshold = stats.z_threshold(3)
  for name, mean, var in (
      ('train_elbo', exact['elbo'], exact['var_f'] / s),
      ('test_elbo', exact['elbo'], exact['var_f'] / s),
      ('test_iwae2', exact['iwae2'], exact['var_iwae2'])):
    z = stats.mean_z(out[name], mean, np.sqrt(var), n)
    assert abs(z) < threshold, (name, out[name], mean)
  # Train and test rows use different keys: not the same estimate.
  assert out['train_elbo'] != out['test_elbo']
  assert exact['elbo'] < exact['iwae2'] < exact['log_px']
  assert out['test_elbo'] < out['test_iwae2'] < exact['log_px']


def test_samples_per_estimator_and_refusals():
  assert dl.samples_per_estimator(('disarm', 'vimco', 'score_rloo'), 2, 5
                                  ) == {'disarm': 2, 'vimco': 5,
                                        'score_rloo': 2}
  assert dl.samples_per_estimator(('vimco',), 3) == {'vimco': 3}
  with pytest.raises(ValueError, match="'disarm' needs evals_per_example"):
    dl.samples_per_estimator(('disarm', 'vimco'), 1, 5)
  with pytest.raises(ValueError, match="'vimco' needs vimco_samples >= 2"):
    dl.samples_per_estimator(('vimco',), 2, 1)


def test_init_layout_output_bias_and_weight_scale():
  """Flax variables of the one MLP; b_out = logit(clip(x̄)); W ~ N(0, 1/m).

  Σ W² / (m n) over a 400 x 300 kernel has mean 1/m and standard error
  √(2/(m n)) / m.
  """
  model = sbn.SBN(300, 400, (), activation='leaky_relu')
  mean = jnp.linspace(0.0, 1.0, 400)
  params = model.init(jax.random.PRNGKey(6), mean)
  assert set(params) == {'encoder', 'decoder', 'prior_logits'}
  assert set(params['encoder']['params']) == {'logits'}  # Linear: no trunk.
  np.testing.assert_array_equal(params['prior_logits'], np.zeros(300))
  np.testing.assert_array_equal(params['encoder']['params']['logits']['bias'],
                                np.zeros(300))
  p = np.clip(np.asarray(mean, np.float64), 1e-3, 1 - 1e-3)
  np.testing.assert_allclose(params['decoder']['params']['logits']['bias'],
                             np.log(p / (1 - p)), rtol=1e-10)
  w = np.asarray(params['encoder']['params']['logits']['kernel'], np.float64)
  m = w.shape[0]
  z = (np.mean(w**2) - 1 / m) / (np.sqrt(2 / w.size) / m)
  assert abs(z) < stats.z_threshold(1, alpha=1e-3), z
