"""Posterior collapse: free bits, the δ-constraint, the mutual information
I_q(x; z) with its ELBO-surgery split, and the experiment end to end.

* Free bits (Kingma et al. 2016): the gradient of Σ_j max(λ, KL̄_j) is zero
  in a dimension whose batch-mean KL is below λ and the ordinary KL gradient
  above it; the model's free-bits bound is the ELBO plus the KL of the
  dimensions below λ, value and gradient.
* δ-VAE (Razavi et al. 2019): KL(q_j ‖ p_j) ≥ δ for any encoder output,
  and = δ where μ = 0 and σ sits on a bound.
* I_q(x; z): 0 when q(z|x) does not depend on x; log N when the N
  posteriors do not overlap; quadrature of the N-image value and the closed
  form of a linear-Gaussian encoder (q(z) Gaussian) within standard errors;
  the split adds up.
* The experiment end to end on tiny synthetic settings (strict: its KL̄
  agrees with the closed form), and a rerun that redoes nothing.
"""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import posterior_collapse as pc_experiment
from experiments.common import runner
from vae import data as data_lib
from vae import distributions as dists
from vae import kl as kl_lib
from vae import model as model_lib
from vae import objectives
from vae.analysis import posterior_collapse
from vae.models import flexible_vae
from vae.models import image_vae


def _kl_rows(theta):
  q = dists.Normal(theta['loc'], theta['log_scale'])
  return kl_lib.kl_divergence(q, dists.standard_normal(q.loc.shape[-1:]))


def test_free_bits_gradient_is_zero_below_lambda_and_ordinary_above():
  # Dimension 0: μ ≈ 0.1, σ = 1 (KL ≈ 0.005 < λ); dimension 1: μ ≈ 2 (KL ≈ 2).
  rng = np.random.default_rng(0)
  theta = {'loc': jnp.asarray(np.stack([0.1 + 0.01 * rng.normal(size=8),
                                        2.0 + 0.1 * rng.normal(size=8)], 1),
                              jnp.float32),
           'log_scale': jnp.asarray(0.01 * rng.normal(size=(8, 2)),
                                    jnp.float32)}
  lam = 0.5
  kl = _kl_rows(theta)
  assert float(kl[:, 0].mean()) < lam < float(kl[:, 1].mean())
  free = jax.grad(lambda t: objectives.free_bits_kl(_kl_rows(t), lam))(theta)
  ordinary = jax.grad(lambda t: jnp.mean(jnp.sum(_kl_rows(t), -1)))(theta)
  for name in theta:
    np.testing.assert_array_equal(free[name][:, 0], 0.0)
    np.testing.assert_allclose(free[name][:, 1], ordinary[name][:, 1],
                               rtol=1e-6, atol=1e-8)
    assert np.all(np.abs(ordinary[name][:, 0]) > 0)  # It would have moved.
  assert float(objectives.free_bits_kl(kl, lam)) == pytest.approx(
      lam + float(kl[:, 1].mean()), rel=1e-6)
  assert float(objectives.free_bits_kl(kl, 0.0)) == pytest.approx(
      float(jnp.mean(jnp.sum(kl, -1))), rel=1e-6)


def test_free_bits_bound_is_the_elbo_plus_the_kl_below_lambda():
  model = flexible_vae.FlexibleVAE(hidden_sizes=(6,), latent_dim=3,
                                   data_dim=5)
  params = model.init(jax.random.PRNGKey(1))
  x = jnp.asarray(np.random.default_rng(1).integers(0, 2, (7, 5)),
                  jnp.float32)
  key = jax.random.PRNGKey(2)
  kl = np.asarray(model_lib.elementwise_kl(model.encoder(params, x),
                                           model.prior(params))).mean(0)
  lam = float(np.sort(kl)[1]) + 1e-4  # Two dimensions below λ, one above.
  below = jnp.asarray(kl < lam, jnp.float32)
  assert 0 < int(below.sum()) < 3

  def surrogate(p):
    return model_lib.free_bits_bound(model, p, x, key, lam, 1.0, 2)

  def elbo_plus(p):
    kl_p = model_lib.elementwise_kl(model.encoder(p, x), model.prior(p))
    return (jnp.mean(model_lib.pathwise_bounds(model, p, x, key, 'elbo', 1.0,
                                               2)) +
            jnp.sum(below * jnp.mean(kl_p, 0)))

  assert float(surrogate(params)) == pytest.approx(
      float(elbo_plus(params)) - lam * float(below.sum()), rel=1e-5)
  g1, g2 = jax.grad(surrogate)(params), jax.grad(elbo_plus)(params)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  zero = model_lib.free_bits_bound(model, params, x, key, 0.0, 1.0, 2)
  assert float(zero) == pytest.approx(float(jnp.mean(
      model_lib.pathwise_bounds(model, params, x, key, 'elbo', 1.0, 2))),
                                      rel=1e-6)


