"""experiments/linear_gaussian on a tiny setting: its claims, its refusals."""

import os

import pytest

from experiments import linear_gaussian
from experiments.common import runner
from vae.problems import amortization as am

_TINY = dict(ppca_data_dim=6, ppca_latent_dim=2, train_size=100,
             test_size=200, identity_pairs=50, iwae_ks=(1, 10, 100),
             iwae_points=5, iwae_repeats=100,
             amortized_estimators=('pathwise',),
             per_point_estimators=('score_rloo',), fit_steps=600)


@pytest.fixture(scope='module')
def records(tmp_path_factory):
  """The strict run's records."""
  out = str(tmp_path_factory.mktemp('linear_gaussian'))
  config = linear_gaussian.Config(**_TINY)
  yield runner.run_point('linear_gaussian', config, 0, out, strict=True)
  assert {'iwae_and_fits.png', 'elbo_training.png'} <= set(os.listdir(out))


def _rows(records, section, **where):
  return [r for r in records if r['section'] == section and
          all(r[k] == v for k, v in where.items())]


def test_every_exact_check_passes_and_is_not_vacuous(records):
  checked = [r for r in records if 'disagrees' in r]
  assert len(checked) == 6 + 2 + 3 + 3  # identity, q*, IWAE_k, fits.
  assert not any(r['disagrees'] for r in checked)
  mean = _rows(records, 'identity', point='mean over 50')[0]
  assert mean['kl_q_posterior'] > 1.0 and mean['max_abs_residual'] < 1e-10
  ortho, general = _rows(records, 'best_diagonal_q')
  assert abs(ortho['gap']) < 1e-10 and general['gap'] > 1e-3


def test_iwae_climbs_from_the_elbo_toward_log_px(records):
  iwae = _rows(records, 'iwae')
  gaps = [r['iwae_minus_log_px'] for r in iwae]
  assert iwae[0]['elbo_minus_log_px'] < -0.01
  assert gaps[0] < gaps[1] < gaps[2]
  assert abs(gaps[2]) < 3 * iwae[2]['stderr']


def test_elbo_fits_approach_the_maximum_likelihood(records):
  fits = {r['method']: r for r in _rows(records, 'fit')}
  mle = fits['pPCA maximum likelihood (closed form)']['train_ll']
  fit = fits['ELBO, pathwise, amortized q']
  assert mle - 0.1 < fit['train_ll'] < mle
  assert fit['train_elbo'] < fit['train_ll']


def test_a_wrong_closed_form_fails_the_strict_run(records, tmp_path,
                                                 monkeypatch):
  del records  # Run first: the same settings reuse its compiled programs.
  exact = am.approximation_gap
  monkeypatch.setattr(am, 'approximation_gap', lambda m: exact(m) + 1e-3)
  with pytest.raises(runner.Disagreement):
    runner.run_point('linear_gaussian', linear_gaussian.Config(**_TINY), 0,
                     str(tmp_path), strict=True)


@pytest.mark.parametrize('values, message', [
    (dict(iwae_ks=(0, 1)), 'iwae_ks: must be >= 1'),
    (dict(noise_scale=0.0), 'noise_scale: must be > 0'),
    (dict(train_size=0), 'train_size: must be >= 1'),
    (dict(train_size=4), 'cannot fit pPCA'),
    (dict(ppca_latent_dim=10), 'must be < ppca_data_dim'),
    (dict(amortized_estimators=('score_rloo',), fit_samples=1),
     'needs num_samples >= 2'),
])
def test_bad_settings_are_refused_in_one_line(values, message):
  with pytest.raises(ValueError, match=message) as error:
    linear_gaussian.Config(**values)
  assert '\n' not in str(error.value)
