"""experiments/intractability on a tiny setting: its claims, its refusals."""

import os

import pytest

from experiments import intractability
from experiments.common import runner


def _rows(records, **where):
  return [r for r in records if all(r.get(k) == v for k, v in where.items())]


@pytest.fixture(scope='module')
def records(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('intractability'))
  config = intractability.Config(latent_dims=(1, 3), observed_dim=8,
                                 points=2, repeats=16, max_log2_k=10)
  records = runner.run_point('intractability', config, 0, out, strict=True)
  assert {'error_vs_samples.png', 'samples_needed.png', 'results.json'} <= set(
      os.listdir(out))
  return records


def test_the_posterior_is_a_zero_variance_proposal(records):
  rows = _rows(records, kind='per_K', proposal='posterior')
  assert max(r['rmse'] for r in rows) < 1e-8
  assert all(r['disagrees'] is False for r in rows)


def test_naive_monte_carlo_is_biased_low_and_worse_in_higher_dimensions(
    records):
  summary = {(r['latent_dim'], r['proposal']): r
             for r in _rows(records, kind='summary')}
  for d in (1, 3):
    prior = _rows(records, kind='per_K', proposal='prior', latent_dim=d)
    assert prior[0]['bias'] < -0.5
    assert prior[-1]['rmse'] < prior[0]['rmse']
  assert (summary[3, 'prior']['log1p_chi2'] >
          summary[1, 'prior']['log1p_chi2'] + 1.0)
  assert (summary[3, 'prior']['K_needed_predicted'] >
          10 * summary[1, 'prior']['K_needed_predicted'])
  # An overdispersed q(z|x), even a wrong one, needs far fewer samples.
  assert (summary[3, 'mismatched']['K_needed_predicted'] <
          summary[3, 'prior']['K_needed_predicted'] / 10)
  # The χ² prediction of the samples needed holds within a factor 4.
  measured = summary[1, 'prior']['K_needed_measured']
  assert 0.25 < measured / summary[1, 'prior']['K_needed_predicted'] < 4.0


def test_the_delta_method_is_checked_where_k_is_large(records):
  checked = [r for r in records if r['kind'] == 'per_K' and
             r['proposal'] != 'posterior' and 'disagrees' in r]
  assert len(checked) > 10
  assert all(r['K'] >= 10 * (r['predicted_std']**2 * r['K']) for r in checked)
  assert not any(r['disagrees'] for r in checked)


@pytest.mark.parametrize('values, message', [
    (dict(latent_dims=(20,), observed_dim=16), 'exceeds observed_dim'),
    (dict(max_log2_k=60), 'max_log2_k: must be <= 20'),
    (dict(proposals=('uniform',)), 'is not one of'),
    (dict(noise=0.0), 'noise: must be > 0'),
])
def test_bad_settings_are_refused_in_one_line(values, message):
  with pytest.raises(ValueError, match=message) as error:
    intractability.Config(**values)
  assert '\n' not in str(error.value)


def test_the_old_flag_name_is_refused_naming_the_new_one(tmp_path, capsys):
  """mnist_intractability's name for the same K grid: --max_log2_k."""
  from experiments.common import launch  # pylint: disable=import-outside-toplevel
  out = tmp_path / 'run'
  rc = launch.cli(['launch.py', '--experiment=intractability',
                   '--max_log2_samples=4', f'--output_dir={out}'])
  err = capsys.readouterr().err.strip()
  assert rc == 2 and err.endswith(
      '--max_log2_samples was renamed --max_log2_k.'), err
  assert len(err.splitlines()) == 1 and not out.exists()