def test_free_bits_refuses_a_q_without_a_kl_per_dimension():
  model = flexible_vae.FlexibleVAE(hidden_sizes=(4,), latent_dim=2,
                                   data_dim=4, posterior_type='full')
  params = model.init(jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match='per latent dimension'):
    model_lib.free_bits_bound(model, params, jnp.zeros((2, 4)),
                              jax.random.PRNGKey(0), 0.5)


@pytest.mark.parametrize('delta', [0.01, 0.1, 1.0, 5.0])
def test_delta_posterior_kl_per_dimension_is_at_least_delta(delta):
  lo, hi = flexible_vae.delta_scale_bounds(delta)
  assert lo < 1 < hi
  for s in (lo, hi):  # The roots, by their own equation.
    assert 0.5 * (s * s - 1 - np.log(s * s)) == pytest.approx(delta,
                                                              rel=1e-9)
  model = flexible_vae.FlexibleVAE(hidden_sizes=(8,), latent_dim=4,
                                   data_dim=6, posterior_type='delta',
                                   committed_rate=delta)
  params = model.init(jax.random.PRNGKey(0))
  # Any encoder output: weights blown up so that μ, r span huge ranges.
  params = jax.tree.map(lambda a: 30.0 * a + 3.0 * jax.random.normal(
      jax.random.PRNGKey(3), a.shape), params)
  x = jnp.asarray(np.random.default_rng(0).integers(0, 2, (200, 6)),
                  jnp.float32)
  q = model.encoder(params, x)
  kl = np.asarray(model_lib.elementwise_kl(q, model.prior(params)),
                  np.float64)
  assert np.all(kl >= delta * (1 - 1e-4) - 1e-6), kl.min()
  sigma = np.asarray(q.scale)
  assert sigma.max() <= lo * (1 + 1e-6)
  assert sigma.max() > lo * 0.99  # The bound is reached: the KL near δ.
  # At μ = 0, σ = σ_l the KL is δ itself (the bound is tight).
  tight = kl_lib.kl_divergence(dists.Normal.from_scale(
      jnp.zeros(1), jnp.full(1, lo)), dists.standard_normal((1,)))
  assert float(tight[0]) == pytest.approx(delta, rel=1e-4)


def test_delta_posterior_refuses_a_prior_other_than_standard():
  with pytest.raises(ValueError, match='N\\(0, I\\) prior'):
    flexible_vae.FlexibleVAE(posterior_type='delta', prior_type='mog')


@dataclasses.dataclass(frozen=True)
class LinearEncoder:
  """q(z|x) = N(a x, s²) per dimension, p(z) = N(0, I); no decoder needed."""
  a: float = 1.0
  s: float = 1.0
  latent_dim: int = 1
  data_dim: int = 1

  def init(self, key, data_mean=None):
    return {'a': jnp.asarray(self.a), 'log_s': jnp.log(jnp.asarray(self.s))}

  def prior(self, params):
    return dists.standard_normal((self.latent_dim,))

  def encoder(self, params, x):
    loc = params['a'] * x
    return dists.Normal(loc, jnp.broadcast_to(params['log_s'], loc.shape))

  def decoder(self, params, z):
    raise NotImplementedError


