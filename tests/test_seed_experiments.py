"""Runs each seed-question experiment's `main` on a tiny setting.

Checks the outputs (results.json/.csv, config.json, PNGs) and the claims each
experiment makes: the identities (linear_gaussian, mixture_of_gaussians) to
tight tolerances, the qualitative results (intractability, amortization_gap,
discrete_latents) on small seeded settings.
"""

import json
import os

from absl import flags
from absl.testing import flagsaver
import numpy as np
import pytest

from experiments import amortization_gap
from experiments import discrete_latents
from experiments import intractability
from experiments import linear_gaussian
from experiments import mixture_of_gaussians

FLAGS = flags.FLAGS


@pytest.fixture(scope='module', autouse=True)
def parsed_flags():
  if not FLAGS.is_parsed():
    FLAGS.mark_as_parsed()
  yield


def _run(module, tmp_path, **flag_values):
  out = str(tmp_path / 'out')
  with flagsaver.flagsaver(output_dir=out, seed=0, **flag_values):
    module.main(['prog'])
  files = os.listdir(out)
  for name in ('results.json', 'results.csv', 'config.json'):
    assert name in files, (name, files)
  assert any(f.endswith('.png') for f in files), files
  with open(os.path.join(out, 'results.json')) as f:
    return json.load(f), out


def _rows(records, **where):
  return [r for r in records if all(r.get(k) == v for k, v in where.items())]


def test_linear_gaussian(tmp_path):
  records, _ = _run(
      linear_gaussian, tmp_path, ppca_data_dim=6, ppca_latent_dim=2,
      train_size=100, test_size=200, identity_pairs=50,
      iwae_ks=['1', '10', '100'], iwae_points=5, iwae_repeats=100,
      amortized_estimators=['pathwise'],
      per_point_estimators=[], fit_steps=600)
  # 1. log p(x) - ELBO(q) = KL(q ‖ p(z|x)), per point and on average.
  summary = _rows(records, section='identity', point='mean over 50')[0]
  assert summary['max_abs_residual'] < 1e-8
  assert summary['kl_q_posterior'] > 1.0
  # 2. ELBO(q*) = log p(x) iff WᵀW is diagonal; else the closed-form gap.
  ortho, general = _rows(records, section='best_diagonal_q')
  assert abs(ortho['gap']) < 1e-10
  assert general['gap'] > 1e-3
  assert general['max_abs_gap_minus_formula'] < 1e-10
  # 3. IWAE_k climbs toward log p(x).
  iwae = _rows(records, section='iwae')
  gaps = [r['iwae_minus_log_px'] for r in iwae]
  assert gaps[0] < gaps[1] < gaps[2]
  assert gaps[2] < 3 * iwae[2]['stderr']
  assert abs(gaps[0] - iwae[0]['elbo_minus_log_px']) < 4 * iwae[0]['stderr']
  # 4. No fit beats the closed-form maximum likelihood on the training data.
  fits = _rows(records, section='fit')
  mle = _rows(fits, method='pPCA maximum likelihood (closed form)')[0]
  assert all(r['train_ll'] <= mle['train_ll'] + 1e-9 for r in fits)
  elbo_fit = _rows(fits, method='ELBO, pathwise, amortized q')[0]
  assert elbo_fit['train_ll'] > mle['train_ll'] - 0.1
  assert elbo_fit['train_elbo'] <= elbo_fit['train_ll'] + 1e-9


def test_intractability(tmp_path):
  records, _ = _run(intractability, tmp_path, latent_dims=['1', '3'],
                    observed_dim=8, points=2, repeats=16,
                    max_log2_samples=10)
  per_k = _rows(records, kind='per_K')
  summary = {(r['latent_dim'], r['proposal']): r
             for r in _rows(records, kind='summary')}
  # The exact posterior is a zero-variance proposal.
  assert max(r['rmse'] for r in _rows(per_k, proposal='posterior')) < 1e-8
  # Naive Monte Carlo: biased low, slow, and worse with the latent dimension.
  for d in (1, 3):
    prior = _rows(per_k, proposal='prior', latent_dim=d)
    assert prior[0]['bias'] < -0.5
    assert prior[-1]['rmse'] < prior[0]['rmse']
  assert (summary[3, 'prior']['log1p_chi2'] >
          summary[1, 'prior']['log1p_chi2'] + 1.0)
  assert (summary[3, 'prior']['K_needed_predicted'] >
          10 * summary[1, 'prior']['K_needed_predicted'])
  # An overdispersed q(z|x), even a wrong one, needs far fewer samples.
  assert (summary[3, 'mismatched']['K_needed_predicted'] <
          summary[3, 'prior']['K_needed_predicted'] / 10)
  # The χ² prediction matches the measured sample count (within 4x).
  measured = summary[1, 'prior']['K_needed_measured']
  assert measured is not None
  assert 0.25 < measured / summary[1, 'prior']['K_needed_predicted'] < 4.0


