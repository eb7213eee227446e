"""The critical-batch fit and the equal-compute experiment."""

import json

import numpy as np
import pytest

from experiments import equal_compute as experiment
from experiments.common import runner
from vae import data
from vae.analysis import critical_batch as cb
from vae.models import image_vae


def test_crossing_interpolates_between_evaluations():
  examples, bounds = [0, 10, 20, 30], [-10.0, -5.0, 0.0, 1.0]
  assert cb.crossing(examples, bounds, -2.5) == pytest.approx(15.0)
  assert cb.crossing(examples, bounds, -11.0) == 0.0  # Reached at the start.
  assert cb.crossing(examples, bounds, 2.0) is None  # Never reached.
  assert cb.crossing(examples, [-10.0, np.nan, 0.0, 1.0], -2.5) is None
  # Within the first interval after initialization: not resolved.
  assert cb.crossing(examples, bounds, -7.5) == pytest.approx(5.0)
  assert cb.crossing(examples, bounds, -7.5, resolved_from=1) is None
  assert cb.crossing(examples, bounds, -2.5, resolved_from=1) == (
      pytest.approx(15.0))


def test_fit_recovers_a_planted_critical_batch():
  # E(B) = E_min + S_min·B exactly from McCandlish et al.'s hyperbola
  # (S/S_min - 1)(E/E_min - 1) = 1, then 3% multiplicative noise per
  # replicate: the per-replicate B_crit must straddle the planted 200.
  e_min, s_min = 1e5, 500.0
  sizes = np.array([16, 32, 64, 128, 256, 512, 1024])
  steps = s_min * (1 + (e_min / s_min) / sizes)
  exact = sizes * steps
  np.testing.assert_allclose((steps / s_min - 1) * (exact / e_min - 1), 1.0)
  rng = np.random.default_rng(0)
  crossings = {int(b): list(e * (1 + 0.03 * rng.standard_normal(8)))
               for b, e in zip(sizes, exact)}
  fit = cb.fit(crossings)
  assert fit['replicates'] == 8
  assert abs(fit['b_crit_mean'] - 200) < 4 * fit['b_crit_se']
  assert fit['b_crit_se'] < 40  # Resolved: the noise is small.
  assert fit['b_crit'] == pytest.approx(200, rel=0.1)
  noiseless = cb.fit_line(sizes, exact)
  assert noiseless['b_crit'] == pytest.approx(200, rel=1e-9)
  assert noiseless['s_min'] == pytest.approx(s_min, rel=1e-9)


def test_fit_says_when_there_is_no_knee():
  assert cb.fit_line([10, 100], [5.0, 5.0])['b_crit'] == np.inf
  assert cb.fit_line([10, 100], [0.0, 90.0])['b_crit'] == 0.0
  with pytest.raises(ValueError, match='two batch sizes'):
    cb.fit({10: [1.0, None], 20: [None, None]})


TINY = dict(data=data.DataConfig(dataset='synthetic', num_train=96),
            model=image_vae.ModelConfig(hidden_sizes=(8,), latent_dim=2),
            batch_sizes=(4, 8, 16, 32), passes=2, replicates=2, num_draws=4,
            noise_batch=4)


def test_tiny_run_trains_fits_and_resumes(tmp_path, capsys):
  config = experiment.Config(**TINY)
  records = runner.run_point('equal_compute', config, 0, str(tmp_path))
  for name in ('results.json', 'results.csv', 'curves.json',
               'equal_compute.png'):
    assert (tmp_path / name).exists(), name
  finals = [r for r in records if r['section'] == 'final']
  assert [r['B'] for r in finals] == [4, 8, 16, 32]
  for r in finals:  # Equal compute: the same examples for every B.
    assert r['examples'] == 2 * 96 and r['n'] == 2
    assert np.isfinite(r['test_bound'])
  curves = json.loads((tmp_path / 'curves.json').read_text())
  assert len(curves) == 4 * 2 * 3  # Epochs 0, 1, 2 of every run.
  noise = [r for r in records if r['section'] == 'b_noise']
  assert {r['group'] for r in noise} == {'encoder', 'decoder', 'all'}
  # At initialization and at the restored end of the reference run.
  assert {r['epoch'] for r in noise} == {0, 2}
  b_noise = {(r['epoch'], r['group']): r['b_noise'] for r in noise}
  assert b_noise[2, 'all'] != b_noise[0, 'all']
  out = capsys.readouterr().out
  assert 'B_crit' in out
  # A rerun into the folder trains nothing and gives the same numbers.
  again = runner.run_point('equal_compute', config, 0, str(tmp_path))
  assert [r for r in again if r['section'] == 'final'] == finals
  assert json.loads((tmp_path / 'curves.json').read_text()) == curves


def test_refusals():
  with pytest.raises(ValueError, match='multiple of num_samples'):
    experiment.Config(**{**TINY, 'passes': 3}, num_samples=2,
                      estimator='pathwise', objective='elbo')
  with pytest.raises(ValueError, match='two batch sizes'):
    experiment.Config(**{**TINY, 'batch_sizes': (8,)})
