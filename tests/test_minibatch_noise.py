"""vae/analysis/minibatch_noise.py and experiments/minibatch_noise.py.

The closed forms are checked against independent answers (the variance of
a sample variance, the gradient of the closed-form ELBO, the Jacobian and
Hessian of a quadratic), the measured parts against them within standard
errors; the experiment runs in-process with --strict.
"""

import json

import jax
from jax import flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import minibatch_noise as experiment
from experiments.common import runner
from vae import data
from vae import stats
from vae.analysis import minibatch_noise as mn
from vae.models import image_vae
from vae.problems import amortization as am
from vae.problems import linear_gaussian as lg

# One problem and grid for the library test and the experiment test, so
# that they share compiled programs.
CHECK = mn.CheckConfig(check_data_dim=3, check_latent_dim=2,
                       check_examples=16, check_draws=20000)
ESTIMATORS = ('pathwise', 'score_rloo', 'score_moving_average')
SIZES, COUNTS = (2,), (3,)


@pytest.fixture(scope='module')
def problem():
  with jax.enable_x64(True):  # The arrays stay float64 after the block.
    return mn.linear_gaussian_problem(jax.random.PRNGKey(3), 3, 2, 8)


@pytest.mark.parametrize('n', [2, 3, 5, 10])
def test_u_statistic_variance_is_that_of_the_sample_variance(n):
  # h(a, b) = (a - b)²/2 makes the N-sample U-statistic the sample variance
  # of N standard normals, whose variance is 2/(N - 1).
  nodes, w = mn.hermite_grid(1)
  a, b = nodes[:, 0][:, None], nodes[:, 0][None, :]
  h = (a - b)**2 / 2
  mean = w @ h @ w
  zeta1 = w @ (h @ w - mean)**2
  zeta2 = w @ (h - mean)**2 @ w
  assert mean == pytest.approx(1.0, rel=1e-12)
  assert mn.sample_variance(zeta1, zeta2, n) == pytest.approx(
      2 / (n - 1), rel=1e-12)
  # A mean, h = (g(a) + g(b))/2 with g(ε) = ε³: σ²_N = E ε⁶ / N = 15/N.
  h = (a**3 + b**3) / 2
  zeta1, zeta2 = w @ (h @ w)**2, w @ h**2 @ w
  for m in (1, n):
    assert mn.sample_variance(zeta1, zeta2, m) == pytest.approx(15 / m,
                                                                rel=1e-12)


def _flat(grads):
  """encoder ++ decoder, as `example_moments` orders them."""
  return jnp.concatenate([flatten_util.ravel_pytree(grads[g])[0]
                          for g in ('encoder', 'decoder')])


def _elbo_gradient(params, x):
  return _flat(jax.grad(lambda p: lg.elbo(
      p['decoder'], x, am.encode(p['encoder'], x)))(params))


@pytest.mark.parametrize('estimator', mn.ESTIMATORS)
def test_exact_mean_is_the_gradient_of_the_closed_form_elbo(problem,
                                                            estimator):
  params, x, c = problem
  with jax.enable_x64(True):
    for xi in x[:3]:
      got = mn.example_moments(estimator, params, xi, c)['mean']
      want = _elbo_gradient(params, xi)
      np.testing.assert_allclose(got, want, rtol=1e-9,
                                 atol=1e-9 * np.abs(want).max())


def test_pathwise_variance_is_jacobian_plus_hessian(problem):
  # ĝ(ε) = ∇ [log p(x | μ + σε) - KL] is quadratic in ε ~ N(0, I), so
  # Var ĝ_p = ‖∂ĝ_p/∂ε‖² + ½‖∂²ĝ_p/∂ε²‖²_F at ε = 0.
  params, x, c = problem
  with jax.enable_x64(True):
    def g(eps, xi):
      def objective(p):
        q = am.encode(p['encoder'], xi)
        kl = 0.5 * jnp.sum(q.variance() + q.loc**2 - 1 - 2 * q.log_scale)
        return lg.log_likelihood(p['decoder'], xi,
                                 q.loc + q.scale * eps) - kl
      return _flat(jax.grad(objective)(params))
    zero = jnp.zeros(2)
    jac_hess = jax.jit(lambda xi: (jax.jacfwd(g)(zero, xi),
                                   jax.hessian(g)(zero, xi)))
    for xi in x[:3]:
      jac, hess = jac_hess(xi)
      want = np.sum(jac**2, 1) + 0.5 * np.sum(hess**2, (1, 2))
      got = mn.sample_variance(
          *(mn.example_moments('pathwise', params, xi, c)[k]
            for k in ('zeta1', 'zeta2')), 1)
      np.testing.assert_allclose(got, want, rtol=1e-8,
                                 atol=1e-10 * want.max())


