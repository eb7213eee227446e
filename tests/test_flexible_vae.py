"""vae.models.flexible_vae and its distributions, against independent answers.

* The IAF's log-density against the change of variables log N(z_0) -
  log |det ∂z/∂z_0|, the determinant from `jax.jacfwd` (not from the flow).
* The autoregressive decoder sums to one over all 2^d binary images.
* The mixture prior against scipy.
* Every family on a 2-D latent space: log p(x) = log ∫ p(x|z) p(z) dz by
  quadrature on a grid (the prior's density from numpy/scipy where it has
  one), the ELBO below it and the importance-sampling estimate within its
  standard errors; a planted wrong log-determinant or mixture weight makes
  the same check fail.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special
from scipy import stats as sp_stats

from experiments import train_vae
from vae import data as data_lib
from vae import distributions as dists
from vae import importance
from vae import model as model_lib
from vae.models import flexible_vae
from vae.models import image_vae

D_X = 8  # Pixels of the small models.


def small(**kwargs):
  """A 2-D-latent model on D_X pixels with the given families."""
  base = dict(hidden_sizes=(8,), latent_dim=2, data_dim=D_X,
              num_components=3, flow_steps=2, flow_hidden=6,
              ar_hidden_sizes=(10,))
  return flexible_vae.FlexibleVAE(**{**base, **kwargs})


def random_flow_model(key, d=3, t=2, h=5, scale=1.5):
  """(model, params, x): an IAF encoder with random (non-trivial) flow
  weights N(0, scale²) before masking, and two binary images x."""
  model = flexible_vae.FlexibleVAE(hidden_sizes=(4,), latent_dim=d,
                                   data_dim=4, posterior_type='iaf',
                                   flow_steps=t, flow_hidden=h)
  params = model.init(key)
  k = jax.random.split(key, 5)
  params['flow'] = {name: scale * jax.random.normal(kk, a.shape)
                    for kk, (name, a) in zip(k, params['flow'].items())}
  x = jnp.asarray(np.random.default_rng(0).integers(0, 2, (2, 4)),
                  jnp.float32)
  return model, params, x


def random_flow(key, d=3, t=2, h=5):
  """An IAF with random (non-trivial) masked weights, batch shape [2]."""
  model, params, x = random_flow_model(key, d, t, h)
  return model.encoder(params, x)


def test_iaf_log_density_is_the_change_of_variables():
  """In float64: det ∂z/∂z_0 (~1e-5) is a difference of products of
  entries ~5, and a float32 Jacobian would lose 1% of it."""
  with jax.enable_x64(True):
    flow = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64),
                        random_flow(jax.random.PRNGKey(0)))
    _check_change_of_variables(flow)


def _check_change_of_variables(flow):
  z0 = flow.base().sample(jax.random.PRNGKey(1), (4,))  # [4, 2, 3].
  z, _ = flow.forward(z0)

  def one(z0b, b):  # The map z_0 -> z_T of example b, for jacfwd.
    single = jax.tree.map(lambda a: a[b], flow)
    return single.forward(z0b)[0]

  for b in range(2):
    for s in range(4):
      jac = jax.jacfwd(one)(z0[s, b], b)
      expected = (sp_stats.norm.logpdf(
          np.asarray(z0[s, b], np.float64), np.asarray(flow.loc[b]),
          np.exp(np.asarray(flow.log_scale[b]))).sum() -
                  np.linalg.slogdet(np.asarray(jac, np.float64))[1])
      got = flow.event_log_prob(z[s, b][None])  # Any z: by inversion.
      np.testing.assert_allclose(got[b], expected, rtol=1e-9)
  # The inverse recovers z_0; the sample's own log-density agrees.
  np.testing.assert_allclose(flow.inverse(z)[0], z0, rtol=1e-9, atol=1e-9)
  zs, log_q = flow.sample_and_log_prob(jax.random.PRNGKey(1), (4,))
  np.testing.assert_allclose(zs, z, rtol=1e-12)
  np.testing.assert_allclose(log_q, flow.event_log_prob(z), rtol=1e-9)


def _sequential_inverse(flow, z):
  """z_0 = f⁻¹(z) solved one coordinate at a time (x_i from x_{<i}, the
  rest of x held at 0), D passes per step: differentiated by autodiff
  through the loop, against the flow's implicit-function gradients."""
  for t in reversed(range(flow.num_steps)):
    y = z[..., ::-1]
    x = jnp.zeros_like(y)
    for i in range(y.shape[-1]):
      shift, gate = flow._shift_gate(t, x)
      s = jax.nn.sigmoid(gate[..., i])
      x = x.at[..., i].set((y[..., i] - (1.0 - s) * shift[..., i]) / s)
    z = x
  return z