def test_mixture_of_gaussians(tmp_path):
  records, _ = _run(mixture_of_gaussians, tmp_path, dims=['1'],
                    train_points=200, test_points=2000, em_components=['3'],
                    em_iters=50, vae_steps=300, z_grid_points=4000,
                    grid_points=1000)
  by_model = {r['model']: r for r in records}
  true = by_model['true p_data']
  assert abs(true['kl_quadrature']) < 1e-6
  entropy = true['entropy_quadrature']
  for r in records:
    # -mean log-likelihood - KL is the data entropy, for every model: exact
    # with the Monte Carlo KL, up to held-out sampling error by quadrature.
    assert abs(r['minus_test_ll_minus_kl_mc'] -
               true['minus_test_ll_minus_kl_mc']) < 1e-4
    assert abs(r['minus_test_ll_minus_kl_quad'] - entropy) < 0.05
    assert r['kl_quadrature'] > -1e-6
    assert abs(r['model_mass_on_grid'] - 1.0) < 0.01
  gaussian, em = by_model['gaussian MLE'], by_model['mixture EM K=3']
  assert em['test_ll'] > gaussian['test_ll'] + 0.1
  assert em['kl_quadrature'] < gaussian['kl_quadrature'] - 0.1
  assert 'VAE (z quadrature)' in by_model


def test_amortization_gap(tmp_path):
  records, _ = _run(amortization_gap, tmp_path, model_data_dim=6,
                    model_latent_dim=3, encoder_train_size=30,
                    encoder_test_size=300, mlp_hidden=32, encoder_steps=1500,
                    joint_steps=2000)
  final = _rows(records, kind='final')
  fixed = [r for r in final if r['encoder'] in ('linear', 'mlp')]
  approx = fixed[0]['approximation_gap']
  assert approx > 1e-3
  for r in fixed:
    assert abs(r['approximation_gap'] - approx) < 1e-10
    assert r['amortization_gap'] > -1e-9
    assert abs(r['log_px'] - r['elbo_amortized'] -
               r['approximation_gap'] - r['amortization_gap']) < 1e-9
  linear = _rows(records, kind='curve', encoder='linear')
  assert (linear[-1]['amortization_gap_train'] <
          0.1 * linear[0]['amortization_gap_train'])
  # The MLP encoder fits its 30 training points better than held-out ones.
  mlp = {r['split']: r for r in _rows(final, encoder='mlp')}
  assert (mlp['held-out']['amortization_gap'] >
          2 * mlp['train']['amortization_gap'])
  # A model learned with the ELBO adapts to the factorized q.
  joint = [r for r in final if r['encoder'] not in ('linear', 'mlp')]
  assert joint and joint[0]['approximation_gap'] < 0.5 * approx


def test_discrete_latents(tmp_path):
  records, out = _run(
      discrete_latents, tmp_path, dataset='synthetic', train_examples=300,
      test_examples=100, estimators_to_compare=['disarm', 'score_moving_average'],
      latents=8, train_steps=100, eval_every=50, variance_keys=100,
      variance_batch=16)
  assert os.path.exists(os.path.join(out, 'wall_time_curves.csv'))
  assert all('wall_time_s' not in r for r in records)
  for name in ('disarm', 'score_moving_average'):
    curve = _rows(records, kind='curve', estimator=name)
    assert [r['step'] for r in curve] == [0, 50, 100]
    assert all(np.isfinite(r['test_elbo']) for r in curve)
  disarm = _rows(records, kind='curve', estimator='disarm')
  assert disarm[-1]['test_elbo'] > disarm[0]['test_elbo'] + 5
  for at in ('initialization', 'trained with disarm'):
    var = {r['estimator']: r['total_variance']
           for r in _rows(records, kind='variance', at=at)}
    assert var['disarm'] < 0.5 * var['score_moving_average']
