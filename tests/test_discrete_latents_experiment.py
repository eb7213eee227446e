"""experiments/discrete_latents.py on a tiny setting, in-process; refusals."""

import json

from absl import flags
import pytest

from experiments.common import flags as config_flags
from experiments.common import launch
from experiments import discrete_latents
from experiments.common import runner
from vae import data

TINY = dict(data=data.DataConfig(dataset='synthetic', num_train=64),
            test_examples=8, latent_dim=3, vimco_samples=3,
            fit_steps=4,
            eval_every=2, batch_size=8, eval_samples=2, eval_k=4,
            num_draws=8, fixed_batch_size=4, train_eval_examples=8,
            estimators_to_compare=('disarm', 'vimco'))


def test_tiny_run_writes_its_files_and_records(tmp_path, capsys):
  config = discrete_latents.Config(**TINY)
  records = runner.run_point('discrete_latents', config, 0, str(tmp_path))
  for name in ('results.json', 'config.json', 'discrete_latents.png',
               'wall_time_curves.json', 'wall_time_curves.csv'):
    assert (tmp_path / name).exists(), name
  assert json.loads((tmp_path / 'results.json').read_text()) == records
  assert all('wall_time_s' not in r for r in records)  # Deterministic.
  curves = json.loads((tmp_path / 'wall_time_curves.json').read_text())
  assert all(r['wall_time_s'] >= 0 and r['cpu_time_s'] >= 0 for r in curves)
  for r in records:  # Bounds at every evaluation: ELBO ≤ 0 for 0/1 pixels.
    assert r['kind'] == 'variance' or r['train_elbo'] < r['test_iwae4'] + 50
  names = TINY['estimators_to_compare']
  steps = [r['step'] for r in records if r['kind'] == 'curve']
  assert steps == [0, 2, 4] * 2
  final = {r['estimator']: r for r in records if r['kind'] == 'final'}
  assert set(final) == set(names)
  assert all(r['test_iwae4'] >= r['test_elbo'] - 5 for r in final.values())
  var = [r for r in records if r['kind'] == 'variance']
  assert [r['at'] for r in var] == (['initialization'] * 2 +
                                    ['trained with disarm'] * 2)
  for r in var:
    assert r['total_variance'] > 0
    # The mean over P = 784·3 + 3 encoder parameters (W and b).
    assert r['variance_per_parameter'] == pytest.approx(
        r['total_variance'] / 2355, rel=1e-12)
    # VIMCO's target is ∇IWAE_K: no bias against the ELBO reference.
    assert (r['bias_sq'] is None) == (r['estimator'] == 'vimco')
    assert r['unbiased_for_elbo'] == (r['estimator'] == 'disarm')
  assert 'test_elbo' in capsys.readouterr().out


@pytest.mark.parametrize('settings, message', [
    (dict(latent_dim=-3), 'latent_dim: must be >= 1'),
    (dict(temperature=0.0), 'temperature: must be > 0'),
    (dict(batch_size=0), 'batch_size: must be >= 1'),
    (dict(estimators_to_compare=('score_rloo',), evals_per_example=1),
     "'score_rloo' needs evals_per_example >= 2"),
    (dict(estimators_to_compare=('disarm',), evals_per_example=1),
     "'disarm' needs evals_per_example >= 2"),
    (dict(hidden_sizes=(0, 10)), 'hidden_sizes: must be >= 1, got 0.'),
    (dict(vimco_samples=1), 'vimco_samples: must be >= 2'),
    (dict(activation='leaky'), 'activation: .*not one of'),
    (dict(negative_slope=-0.1), 'negative_slope: must be >= 0'),
    (dict(train_eval_examples=5000), 'train_eval_examples=5000 exceeds'),
    (dict(fit_steps=100, eval_every=30), 'must be a multiple'),
    (dict(fixed_batch_size=5000), 'fixed_batch_size=5000 exceeds'),
    (dict(estimators_to_compare=('pathwise',)), 'not one of'),
])
def test_bad_settings_are_refused(settings, message):
  with pytest.raises(ValueError, match=message):
    discrete_latents.Config(**settings)


@pytest.mark.parametrize('flag', ['--latent_dim=-3', '--learning_rate=-1',
                                  '--temperature=0', '--batch_size=0'])
def test_refusal_on_the_command_line_is_one_line(tmp_path, capsys, flag):
  out = tmp_path / 'run'
  rc = launch.cli(['launch.py', '--experiment=discrete_latents',
                   '--dataset=synthetic', flag, f'--output_dir={out}'])
  err = capsys.readouterr().err
  assert rc == 2 and len(err.strip().splitlines()) == 1, err
  assert flag[2:].split('=')[0] in err and not out.exists()


@pytest.mark.parametrize('old, new', sorted(discrete_latents.RENAMED.items()))
def test_old_flag_names_are_refused_naming_the_new_one(tmp_path, capsys, old,
                                                      new):
  """The names of one concept are those of the other experiments."""
  out = tmp_path / 'run'
  rc = launch.cli(['launch.py', '--experiment=discrete_latents', f'--{old}=4',
                   f'--output_dir={out}'])
  err = capsys.readouterr().err.strip()
  assert rc == 2 and len(err.splitlines()) == 1, err
  assert f'--{old} was renamed --{new}' in err and not out.exists()
  assert new in config_flags.flag_paths(discrete_latents.Config)
  assert old not in config_flags.flag_paths(discrete_latents.Config)


def test_linear_maps_are_the_default_and_empty_hidden_sizes_parse(tmp_path):
  """--hidden_sizes= (empty) is the linear SBN of Dong et al. (2020)."""
  assert discrete_latents.Config().hidden_sizes == ()
  flag_values = flags.FlagValues()
  config_flags.define_flags(discrete_latents.Config, flag_values, __name__)
  flag_values(['prog', '--hidden_sizes=', '--latent_dim=7'])
  config = config_flags.config_from_flags(discrete_latents.Config, flag_values)
  assert config.hidden_sizes == () and config.latent_dim == 7
  flag_values(['prog', '--hidden_sizes=200,200'])
  assert config_flags.config_from_flags(
      discrete_latents.Config, flag_values).hidden_sizes == (200, 200)