def test_iaf_inversion_and_its_gradients_match_a_sequential_solve():
  """In float64, D = 5: log N(f⁻¹(z)) and its gradients in every parameter
  (through the masks) and in z, from the early-stopped fixed-point
  inversion with implicit-function gradients, equal those of the
  coordinate-by-coordinate solve differentiated through its loop."""
  with jax.enable_x64(True):
    model, params, x = random_flow_model(jax.random.PRNGKey(4), d=5, h=7,
                                         scale=0.7)
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
    x = jnp.asarray(x, jnp.float64)
    z = model.encoder(params, x).sample(jax.random.PRNGKey(5), (3,))

    def objective(inverse):
      def f(params, z):  # [3, 2, 5] -> a scalar that uses every z_0.
        flow = model.encoder(params, x)
        return jnp.sum(flow.base().event_log_prob(inverse(flow, z)) ** 2)
      return f

    ours = objective(lambda flow, z: flow.inverse(z)[0])
    reference = objective(_sequential_inverse)
    np.testing.assert_allclose(ours(params, z), reference(params, z),
                               rtol=1e-12)
    got = jax.grad(ours, argnums=(0, 1))(params, z)
    want = jax.grad(reference, argnums=(0, 1))(params, z)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    # Not vacuous: the flow's own weights and z move the value.
    assert np.abs(np.asarray(got[0]['flow']['w_in'])).max() > 1e-2
    assert np.abs(np.asarray(got[1])).max() > 1e-2


def _two_pixel_flows(gate_bias_2):
  """One-step IAFs, D = 2, H = 1, batch [len(gate_bias_2)]: m_1 = -300,
  s_1 = σ(0); h = elu(-x_1); m_2 = 0, s_2 = σ(-h + b_k)."""
  k = len(gate_bias_2)
  tile = lambda a: jnp.broadcast_to(jnp.asarray(a, jnp.float32),
                                    (k,) + np.shape(a))
  return dists.InverseAutoregressiveFlow(
      loc=tile([-90.0, 1.0]), log_scale=tile([np.log(20.0), 0.0]),
      context=tile([[0.0]]), w_in=tile([[[-1.0], [0.0]]]),
      w_shift=tile([[[0.0, 0.0]]]), b_shift=tile([[-300.0, 0.0]]),
      w_gate=tile([[[0.0, -1.0]]]),
      b_gate=jnp.asarray([[[0.0, b]] for b in gate_bias_2], jnp.float32))


def _two_pixel_log_density(b_shift_1, b_gate_2, y):
  """log q(z) of `_two_pixel_flows` written out (y = z reversed):
  x_1 = m_1 + (y_1 - m_1)/σ(0), g_2 = -elu(-x_1) + b, x_2 = y_2/σ(g_2)."""
  x1 = b_shift_1 + (y[0] - b_shift_1) * 2.0
  g2 = -jax.nn.elu(-x1) + b_gate_2
  x2 = y[1] / jax.nn.sigmoid(g2)
  log_n = (jax.scipy.stats.norm.logpdf(x1, -90.0, 20.0) +
           jax.scipy.stats.norm.logpdf(x2, 1.0, 1.0))
  return log_n - jax.nn.log_sigmoid(0.0) - jax.nn.log_sigmoid(g2)


