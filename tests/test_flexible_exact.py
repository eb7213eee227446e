"""experiments/flexible_exact and vae.analysis.flexible_exact: every family's
bounds against log p(x) by quadrature on a 2-D latent space, on a tiny
setting; the check fails when a log-determinant or a mixture weight is
planted wrong, and when the grid is too coarse to judge.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import flexible_exact as fx
from experiments.common import outputs
from experiments.common import runner
from vae import data as data_lib
from vae import distributions as dists
from vae import evaluate as eval_lib
from vae import stats
from vae.analysis import flexible_exact as fe

TINY = fx.Config(
    data=data_lib.DataConfig(num_train=200), hidden_sizes=(16,),
    flow_hidden=8, decoder_hidden_sizes=(8,), objective='elbo_mc_kl',
    estimator='pathwise', num_samples=1, epochs=2, num_eval=16,
    eval_k=1000, quadrature_half_width=6.0, quadrature_points=121)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """(the strict tiny run's rows by family, its folder, data, images)."""
  folder = str(tmp_path_factory.mktemp('flexible_exact'))
  rows = runner.run_point('flexible_exact', TINY, 0, folder, strict=True)
  dataset = data_lib.load(TINY.data, 0)
  images = eval_lib.test_images(dataset)[:TINY.num_eval]
  return {r['family']: r for r in rows}, folder, dataset, images


def test_every_family_agrees_with_quadrature(run):
  rows = run[0]
  assert sorted(rows) == sorted(fe.NAMES)
  for name, r in rows.items():
    assert r['disagrees'] is False, r
    assert r['quadrature_sharp'] and r['images'] == TINY.num_eval
    # Not vacuous: the IS estimate is sharp and the ELBO clearly below.
    assert r['log_px_is_se'] < 0.15 and r['gap'] > 10 * r['elbo_se'], r
    assert abs(r['log_px_is'] - r['log_px_exact']) < 0.1, r
    assert r['quadrature_error'] < 0.1 * r['min_log_px_se'], r


def _planted(run, names, monkeypatch, name, value):
  """The rows of `names` re-checked (the trained checkpoints resumed) with
  dists.<name> replaced by `value`, marked together."""
  _, folder, dataset, images = run
  with monkeypatch.context() as m:
    m.setattr(dists, name, value)
    jax.clear_caches()
    rows = [fx.check_family(TINY, n, dataset, images, 0,
                            outputs.Run(folder)) for n in names]
  jax.clear_caches()
  return {r['family']: r for r in stats.mark_disagreements(rows)}


def test_a_wrong_log_determinant_disagrees(run, monkeypatch):
  """log |det| of each IAF step off by 0.5: log q and so log p̂ and the
  ELBO off by 1 nat; the quadrature (standard prior) does not move."""
  right = run[0]['iaf']
  rows = _planted(run, ['iaf', 'diagonal'], monkeypatch, '_affine_log_det',
                  lambda gate: jnp.sum(jax.nn.log_sigmoid(gate), -1) + 0.5)
  assert rows['iaf']['disagrees'] and not rows['diagonal']['disagrees']
  assert rows['iaf']['log_px_exact'] == pytest.approx(right['log_px_exact'])
  assert 5 < rows['iaf']['is_z'] < np.inf  # Threshold 3.6 (34 checks).
  np.testing.assert_allclose(rows['iaf']['log_px_is'] - right['log_px_is'],
                             1.0, atol=0.1)


@pytest.mark.parametrize('weights', ['unnormalized', 'shifted'])
def test_a_wrong_mixture_weight_disagrees(run, monkeypatch, weights):
  """Mixture weights not normalized (log π = logits: the VampPrior's K
  equal weights sum to K) or one component's weight moved (log π_1 + 1,
  the rest renormalized; MoG only: the tiny VampPrior's components are
  still nearly equal, so moving weight among them changes little): the
  prior's density, so log p̂ and the ELBO, move; the quadrature's prior
  (numpy, from the parameters) does not."""
  plant = {'unnormalized': lambda logits: logits,
           'shifted': lambda logits: jax.nn.log_softmax(
               logits.at[..., 0].add(1.0), -1)}[weights]
  wrong = (['mog', 'vamp', 'iaf_vamp_base'] if weights == 'unnormalized' else
           ['mog'])
  rows = _planted(run, wrong + ['diagonal'], monkeypatch,
                  '_mixture_log_weights', plant)
  assert not rows['diagonal']['disagrees']
  for name in wrong:
    assert rows[name]['disagrees'] and abs(rows[name]['is_z']) > 5, (
        rows[name])
    assert np.isfinite(rows[name]['is_z']) and stats.NONFINITE not in rows[
        name]
    assert rows[name]['log_px_exact'] == pytest.approx(
        run[0][name]['log_px_exact'])


def test_a_coarse_grid_refuses_to_judge(run):
  """Spacing 1 over [-6, 6]²: the halved-spacing difference is far above a
  tenth of the IS SE, so the row disagrees whatever the z-scores say."""
  _, folder, dataset, images = run
  coarse = dataclasses.replace(TINY, quadrature_points=13)
  row = stats.mark_disagreements([fx.check_family(
      coarse, 'diagonal', dataset, images, 0, outputs.Run(folder))])[0]
  assert not row['quadrature_sharp'] and row['disagrees']
  assert row['quadrature_error'] > 0.1 * row['min_log_px_se']


@pytest.mark.parametrize('name', fe.NAMES)
def test_the_independent_prior_density_integrates_to_one(name):
  """With the decoder's weights at zero, p(x|z) does not depend on z and
  log p(x) = log p(x|0) + log ∫ p(z) dz: the quadrature of each prior's
  independent density (MoG from numpy, VampPrior of diagonal Gaussians or
  of IAFs by the change of variables) gives log p(x|0) to 1e-5."""
  model = fx.model_of(TINY, name, 784)
  params = model.init(jax.random.PRNGKey(1))
  params['decoder'] = jax.tree.map(
      lambda a: a if a.ndim == 1 else jnp.zeros_like(a), params['decoder'])
  if 'autoregressive' in params:  # Its MADE sees z through z_hidden.
    params['autoregressive']['z_hidden'] = jnp.zeros_like(
        params['autoregressive']['z_hidden'])
  if 'flow' in params:  # Non-trivial flow steps (the VampPrior's components).
    params['flow'] = jax.tree.map(
        lambda a: a + 0.5 * jax.random.normal(jax.random.PRNGKey(2), a.shape),
        params['flow'])
  x = np.asarray(jax.random.bernoulli(jax.random.PRNGKey(3), 0.2, (2, 784)),
                 np.float32)
  quad = fe.quadrature(model, params, x, 10.0, 201)
  # log p(x|z) at any z, from the quadrature's own blocks (the same float32
  # rounding): it does not depend on z.
  anywhere = fe.log_likelihood_grid(model, params, x, np.random.default_rng(
      4).normal(size=(100, 2)))
  assert np.ptp(anywhere, 0).max() < 1e-6
  np.testing.assert_allclose(quad['log_px'], anywhere.mean(0), atol=1e-5)
  assert quad['inversion_error'] < 1e-3


def test_settings_are_refused_in_one_line():
  with pytest.raises(ValueError, match='odd'):
    fx.Config(quadrature_points=100)
  with pytest.raises(ValueError, match='binarized dynamically'):
    fx.Config(data=data_lib.DataConfig(dataset='mnist'))
  with pytest.raises(ValueError, match='multiple of'):
    fx.Config(eval_k=150)
  with pytest.raises(ValueError, match='family'):
    fe.family_model('planar', 784, (4,), 2, 1, 2, (2,))


def test_a_strict_run_with_a_wrong_log_determinant_fails(tmp_path,
                                                         monkeypatch):
  """The whole run, --strict, with the IAF's log-determinant planted wrong:
  `runner.Disagreement` (launch.py's exit 1), and the end line says so."""
  config = dataclasses.replace(TINY, checked_families=('iaf',))
  with monkeypatch.context() as m:
    m.setattr(dists, '_affine_log_det',
              lambda gate: jnp.sum(jax.nn.log_sigmoid(gate), -1) + 0.5)
    jax.clear_caches()
    with pytest.raises(runner.Disagreement,
                       match='^1 of 1 rows disagree with exact values$'):
      runner.run_point('flexible_exact', config, 0, str(tmp_path / 'run'),
                       strict=True)
  jax.clear_caches()