def test_prefix_gradients_are_the_minibatch_gradients(problem):
  params, x, c = problem
  with jax.enable_x64(True):
    surrogate = mn.linear_gaussian_surrogate('score_rloo', 3, c)
    key = jax.random.PRNGKey(0)
    got = jax.jit(lambda p: mn.prefix_gradients(surrogate, p, x, key,
                                                (5, 2, 8)))(params)
    keys = jax.random.split(key, 8)
    per_example = jax.jit(jax.vmap(jax.grad(surrogate), (None, 0, 0)))(
        params, x, keys)
    for b in (2, 5, 8):
      for group in mn.GROUPS:
        want = flatten_util.ravel_pytree(jax.tree.map(
            lambda g, b=b: jnp.mean(g[:b], 0), per_example[group]))[0]
        np.testing.assert_allclose(got[b][group], want, rtol=1e-10,
                                   atol=1e-12)


def test_decompose_on_data_plus_noise():
  # Ĝ = (1/B) Σ_b (v_{i_b} + s ε_b), v_i ∈ R³: between = tr Cov(v)/B (the
  # population covariance of the n points), within = 3 s²/B.
  v = jax.random.normal(jax.random.PRNGKey(1), (10, 3)) * jnp.array(
      [1.0, 2.0, 0.5]) + jnp.array([3.0, -2.0, 1.0])
  s, sizes, draws = 1.5, (1, 3), 4000

  def estimate(index, key):
    noise = s * jax.random.normal(key, (max(sizes), 3))
    return {b: jnp.mean((v[index] + noise)[:b], 0) for b in sizes}

  parts = jax.jit(lambda k: mn.decompose(estimate, k, 10, max(sizes), draws,
                                         chunk=draws))(jax.random.PRNGKey(0))
  v_data = float(jnp.sum(jnp.var(v, 0)))
  signal = float(jnp.sum(jnp.mean(v, 0)**2))  # ‖G‖², G = the mean of v.
  threshold = stats.z_threshold(5 * len(sizes))
  for b in sizes:
    for part, exact in (('between', v_data / b), ('within', 3 * s**2 / b),
                        ('total', (v_data + 3 * s**2) / b),
                        ('signal', signal)):
      est, se = (float(parts[part][k][b]) for k in ('estimate', 'se'))
      assert abs(est - exact) < threshold * se, (b, part, est, exact, se)
      assert se < 0.15 * exact  # The check has power.
    # B_noise = (V_data + 3s²)/‖G‖², whatever B.
    got, se = mn.noise_scale(
        b, float(parts['total']['estimate'][b]),
        float(parts['total']['se'][b]), float(parts['signal']['estimate'][b]),
        float(parts['signal']['se'][b]),
        float(parts['cov_total_signal'][b]), draws)
    exact = (v_data + 3 * s**2) / signal
    assert abs(got - exact) < threshold * se, (b, got, exact, se)
    assert se < 0.2 * exact


@pytest.fixture(scope='module')
def checked():
  with jax.enable_x64(True):
    return stats.mark_disagreements(mn.check_linear_gaussian(
        jax.random.PRNGKey(0), CHECK, ESTIMATORS, SIZES, COUNTS))


def test_measured_parts_agree_with_closed_forms(checked):
  # Measured at B = 2, N = 3 against V_data/B and E_x[σ²_N]/B.
  assert len(checked) == len(ESTIMATORS) * 2 * len(SIZES)
  assert not [r for r in checked if r['disagrees']]
  for r in checked:
    assert r['exact_between'] > 0 and r['exact_within'] > 0


@pytest.mark.parametrize('part', ['between', 'within'])
def test_a_wrong_exact_part_is_flagged(checked, part):
  # 50% off: flagged where the measurement resolves it, the pathwise and
  # decoder rows, whose relative standard errors are below 9% here (the
  # score-function encoder rows: 7-42%).
  exact = {}
  for r in checked:
    cell = exact.setdefault(r['estimator'], {})
    cell[r['B'], r['N'], r['group']] = {
        p: r['exact_' + p] * (1.5 if p == part else 1.0)
        for p in ('between', 'within', 'signal', 'b_noise')}
  marked = stats.mark_disagreements(mn.compare_exact(checked, exact))
  resolved = [r for r in marked
              if r['estimator'] == 'pathwise' or r['group'] == 'decoder']
  assert len(resolved) == 4 * len(SIZES)
  assert all(r['disagrees'] for r in resolved)


def test_best_per_budget_and_dominance():
  rows = [dict(epoch=0, estimator='e', group='g', B=b, N=n, budget=b * n,
               between=10.0 / b, between_se=0.1, within=5.0 / (b * n),
               within_se=0.1, total=10.0 / b + 5.0 / (b * n),
               minibatch_share=10 / (10 + 5 / n))
          for b, n in ((1, 1), (2, 1), (1, 2), (4, 1), (2, 2), (1, 4))]
  best = mn.best_per_budget(rows, ('epoch', 'estimator', 'group'))
  assert [(r['budget'], r['best_B'], r['best_N']) for r in best] == [
      (2, 2, 1), (4, 4, 1)]
  assert best[1]['ratio_to_worst'] == pytest.approx((2.5 + 1.25) / (10 +
                                                                     1.25))
  dom = {r['N']: r for r in mn.dominance(rows)}
  assert dom[1]['B'] == 4 and dom[1]['dominant'] == 'minibatch'
  assert dom[4]['minibatch_share'] == pytest.approx(10 / 11.25)