def test_iaf_inversion_survives_iterates_that_overflow():
  """float32, z = (1, -200): the exact inverse is x = (-100, 2) (g_2 = 0),
  but the first pass evaluates s_2 at x_1 = y_1 = -200, σ(-100) ≈ 4e-44,
  so x_2 overflows, and unclipped, 0 · inf in the masked matmul makes the
  next pass NaN. With b = 80 instead of 100 the exact x_2 = 1 + e^20 ≈
  4.9e8 is outside IAF_RANGE: log q = -inf, and a mixture with it keeps
  the other component's density and finite gradients."""
  z = jnp.asarray([1.0, -200.0], jnp.float32)
  flows = _two_pixel_flows([100.0, 80.0])
  z0, _, inside = flows.inverse_inside(z)
  np.testing.assert_allclose(z0[0], [-100.0, 2.0], rtol=1e-6)
  np.testing.assert_array_equal(inside, [True, False])
  y = z[::-1]
  want = _two_pixel_log_density(-300.0, 100.0, y)
  got = flows.event_log_prob(z)
  np.testing.assert_allclose(got[0], want, rtol=1e-6)
  assert got[1] == -np.inf

  def ours(b_shift_1, b_gate, z):
    flow = dataclasses.replace(
        flows, b_shift=flows.b_shift.at[:, 0, 0].set(b_shift_1),
        b_gate=b_gate)
    return dists.Mixture(jnp.zeros(2), flow).log_prob(z)

  value, grads = jax.value_and_grad(ours, argnums=(0, 1, 2))(
      jnp.float32(-300.0), flows.b_gate, z)
  np.testing.assert_allclose(value, want - np.log(2.0), rtol=1e-6)
  expected = jax.grad(_two_pixel_log_density, argnums=(0, 1, 2))(
      jnp.float32(-300.0), jnp.float32(100.0), y)
  np.testing.assert_allclose(grads[0], expected[0], rtol=1e-4)
  np.testing.assert_allclose(grads[1][0, 0, 1], expected[1], rtol=1e-4)
  np.testing.assert_array_equal(grads[1][1], 0.0)  # The -inf component.
  np.testing.assert_allclose(grads[2], expected[2][::-1], rtol=1e-4)
  assert np.all(np.abs(np.asarray(expected[2])) > 1e-3)  # Not vacuous.


def test_training_bounds_use_the_flows_own_log_density():
  """pathwise_bounds takes log q as the flow draws z: the same bounds and
  gradients as log q by inversion at the same z."""
  model, params, _ = family_setup('iaf')
  x, key = jnp.asarray(X), jax.random.PRNGKey(10)

  def inverted(params):  # log q(z|x) by inversion (event_log_prob).
    q = model.encoder(params, x)
    z = model_lib.sample_per_example(q, key, 3)
    return jnp.mean(model_lib.log_weights(model, params, x[:, None], z,
                                          model_lib.expand(q, 1))[0])

  fast = lambda params: jnp.mean(model_lib.pathwise_bounds(
      model, params, x, key, 'elbo_mc_kl', 1.0, 3))
  np.testing.assert_allclose(fast(params), inverted(params), rtol=1e-5)
  for a, b in zip(jax.tree.leaves(jax.grad(fast)(params)),
                  jax.tree.leaves(jax.grad(inverted)(params))):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5)


def test_importance_sampling_uses_the_flows_own_log_density():
  """The IS engine takes log q as the flow draws z: with one chunk (K = C)
  the same log-weights as z = q.sample(split(key, 1)[0]) with log q by
  inversion."""
  model, params, _ = family_setup('iaf')
  x, key = jnp.asarray(X), jax.random.PRNGKey(11)
  out = importance.importance_batch(model, params, x, key, num_samples=8,
                                    chunk_size=8)
  q = model.encoder(params, x)
  z = q.sample(jax.random.split(key, 1)[0], (8,))  # [K, B, D].
  lw = model_lib.log_weights(model, params, x, z, q)[0]
  np.testing.assert_allclose(
      out['log_px'], jax.nn.logsumexp(lw, 0) - np.log(8.0), rtol=1e-5)


def test_a_wrong_log_determinant_fails_the_change_of_variables(monkeypatch):
  flow = random_flow(jax.random.PRNGKey(0))
  z0 = flow.base().sample(jax.random.PRNGKey(1))
  z = flow.forward(z0)[0]
  right = flow.event_log_prob(z)
  monkeypatch.setattr(dists, '_affine_log_det',
                      lambda g: jnp.sum(jnp.log(jax.nn.sigmoid(g))[..., 1:],
                                        -1))  # One coordinate dropped.
  assert np.all(np.abs(flow.event_log_prob(z) - right) > 1e-2)


