"""mnist_gaps and mnist_intractability on a tiny train_vae run (synthetic
images, 2-D latent): strict runs, their files, and log p(x) against
quadrature over the latent plane."""

import json
import os

import numpy as np
import pytest

from experiments.common import launch
from experiments import evaluate_vae
from experiments import mnist_gaps
from experiments import mnist_intractability
from experiments import train_vae
from experiments.common import runner
from tests import test_image_inference as quad
from vae import ais
from vae import data
from vae import evaluate
from vae import optim
from vae import train
from vae.models import image_vae

IMAGES = 6


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('train'))
  runner.run_point('train_vae', train_vae.Config(
      data=data.DataConfig(dataset='synthetic', num_train=200),
      model=image_vae.ModelConfig(hidden_sizes=(8,), latent_dim=2),
      training=train.TrainConfig(batch_size=20, epochs=5, test_every=0),
      evaluate=False, tensorboard=False), 0, out)
  _, _, model, params, _ = evaluate_vae.load_run(out, None)
  config = evaluate_vae.Config(checkpoint_dir=out)
  images = mnist_intractability.load(config, print)[2][:IMAGES]
  exact = []
  for x in images:  # Around the encoder's mean, ±10 encoder sds.
    q = model.encoder(params, x)
    exact.append(quad.log_marginal(*quad.quadrature(
        model, params, x, q.loc, 10 * float(np.max(q.scale)), 101)))
  return out, np.array(exact)


def _trained(run_dir, **evaluation):
  return evaluate_vae.Config(checkpoint_dir=run_dir, evaluation=(
      evaluate.EvalConfig(num_eval=IMAGES, eval_batch_size=IMAGES,
                          **evaluation)))


def test_gaps_are_nonnegative_and_log_p_is_the_quadrature(trained,
                                                          tmp_path):
  run_dir, exact = trained
  config = mnist_gaps.Config(
      trained=_trained(run_dir, eval_k=1000, eval_chunk_size=500,
                       eval_iwae_ks=(1, 10)), fit_steps=100, fit_samples=8,
      optimizer=optim.OptimizerConfig(learning_rate=3e-2,
                                      lr_schedule='cosine'))
  records = runner.run_point('mnist_gaps', config, 0, str(tmp_path),
                             strict=True)
  assert {'gaps.png', 'largest_gaps.png', 'timing.json'} <= set(
      os.listdir(tmp_path))
  q = {r['q']: r for r in records if r['kind'] == 'q'}
  gaps = {r['family']: r for r in records if r['kind'] == 'gap'}
  assert list(q) == ['amortized', 'diagonal', 'full_covariance']
  assert abs(gaps['diagonal']['log_px'] - exact.mean()) < 0.05
  for r in gaps.values():
    assert r['approximation_gap'] > 0 and r['amortization_gap'] > 0
  assert gaps['full_covariance']['gain_over_previous'] > 0
  for r in q.values():
    assert r['elbo'] <= r['iwae_10'] <= r['log_px'] < exact.mean() + 0.05
  curves = [r for r in records if r['kind'] == 'curve']
  assert curves[-1]['step'] == 100


def test_prior_sampling_converges_to_importance_sampling(trained, tmp_path):
  run_dir, exact = trained
  config = mnist_intractability.Config(
      trained=_trained(run_dir, eval_k=2000, eval_chunk_size=1000),
      max_log2_k=12, streams=3)
  records = runner.run_point('mnist_intractability', config, 0,
                             str(tmp_path), strict=True)
  assert 'error_vs_samples.png' in os.listdir(tmp_path)
  rows = {(r['proposal'], r['K']): r for r in records if r['kind'] == 'per_K'}
  summary = {r['proposal']: r for r in records if r['kind'] == 'summary'}
  assert abs(summary['encoder']['reference'] - exact.mean()) < 0.05
  # With 2 latent dimensions the prior is a usable proposal, only worse.
  assert rows['prior', 1]['mean_minus_reference'] < -2
  assert abs(rows['prior', 2**12]['mean_minus_reference']) < 0.3
  assert (abs(rows['encoder', 64]['mean_minus_reference']) <
          abs(rows['prior', 64]['mean_minus_reference']))
  assert (summary['prior']['effective_samples'] <
          summary['encoder']['effective_samples'])


def test_a_run_needs_the_trained_run(tmp_path, capsys):
  for experiment in ('mnist_gaps', 'mnist_intractability'):
    rc = launch.cli(['launch.py', f'--experiment={experiment}',
                     f'--output_dir={tmp_path / experiment}'])
    err = capsys.readouterr().err
    assert rc == 2 and 'checkpoint_dir' in err and err.count('\n') == 1
  rc = launch.cli(['launch.py', '--experiment=mnist_gaps',
                   f'--checkpoint_dir={tmp_path}',
                   f'--output_dir={tmp_path / "r"}'])
  assert rc == 2 and 'not a train_vae run' in capsys.readouterr().err
  with pytest.raises(ValueError, match='fit_steps'):
    mnist_gaps.Config(fit_steps=0)
  with pytest.raises(ValueError, match='families: give each once'):
    mnist_gaps.Config(families=('full_covariance', 'diagonal'))


