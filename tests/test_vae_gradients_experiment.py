"""experiments/vae_gradients.py on a tiny setting, in-process; refusals."""

import json
import os

import pytest

from experiments.common import launch
from experiments import vae_gradients
from experiments.common import runner
from vae import data

SYNTHETIC = data.DataConfig(dataset='synthetic', num_train=64)
TINY = dict(data=SYNTHETIC,
            hidden_sizes=(8,), latent_dim=2, batch_size=8,
            fixed_batch_size=4, eval_steps=(2, 0), objectives=('elbo',),
            elbo_estimators=('pathwise', 'score_moving_average'),
            sample_counts=(2,), num_draws=10, reference_draws=10,
            compile_threads=1)


def test_tiny_run_writes_its_files_and_records(tmp_path, capsys):
  config = vae_gradients.Config(**TINY)
  records = runner.run_point('vae_gradients', config, 0, str(tmp_path))
  for name in ('results.json', 'results.csv', 'config.json', 'timings.json',
               'variance_snr_vs_step.png', 'variance_snr_vs_num_samples.png'):
    assert (tmp_path / name).exists(), name
  assert json.loads((tmp_path / 'results.json').read_text()) == records
  assert len(records) == 2 * 2 * 2  # estimators x groups x steps.
  assert {(r['group'], r['step']) for r in records} == {
      (g, s) for g in ('encoder', 'decoder') for s in (0, 2)}
  for r in records:
    assert r['objective'] == 'elbo' and r['num_samples'] == 2
    assert r['num_draws'] == 10 and r['total_variance'] > 0
    assert -1 <= r['cosine_to_reference'] <= 1
    assert r['reference_estimator'] == 'pathwise'
    assert (r['baseline'] is None) == (r['estimator'] != 'score_moving_average')
  # Same samples (common random numbers): the decoder statistics coincide.
  dec = [r for r in records if r['group'] == 'decoder' and r['step'] == 2]
  assert dec[0]['total_variance'] == pytest.approx(dec[1]['total_variance'],
                                                   rel=1e-5)
  assert 'seconds' not in (tmp_path / 'results.json').read_text()
  timings = json.loads((tmp_path / 'timings.json').read_text())
  assert timings['draws'] and timings['compile'] and timings['train_seconds']
  stdout = capsys.readouterr().out
  assert 'enc_var' in stdout and 'ms/draw' in stdout


@pytest.mark.parametrize('settings, message', [
    (dict(sample_counts=(1,), elbo_estimators=('score_rloo',)),
     "estimator 'score_rloo' needs num_samples >= 2, got 1"),
    (dict(objectives=('iwae',), iwae_estimators=('dreg', 'vimco'),
          sample_counts=(1,)),
     "estimator 'vimco' needs num_samples >= 2"),
    (dict(elbo_estimators=('stl',)), "'stl' does not apply to objective"),
    (dict(data=data.DataConfig(dataset='synthetic', num_train=10),
          batch_size=32),
     'more than 10 images'),
    (dict(num_draws=1), 'num_draws: must be >= 2'),
    (dict(hidden_sizes=(0,)), 'hidden_sizes: must be >= 1'),
])
def test_bad_settings_are_refused(settings, message):
  with pytest.raises(ValueError, match=message):
    vae_gradients.Config(**settings)


def test_refusal_on_the_command_line_is_one_line(tmp_path, capsys):
  out = tmp_path / 'run'
  rc = launch.cli(['launch.py', '--experiment=vae_gradients',
                   '--dataset=synthetic',
                   '--elbo_estimators=score_rloo', '--sample_counts=1',
                   f'--output_dir={out}'])
  err = capsys.readouterr().err
  assert rc == 2 and len(err.strip().splitlines()) == 1, err
  assert 'needs num_samples >= 2' in err and not out.exists()


@pytest.mark.parametrize('objective, fixed, text', [
    ('elbo', {'num_samples': 5}, 'N = 5'),
    ('iwae', {'num_samples': 20}, 'K = 20'),
    ('elbo', {'step': 300}, 'step 300'),
])
def test_panel_titles_name_the_fixed_setting_in_words(objective, fixed, text):
  assert vae_gradients.fixed_text(objective, fixed) == text


@pytest.mark.skipif(not os.environ.get(data.ENV_TFDS_DATA_DIR),
                    reason=f'set {data.ENV_TFDS_DATA_DIR} for real data')
def test_the_default_data_runs_when_present(tmp_path, capsys):
  """Binarized MNIST (found through the env var) with its defaults."""
  config = vae_gradients.Config(**{
      **TINY, 'data': data.DataConfig(dataset='binarized_mnist',
                                      num_train=64)})
  records = runner.run_point('vae_gradients', config, 0, str(tmp_path))
  assert 'binarized_mnist images' in capsys.readouterr().out
  assert all(r['total_variance'] > 0 for r in records)
  # The untrained decoder's bias is at the logits of the pixel means: -201.8
  # nats on these 4 images (synthetic ones: -252.9).
  assert all(-230 < r['bound'] < -175 for r in records if r['step'] == 0)