def test_autoregressive_decoder_sums_to_one_and_samples_from_itself():
  for sizes in ((), (10,), (7, 9)):
    model = small(decoder_type='autoregressive', ar_hidden_sizes=sizes)
    params = model.init(jax.random.PRNGKey(2))
    ar = params['autoregressive']
    params['autoregressive'] = jax.tree.map(
        lambda a: a + jax.random.normal(jax.random.PRNGKey(3), a.shape), ar)
    dec = model.decoder(params, jnp.array([[0.3, -1.0]]))
    xs = np.array(np.meshgrid(*[[0, 1]] * D_X, indexing='ij')).reshape(
        D_X, -1).T.astype(np.float32)  # All 2^d images.
    log_p = dec.event_log_prob(jnp.asarray(xs))  # [256].
    np.testing.assert_allclose(special.logsumexp(np.asarray(log_p,
                                                            np.float64)),
                               0.0, atol=1e-5)
    # Sequential sampling draws from the same distribution (χ² test).
    draws = np.asarray(dec.sample(jax.random.PRNGKey(4), (4000,)))[:, 0]
    codes = draws @ (2 ** np.arange(D_X)[::-1])
    counts = np.bincount(codes.astype(int), minlength=2**D_X)
    expected = 4000 * np.exp(np.asarray(log_p, np.float64))
    big = expected > 5
    chi2 = np.sum((counts[big] - expected[big])**2 / expected[big])
    assert sp_stats.chi2.sf(chi2, big.sum() - 1) > 1e-4, sizes


def test_mixture_prior_density_is_scipys():
  model = small(prior_type='mog')
  params = model.init(jax.random.PRNGKey(5))
  params['prior']['logits'] = jnp.array([1.0, 0.0, -1.5])
  z = np.random.default_rng(1).normal(size=(7, 2))
  np.testing.assert_allclose(
      model_lib.event_log_prob(model.prior(params), jnp.asarray(z)),
      mog_log_density(params['prior'], z), rtol=1e-5)
  draws = np.asarray(model.prior(params).sample(jax.random.PRNGKey(6),
                                                (20000,)))
  np.testing.assert_allclose(draws.mean(0), model.prior(params).mean(),
                             atol=0.05)


def mog_log_density(prior, z):
  """log Σ_k π_k N(z; m_k, diag s_k²) in float64 (scipy)."""
  log_pi = np.asarray(jax.nn.log_softmax(prior['logits']), np.float64)
  loc = np.asarray(prior['loc'], np.float64)
  scale = np.exp(np.asarray(prior['log_scale'], np.float64))
  comp = sp_stats.norm.logpdf(z[:, None, :], loc, scale).sum(-1)
  return special.logsumexp(comp + log_pi, -1)


def vamp_log_density(model, params, z):
  """(1/K) Σ_k N(z; μ(u_k), diag σ(u_k)²) in float64 from the encoder
  network's first two heads (a diagonal encoder's q, or an IAF's base)."""
  u = jax.nn.sigmoid(params['prior']['pseudo_inputs'])
  loc, log_scale = model.encoder_net.apply(params['encoder'], u)[:2]
  comp = sp_stats.norm.logpdf(z[:, None, :], np.asarray(loc, np.float64),
                              np.exp(np.asarray(log_scale, np.float64)))
  return special.logsumexp(comp.sum(-1), -1) - np.log(u.shape[0])


def exact_log_px(model, params, x, prior_log_density, half=12.0, n=241):
  """log ∫ p(x|z) p(z) dz on an n x n grid over [-half, half]², float64."""
  axis = np.linspace(-half, half, n)
  z = np.stack(np.meshgrid(axis, axis, indexing='ij'), -1).reshape(-1, 2)
  dec = model.decoder(params, jnp.asarray(z, jnp.float32)[:, None, :])
  log_lik = np.asarray(model_lib.event_log_prob(dec, jnp.asarray(x)),
                       np.float64)  # [G, B].
  log_prior = prior_log_density(z)
  return special.logsumexp(log_lik + log_prior[:, None], 0) + 2 * np.log(
      axis[1] - axis[0])