def _ais(**kwargs):
  """AIS on all IMAGES (T = 100) and BDMC on 6 simulated images."""
  return ais.AISConfig(**{**dict(
      ais_images=IMAGES, ais_temperatures=100, ais_leapfrog=5,
      ais_batch_size=IMAGES, bdmc_images=6, bdmc_temperatures=(10, 100)),
                          **kwargs})


def _check_bdmc(rows):
  assert [r['T'] for r in rows] == [10, 100]
  for r in rows:
    assert r['images'] == 6 and not r['disagrees']
    assert r['lower_one'] <= r['lower'] + 1e-6
    assert r['upper'] <= r['upper_one'] + 1e-6
  # More temperatures, a narrower one-chain bracket.
  assert rows[1]['gap_one'] < rows[0]['gap_one']


def test_evaluate_vae_reports_ais_beside_is_and_the_bdmc_bracket(
    trained, tmp_path, capsys):
  run_dir, exact = trained
  config = _trained(run_dir, eval_k=1000, eval_chunk_size=500,
                    eval_iwae_ks=(1,), pictures=False, ais=_ais())
  records = runner.run_point('evaluate_vae', config, 0, str(tmp_path),
                             strict=True)
  assert '0 of 2 rows disagree' in capsys.readouterr().out
  s, bdmc = records[0], records[1:]
  assert (s['ais_images'], s['ais_temperatures'], s['ais_chains']) == (
      IMAGES, 100, 16)
  # AIS and IS of the same images both agree with quadrature.
  assert abs(s['ais_log_px'] - exact.mean()) < 4 * s['ais_log_px_se_mc'] + 0.02
  assert abs(s['is_log_px'] - exact.mean()) < 4 * s['is_log_px_se_mc'] + 0.02
  assert s['is_log_px'] == pytest.approx(-s['test_nll'])  # All 6 images.
  assert abs(s['ais_minus_is']) < 4 * s['ais_minus_is_se'] + 0.05
  _check_bdmc(bdmc)
  per_image = json.load(open(tmp_path / 'ais_per_image.json'))
  assert len(per_image['log_px']) == len(per_image['is_log_px']) == IMAGES
  assert np.mean(per_image['log_px']) == pytest.approx(s['ais_log_px'])
  assert -np.mean(per_image['is_log_px']) == pytest.approx(s['test_nll'])


def test_mnist_gaps_against_ais(trained, tmp_path, capsys):
  run_dir, exact = trained
  config = mnist_gaps.Config(
      trained=_trained(run_dir, eval_k=1000, eval_chunk_size=500,
                       eval_iwae_ks=(1, 10), pictures=False, ais=_ais()),
      fit_steps=100, fit_samples=8, optimizer=optim.OptimizerConfig(
          learning_rate=3e-2, lr_schedule='cosine'))
  records = runner.run_point('mnist_gaps', config, 0, str(tmp_path),
                             strict=True)
  checked = [r for r in records if 'disagrees' in r]
  assert f'0 of {len(checked)} rows disagree' in capsys.readouterr().out
  gaps = {r['family']: r for r in records if r['kind'] == 'gap'}
  ais_gaps = {r['family']: r for r in records if r['kind'] == 'gap_ais'}
  assert list(ais_gaps) == ['diagonal', 'full_covariance']
  for f, r in ais_gaps.items():
    assert r['images'] == IMAGES and not r['disagrees']
    assert abs(r['log_px_ais'] - exact.mean()) < (
        4 * r['log_px_ais_se_mc'] + 0.02)
    # Same images, same ELBOs: the gaps move by AIS - IS only.
    assert r['approximation_gap'] == pytest.approx(
        gaps[f]['approximation_gap'] + r['ais_minus_is'], abs=1e-6)
    assert r['amortization_gap'] == pytest.approx(
        gaps[f]['amortization_gap'], abs=1e-6)
    assert r['approximation_gap'] > 0
    bdmc_100 = [b for b in records if b['kind'] == 'bdmc' and b['T'] == 100]
    assert r['bdmc_gap'] == bdmc_100[0]['gap']
  _check_bdmc([r for r in records if r['kind'] == 'bdmc'])


def test_bad_ais_settings_are_refused_before_the_run_folder(trained,
                                                            tmp_path,
                                                            capsys):
  run_dir, _ = trained
  for experiment in ('evaluate_vae', 'mnist_gaps'):
    for flag, message in (('--ais_temperatures=1', 'ais_temperatures'),
                          ('--ais_step_size=0', 'ais_step_size'),
                          ('--ais_step_size=-0.1', 'ais_step_size'),
                          ('--ais_images=7', 'ais_images')):
      out = tmp_path / experiment
      rc = launch.cli(['launch.py', f'--experiment={experiment}',
                       f'--checkpoint_dir={run_dir}', f'--num_eval={IMAGES}',
                       flag, f'--output_dir={out}'])
      err = capsys.readouterr().err
      assert rc == 2 and message in err and err.count('\n') == 1, err
      assert not out.exists()
