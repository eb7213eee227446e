"""experiments/mixture_of_gaussians on a tiny setting: claims, refusals."""

import os

import pytest

from experiments import mixture_of_gaussians as mog
from experiments.common import runner


@pytest.fixture(scope='module')
def records(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('mixture_of_gaussians'))
  config = mog.Config(dims=(1,), train_points=200, test_points=2000,
                      em_components=(3,), em_iters=50, vae_steps=300,
                      z_grid_points=4000, grid_points=1000)
  records = runner.run_point('mixture_of_gaussians', config, 0, out,
                             strict=True)
  assert {'densities_1d.png', 'mle_is_min_kl.png'} <= set(os.listdir(out))
  return {r['model']: r for r in records}


def test_monte_carlo_and_quadrature_kl_agree_for_every_model(records):
  assert set(records) == {'true p_data', 'gaussian (min KL, population)',
                          'gaussian MLE', 'mixture EM K=3',
                          'VAE (z quadrature)'}
  for r in records.values():
    assert r['disagrees'] is False
    assert abs(r['kl_mc'] - r['kl_quadrature']) < 4 * r['kl_mc_stderr'] + 1e-6
    assert abs(r['model_mass_on_grid'] - 1.0) < 0.01
  assert records['true p_data']['kl_quadrature'] == 0.0


def test_held_out_nll_is_entropy_plus_kl(records):
  entropy = records['true p_data']['entropy_quadrature']
  for r in records.values():
    # -test_ll estimates H + KL: within 4 standard errors of the held-out
    # mean of -log p_model (its spread is below 1.5 nats here).
    assert abs(r['minus_test_ll_minus_kl_quad'] - entropy) < 4 * 1.5 / 2000**.5


def test_mle_minimizes_kl_and_em_beats_one_gaussian(records):
  population, mle = (records['gaussian (min KL, population)'],
                     records['gaussian MLE'])
  assert population['kl_quadrature'] <= mle['kl_quadrature']
  assert mle['kl_quadrature'] - population['kl_quadrature'] < 0.05
  em = records['mixture EM K=3']
  assert em['test_ll'] > mle['test_ll'] + 0.1
  assert em['kl_quadrature'] < mle['kl_quadrature'] - 0.1


@pytest.mark.parametrize('values, message', [
    (dict(train_points=1), 'cannot fit 8 full-covariance components'),
    (dict(em_components=(0,)), 'em_components: must be >= 1'),
    (dict(dims=(3,)), 'dims: must be <= 2'),
    (dict(grid_points=5000), 'at most 1000 per axis in 2-D'),
])
def test_bad_settings_are_refused_in_one_line(values, message):
  with pytest.raises(ValueError, match=message) as error:
    mog.Config(**values)
  assert '\n' not in str(error.value)


def test_old_flag_names_are_refused_naming_the_new_ones(tmp_path, capsys):
  """train_vae's names: --eval_k (K of log p(x)), --hidden_sizes."""
  from experiments.common import launch  # pylint: disable=import-outside-toplevel
  assert mog.Config().eval_k == 500  # The old --iwae_samples default.
  out = tmp_path / 'run'
  rc = launch.cli(['launch.py', '--experiment=mixture_of_gaussians',
                   '--iwae_samples=50', f'--output_dir={out}'])
  err = capsys.readouterr().err.strip()
  assert rc == 2 and err.endswith(
      '--iwae_samples was renamed --eval_k.'), err
  assert len(err.splitlines()) == 1 and not out.exists()
  with pytest.raises(ValueError, match=r'eval_k .* max\(hidden_sizes\) '
                     'exceeds 5e5'):
    mog.Config(eval_k=10**4, hidden_sizes=(64, 8))
  assert mog.Config().hidden_sizes == (64,)  # The old --vae_hidden=64.
  rc = launch.cli(['launch.py', '--experiment=mixture_of_gaussians',
                   '--vae_hidden=32', f'--output_dir={out}'])
  err = capsys.readouterr().err.strip()
  assert rc == 2 and err.endswith('--vae_hidden was renamed --hidden_sizes.')