def family_setup(name):
  """(model, params, prior density) of each family, with non-trivial
  parameters: a wide base q (so the weights have finite variance), a flow
  with gates σ(g) ≈ 0.5 (log-determinants of about -2.8 nats)."""
  kwargs = {'full': dict(posterior_type='full'),
            'iaf': dict(posterior_type='iaf'),
            'mog': dict(prior_type='mog'),
            'vamp': dict(prior_type='vamp'),
            'iaf_vamp_base': dict(posterior_type='iaf', prior_type='vamp_base'),
            'autoregressive': dict(decoder_type='autoregressive'),
            'iaf_vamp_autoregressive': dict(
                posterior_type='iaf', prior_type='vamp',
                decoder_type='autoregressive')}[name]
  model = small(**kwargs)
  params = model.init(jax.random.PRNGKey(7), np.full(D_X, 0.3))
  enc = params['encoder']['params']
  # σ = 2 (5.5 under a flow that shrinks by about 1/4): wider than the
  # posterior, so the importance weights have a finite variance. The
  # VampPrior over the flow's base has the base Gaussians as components:
  # σ = 2.5 there (the grid's ±12 holds them), and gates σ(3) = 0.95, so that
  # q (about 0.9 as wide) is not much narrower than the prior.
  base_first = model.prior_type == 'vamp_base'
  enc['log_scale']['bias'] = jnp.full(
      2, 1.7 if model.posterior_type == 'iaf' and not base_first else 0.7 + 0.2 * base_first)
  if 'flow' in params:
    params['flow']['b_gate'] = jnp.full_like(params['flow']['b_gate'],
                                             3.0 if base_first else 0.0)
    params['flow']['w_shift'] = 2.0 * params['flow']['w_shift']
  if model.prior_type == 'mog':
    params['prior']['logits'] = jnp.array([1.5, 0.0, -1.0])
    params['prior']['loc'] = jnp.array([[2.0, 0.0], [-1.0, 1.5],
                                        [0.0, -2.0]])
  if 'autoregressive' in params:
    params['autoregressive'] = jax.tree.map(
        lambda a: a + 0.5 * jax.random.normal(jax.random.PRNGKey(8),
                                              a.shape),
        params['autoregressive'])
  if model.prior_type == 'mog':
    density = lambda z: mog_log_density(params['prior'], z)
  elif model.prior_type == 'vamp_base' or (
      model.prior_type == 'vamp' and model.posterior_type == 'diagonal'):
    density = lambda z: vamp_log_density(model, params, z)
  elif model.prior_type == 'standard':
    density = lambda z: sp_stats.norm.logpdf(z).sum(-1)
  else:  # The VampPrior of an IAF encoder: the flow's own density.
    density = lambda z: np.asarray(model_lib.event_log_prob(
        model.prior(params), jnp.asarray(z, jnp.float32)), np.float64)
  return model, params, density


X = np.random.default_rng(3).integers(0, 2, (3, D_X)).astype(np.float32)


def check(model, params, density, key=9, num_samples=20_000):
  """(z-scores of log p̂ - exact, ELBO - exact in its SEs, the outputs)."""
  exact = exact_log_px(model, params, X, density)
  out = importance.importance_sampling(
      model, params, X, jax.random.PRNGKey(key), num_samples=num_samples,
      chunk_size=1000)
  return ((out['log_px'] - exact) / out['log_px_se'],
          (out['elbo'] - exact) / out['elbo_se'], exact, out)


FAMILIES = ('full', 'iaf', 'mog', 'vamp', 'iaf_vamp_base', 'autoregressive',
            'iaf_vamp_autoregressive')


@pytest.mark.parametrize('name', FAMILIES)
def test_each_family_agrees_with_quadrature(name):
  jax.clear_caches()
  model, params, density = family_setup(name)
  # The base-VampPrior's q is narrower than its prior: twice the samples
  # for the same SE.
  z_is, z_elbo, exact, out = check(
      model, params, density,
      num_samples=40_000 if name == 'iaf_vamp_base' else 20_000)
  assert np.all(np.abs(z_is) < 5), (name, z_is, out['log_px'], exact)
  assert np.all(out['log_px_se'] < 0.2), out['log_px_se']  # Sharp enough.
  assert np.all(z_elbo < 3), (name, out['elbo'], exact)  # ELBO below.
  assert np.all(out['elbo'] < exact), (name, out['elbo'], exact)