def _mi(model, x, seed=0, num_samples=20):
  return posterior_collapse.mutual_information(
      model, model.init(None), x, jax.random.PRNGKey(seed), num_samples)


def test_mutual_information_is_zero_when_q_ignores_x():
  model = LinearEncoder(a=0.0, s=0.7, latent_dim=3, data_dim=3)
  x = np.random.default_rng(0).normal(size=(50, 3))
  out = _mi(model, x)
  assert abs(out['mutual_information']) < 1e-5
  assert out['mutual_information_se'] < 1e-5
  # Then all of the KL is the aggregate posterior's mismatch to p(z).
  exact = 3 * 0.5 * (0.49 - 1 - np.log(0.49))
  assert out['marginal_kl'] == pytest.approx(out['kl_mc'], abs=1e-5)
  assert abs(out['kl_mc'] - exact) < 5 * out['kl_mc_se']


def test_mutual_information_is_log_n_for_disjoint_posteriors():
  model = LinearEncoder(a=1.0, s=1.0)
  x = 100.0 * np.arange(40.0)[:, None]  # Components 100 σ apart.
  out = _mi(model, x)
  assert out['mutual_information'] == pytest.approx(np.log(40), abs=1e-4)
  assert out['log_n'] == pytest.approx(np.log(40))


def test_mutual_information_against_quadrature_and_the_split():
  """1-D: I_q over N images by quadrature of Σ_n ∫ q_n (log q_n - log q̄)
  on a grid (independent of the sampler), within 5 Monte Carlo SEs; the
  split I + KL(q̄ ‖ p) = KL̄ draw by draw; KL̄ against its closed form."""
  a, s, n = 1.5, 0.8, 30
  x = np.random.default_rng(1).normal(size=(n, 1))
  model = LinearEncoder(a=a, s=s)
  grid = np.linspace(-15, 15, 60001)
  dz = grid[1] - grid[0]
  from scipy import stats as sp_stats  # pylint: disable=g-import-not-at-top
  comp = sp_stats.norm(a * x, s).pdf(grid[None, :])  # [N, G].
  agg = comp.mean(0)
  exact_mi = float(np.sum(comp * (np.log(comp + 1e-300) -
                                  np.log(agg + 1e-300))) * dz / n)
  exact_kl = float(np.mean(0.5 * ((a * x[:, 0])**2 + s * s - 1 -
                                  np.log(s * s))))
  out = _mi(model, x, num_samples=2000)
  assert 0 < exact_mi < np.log(n)
  z = (out['mutual_information'] - exact_mi) / out['mutual_information_se']
  assert abs(z) < 5, (out, exact_mi)
  assert abs(out['kl_mc'] - exact_kl) < 5 * out['kl_mc_se']
  assert out['mutual_information'] + out['marginal_kl'] == pytest.approx(
      out['kl_mc'], abs=1e-6)
  # Sensitivity: the SE is small enough to tell a 5% error.
  assert 0.05 * exact_mi > 5 * out['mutual_information_se']


def test_mutual_information_approaches_the_population_value():
  """x ~ N(0, 1), q(z|x) = N(a x, s²): q(z) = N(0, a² + s²) and
  I = ½ log(1 + a²/s²). Over N images the estimate is the InfoNCE lower
  bound: below I (up to its SE), and within 0.02 nats of it at N = 2000."""
  a, s = 1.0, 1.0
  exact = 0.5 * np.log(1 + a * a / (s * s))
  x = np.random.default_rng(2).normal(size=(2000, 1))
  out = _mi(LinearEncoder(a=a, s=s), x, num_samples=20)
  assert out['mutual_information'] < exact + 5 * out['mutual_information_se']
  assert out['mutual_information'] > exact - 0.02


def _tiny_config(**kwargs):
  return pc_experiment.Config(**{**dict(
      data=data_lib.DataConfig(dataset='synthetic', num_train=100),
      model=image_vae.ModelConfig(hidden_sizes=(8,), latent_dim=3),
      capacities=(6,), remedies=('free_bits', 'delta'), epochs=2,
      batch_size=50, free_bits=0.5, committed_rate=0.2, num_eval=10,
      mi_samples=3), **kwargs})