TINY = dict(data=data.DataConfig(dataset='synthetic', num_train=64),
            model=image_vae.ModelConfig(hidden_sizes=(8,), latent_dim=2),
            training=experiment.train.TrainConfig(batch_size=16, epochs=1,
                                                  test_every=0),
            eval_epochs=(1, 0), estimators=ESTIMATORS, batch_sizes=SIZES,
            sample_counts=COUNTS, num_draws=4, baseline_examples=8,
            linear_gaussian=CHECK)


def test_tiny_run_checks_itself_and_writes_its_files(tmp_path, capsys):
  config = experiment.Config(**TINY)
  records = runner.run_point('minibatch_noise', config, 0, str(tmp_path),
                             strict=True)
  for name in ('results.json', 'results.csv', 'config.json',
               'variance_vs_budget.png', 'check.png', 'noise_scale.png',
               'efficiency.json'):
    assert (tmp_path / name).exists(), name
  assert json.loads((tmp_path / 'results.json').read_text()) == records
  vae_rows = [r for r in records if r['section'] == 'vae']
  assert len(vae_rows) == 2 * len(ESTIMATORS) * 2 * len(SIZES)
  assert {(r['epoch'], r['step']) for r in vae_rows} == {(0, 0), (1, 4)}
  for r in vae_rows:
    assert r['within'] > 0 and r['budget'] == r['B'] * r['N']
  # Common random numbers: every estimator's decoder gradient is the same.
  dec = [r['within'] for r in vae_rows if r['group'] == 'decoder' and
         r['epoch'] == 1]
  assert len(dec) == len(ESTIMATORS)
  assert max(dec) == pytest.approx(min(dec), rel=1e-4)
  out = capsys.readouterr().out
  assert f'0 of {len(ESTIMATORS) * 2 * len(SIZES)} rows disagree' in out
  assert 'which part dominates' in out
  for r in vae_rows:  # The noise scale (b_noise) is that of the parts.
    assert r['b_noise'] == pytest.approx(r['B'] * r['total'] / r['signal'])
    assert r['b_noise_se'] > 0 and 'seconds' not in r
  # Time (machine-dependent) only in efficiency.json, with the device.
  timed = json.loads((tmp_path / 'efficiency.json').read_text())
  assert len(timed) == len(vae_rows) + len(ESTIMATORS) * 2 * len(
      SIZES) and all(
      r['seconds'] > 0 and r['efficiency'] == pytest.approx(
          r['total'] * r['seconds']) and r['device'] for r in timed)
  assert 'gradient noise scale' in out and 'best_per_second' in out


def test_dreg_of_the_iwae_bound_is_measured_on_the_vae():
  # DReG (∇IWAE_K, K = N: no kernel, no closed form) beside pathwise.
  model = image_vae.make(image_vae.ModelConfig(hidden_sizes=(8,),
                                               latent_dim=2))
  images = (jax.random.uniform(jax.random.PRNGKey(0), (16, 784)) < 0.3
            ).astype(jnp.float32)
  params = model.init(jax.random.PRNGKey(1), images.mean(0))
  assert mn.objective_of('dreg') == 'iwae'
  assert mn.objective_of('pathwise') == 'elbo'
  rows = mn.measure_vae(model, params, images, jax.random.PRNGKey(2),
                        ('pathwise', 'dreg'), (2,), (3,), 8, 8)
  assert {r['estimator'] for r in rows} == {'pathwise', 'dreg'}
  for r in rows:
    assert r['within'] > 0 and np.isfinite(r['b_noise'])
    assert r['seconds'] > 0


@pytest.mark.parametrize('settings, message', [
    (dict(eval_epochs=(0, 2)), 'eval_epochs: 2 > epochs'),
    (dict(data=data.DataConfig(dataset='mnist')), 'binarized dynamically'),
    (dict(estimators=('score_rloo',), sample_counts=(1,)),
     'needs num_samples >= 2'),
    (dict(batch_sizes=(1000,), sample_counts=(100,)), 'at most 16384'),
    (dict(num_draws=1), 'num_draws: must be >= 2'),
])
def test_bad_settings_are_refused(settings, message):
  with pytest.raises(ValueError, match=message):
    experiment.Config(**{**TINY, **settings})


def test_bad_check_problem_is_refused():
  with pytest.raises(ValueError, match='check_latent_dim: must be <= 3'):
    mn.CheckConfig(check_latent_dim=4)