def test_the_base_vamp_prior_is_the_mixture_of_the_flow_base_gaussians():
  """prior=vamp_base: log p(z) = log (1/K) Σ_k N(z; μ(u_k), σ(u_k)²) from
  the encoder network's heads (scipy, float64), not the flow's density at
  the pseudo-inputs (which differs by the flow's log-determinant and
  shift)."""
  model, params, density = family_setup('iaf_vamp_base')
  z = np.random.default_rng(0).normal(0.0, 2.0, (50, 2))
  own = np.asarray(model_lib.event_log_prob(
      model.prior(params), jnp.asarray(z, jnp.float32)), np.float64)
  np.testing.assert_allclose(own, density(z), atol=1e-5)
  flow_vamp = dataclasses.replace(model, prior_type='vamp')
  other = np.asarray(model_lib.event_log_prob(
      flow_vamp.prior(params), jnp.asarray(z, jnp.float32)), np.float64)
  assert np.mean(np.abs(other - own)) > 0.05


def test_a_planted_wrong_log_determinant_is_caught(monkeypatch):
  model, params, density = family_setup('iaf')
  with monkeypatch.context() as m:
    m.setattr(dists, '_affine_log_det',
              lambda g: jnp.sum(jax.nn.log_sigmoid(g)[..., 1:], -1))
    jax.clear_caches()
    z_is, _, exact, out = check(model, params, density)
  jax.clear_caches()
  # The check (every |z| < 5) fails, by far.
  assert np.max(np.abs(z_is)) > 10, (z_is, out['log_px'], exact)


def test_a_planted_wrong_mixture_weight_is_caught(monkeypatch):
  model, params, density = family_setup('mog')
  with monkeypatch.context() as m:  # Weights given to the wrong components.
    m.setattr(dists, '_mixture_log_weights',
              lambda logits: jax.nn.log_softmax(logits[..., ::-1], -1))
    jax.clear_caches()
    z_is, _, exact, out = check(model, params, density)
  jax.clear_caches()
  assert np.max(np.abs(z_is)) > 10, (z_is, out['log_px'], exact)


def test_default_model_is_the_mlp_vae_and_bad_combinations_are_refused():
  config = train_vae.Config()
  assert not config.families.flexible
  assert train_vae.make_model(config) == image_vae.burda_vae()
  default = small()
  mlp = image_vae.burda_vae(2, (8,), data_dim=D_X)
  key = jax.random.PRNGKey(0)
  for a, b in zip(jax.tree.leaves(default.init(key)),
                  jax.tree.leaves(mlp.init(key))):
    np.testing.assert_array_equal(a, b)
  families = flexible_vae.FamilyConfig
  cases = [(dict(prior='vamp'), 'elbo', 'pathwise', 'closed-form KL'),
           (dict(prior='mog'), 'elbo', 'pathwise', 'closed-form KL'),
           (dict(posterior='iaf'), 'elbo', 'pathwise', 'closed-form KL'),
           (dict(posterior='full'), 'elbo_mc_kl', 'score',
            'diagonal Gaussian q')]
  cases += [(dict(prior='vamp_base'), 'elbo_mc_kl', 'pathwise',
             'base Gaussian; posterior=diagonal has none'),
            (dict(posterior='full', prior='vamp_base'), 'iwae', 'dreg',
             'posterior=full has none')]
  for kwargs, objective, estimator, message in cases:
    with pytest.raises(ValueError, match=message):
      flexible_vae.check_training(families(**kwargs), objective, estimator)
  with pytest.raises(ValueError, match='has none'):
    flexible_vae.FlexibleVAE(prior_type='vamp_base')
  flexible_vae.check_training(families(posterior='iaf', prior='vamp_base'),
                              'elbo_mc_kl', 'pathwise')
  flexible_vae.check_training(families(posterior='full'), 'elbo', 'pathwise')
  flexible_vae.check_training(families(posterior='iaf'), 'elbo_mc_kl', 'stl')
  with pytest.raises(ValueError, match='closed-form KL'):
    train_vae.Config(families=families(prior='vamp'))
  model = train_vae.make_model(train_vae.Config(
      families=families(posterior='iaf', prior='vamp',
                        decoder='autoregressive'),
      training=train_vae.train.TrainConfig(objective='iwae')))
  assert (model.posterior_type, model.prior_type, model.decoder_type) == (
      'iaf', 'vamp', 'autoregressive')
  grey = data_lib.Dataset(name='grey', binarization='none',
                          train=np.full((4, D_X), 0.5, np.float32),
                          validation=np.zeros((2, D_X), np.float32),
                          test=np.zeros((2, D_X), np.float32))
  with pytest.raises(SystemExit, match='binary'):
    train_vae.check_binary(grey)