def test_experiment_runs_end_to_end_and_resumes(tmp_path, capsys):
  config = _tiny_config()
  records = runner.run_point('posterior_collapse', config, 0, str(tmp_path),
                             strict=True)
  assert [(r['decoder'], r['capacity'], r['remedy']) for r in records] == [
      ('factorized', '-', 'free_bits'), ('factorized', '-', 'delta'),
      ('autoregressive', 6, 'free_bits'), ('autoregressive', 6, 'delta')]
  files = set(os.listdir(tmp_path))
  assert {'results.json', 'results.csv', 'posterior_collapse.png',
          'timing.json', 'kl_per_dim.json'} <= files
  for r in records:
    assert r['eval_k'] >= 1000 and r['num_eval'] == 10
    assert r['test_elbo'] <= -r['test_nll'] + 3 * r['test_nll_se']
    assert r['mutual_information'] + r['marginal_kl'] == pytest.approx(
        r['kl_mc'], abs=1e-4)
    assert r['mutual_information'] <= r['log_n'] + 1e-6
    assert 0 <= r['active_units'] <= 3
    assert not r['disagrees']
  by = {(r['decoder'], r['remedy']): r for r in records}
  for r in records:  # Paired differences: the same images, the same means.
    assert r['nll_vs_none'] is None  # No 'none' remedy in this run.
    f = by[('factorized', r['remedy'])]
    assert r['nll_vs_factorized'] == pytest.approx(
        r['test_nll'] - f['test_nll'], abs=1e-6)
    assert (r['nll_vs_factorized_se'] == 0) == (r['decoder'] == 'factorized')
  for r in records:  # The δ-VAE commits at least δ per dimension.
    if r['remedy'] == 'delta':
      assert r['kl'] >= 3 * 0.2 * (1 - 1e-4)
  # A rerun into the folder redoes nothing and returns the same rows.
  capsys.readouterr()
  again = runner.run_point('posterior_collapse', config, 0, str(tmp_path),
                           strict=True)
  assert capsys.readouterr().out.count('done before') == len(records)
  for a, b in zip(records, again):
    assert a['test_nll'] == b['test_nll'] and a['kl'] == b['kl']


def test_experiment_refuses_a_remedy_without_its_setting():
  with pytest.raises(ValueError, match='free_bits'):
    _tiny_config(free_bits=0.0)
  with pytest.raises(ValueError, match='eval_k'):
    _tiny_config(eval_k=100)


def test_train_vae_refuses_the_delta_posterior_with_another_prior():
  with pytest.raises(ValueError, match='N\\(0, I\\) prior'):
    flexible_vae.check_training(flexible_vae.FamilyConfig(
        posterior='delta', prior='vamp'), 'elbo_mc_kl', 'pathwise')
  flexible_vae.check_training(flexible_vae.FamilyConfig(posterior='delta'),
                              'elbo', 'score_rloo')  # A Normal q: any.


def test_delta_posterior_agrees_with_quadrature_on_a_2d_latent():
  """The δ-VAE q on the 2-D-latent model of tests/test_flexible_vae: the IS
  estimate matches log p(x) by quadrature within 5 SEs, the ELBO below it."""
  from scipy import stats as sp_stats  # pylint: disable=g-import-not-at-top
  from tests import test_flexible_vae as flex  # pylint: disable=g-import-not-at-top
  model = flex.small(posterior_type='delta', committed_rate=0.001)
  params = model.init(jax.random.PRNGKey(7), np.full(flex.D_X, 0.3))
  # σ = σ_l sigmoid(5) ≈ 0.95: as wide as δ allows (finite-variance weights).
  params['encoder']['params']['log_scale']['bias'] = jnp.full(2, 5.0)
  z_is, z_elbo, exact, out = flex.check(
      model, params, lambda z: sp_stats.norm.logpdf(z).sum(-1))
  assert np.all(np.abs(z_is) < 5), (z_is, out['log_px'], exact)
  assert np.all(out['log_px_se'] < 0.2), out['log_px_se']
  assert np.all(out['elbo'] < exact), (out['elbo'], exact)
