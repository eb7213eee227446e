"""vae.analysis.run_comparison and the compare_runs experiment: groups of
seeds, and paired differences that recover a planted gap."""

import json
import math

import numpy as np
import pytest

from experiments import compare_runs
from experiments.common import runner
from vae.analysis import run_comparison

N = 2000
GAP = 0.3  # Planted: the flexible model's NLL is lower by GAP on average.
SEED_SHIFT = (-0.1, 0.0, 0.1)  # ... plus this per seed (sd over seeds 0.1).
NOISE = 0.5  # Per-image noise of the difference (IS noise, training).


def _runs(rng):
  """Baseline and flexible runs of seeds 0-2 on the same N images: image
  difficulty (sd 20) shared, the difference GAP + SEED_SHIFT[s] + noise."""
  difficulty = -90 + 20 * rng.standard_normal(N)
  runs = []
  for s, shift in enumerate(SEED_SHIFT):
    base = difficulty + 0.2 * rng.standard_normal(N)
    flex = base + GAP + shift + NOISE * rng.standard_normal(N)
    for posterior, log_px in (('diagonal', base), ('iaf', flex)):
      per_image = {'log_px': log_px, 'elbo': log_px - 5.0}
      summary = {'test_nll': -log_px.mean(),
                 'test_nll_stderr': log_px.std() / math.sqrt(N),
                 'test_elbo': log_px.mean() - 5.0, 'active_units': 20 + s}
      runs.append(run_comparison.Run(f'{posterior}_s{s}',
                                     {'posterior': posterior, 'epochs': 364},
                                     s, summary, per_image))
  return runs


def test_paired_gap_recovered_within_its_standard_error():
  groups, pairs = run_comparison.compare(_runs(np.random.default_rng(0)))
  base, flex = groups
  assert (base['label'], flex['label']) == ('posterior=diagonal',
                                            'posterior=iaf')
  assert base['baseline'] and base['nll_minus_baseline'] is None
  assert flex['paired_seeds'] == 3 and len(pairs) == 3
  # SE over images of the mean over 3 seeds: NOISE/√N/√3 (the image
  # difficulty, sd 20, cancels: unpaired it would be ~20/√N).
  se = NOISE / math.sqrt(N) / math.sqrt(3)
  assert abs(flex['nll_minus_baseline_se_images'] / se - 1) < 0.05
  assert abs(flex['nll_minus_baseline'] + GAP) < 4 * se
  # sd over seeds: that of SEED_SHIFT (0.1) plus the images' noise.
  assert abs(flex['nll_minus_baseline_sd_seeds'] - 0.1) < 4 * NOISE / math.sqrt(
      N)
  for p, shift in zip(pairs, SEED_SHIFT):
    assert abs(p['nll_minus_baseline'] + GAP + shift) < 4 * p[
        'nll_minus_baseline_se']
    assert abs(p['elbo_minus_baseline'] - GAP - shift) < 4 * p[
        'elbo_minus_baseline_se']
  assert flex['active_units'] == 21 and flex['active_units_sd_seeds'] == 1


def test_refusals():
  runs = _runs(np.random.default_rng(1))
  with pytest.raises(ValueError, match='baseline: no group is labelled '
                     '"prior=vamp"; the groups are: posterior=diagonal; '
                     'posterior=iaf'):
    run_comparison.compare(runs, 'prior=vamp')
  with pytest.raises(ValueError, match='two runs with one seed'):
    run_comparison.compare(runs + runs[:1])
  # The baseline chosen by label; runs without per-image values: no pairs.
  groups, pairs = run_comparison.compare(
      [r._replace(per_image=None) for r in runs], 'posterior=iaf')
  assert groups[1]['baseline'] and not pairs
  assert groups[0]['nll_minus_baseline'] is None


def _folder(root, name, run, per_image=True):
  folder = root / name
  folder.mkdir()
  row = {**run.settings, 'seed': run.seed, 'steps': 100, **run.summary}
  (folder / 'results.json').write_text(json.dumps([row]))
  (folder / 'metrics.csv').write_text(  # Two epochs of 4 and 6 s.
      'step,epoch,epoch_wall_s,epoch_cpu_s\n5,1,4.0,3.0\n10,2,6.0,5.0\n')
  if per_image:
    (folder / compare_runs.PER_IMAGE).write_text(json.dumps(
        {k: v.tolist() for k, v in run.per_image.items()}))
  return folder


def test_compare_runs_experiment(tmp_path):
  runs = _runs(np.random.default_rng(2))
  for r in runs:  # The standard model's results.json has no 'posterior'.
    settings = ({'epochs': 364} if r.settings['posterior'] == 'diagonal'
                else r.settings)
    _folder(tmp_path, r.name, r._replace(settings=settings))
  config = compare_runs.Config(
      runs=f'{tmp_path}/diagonal_s*, {tmp_path}/iaf_s*',
      baseline='posterior=diagonal')
  groups = runner.run_point('compare_runs', config, 0, str(tmp_path / 'out'))
  assert [g['label'] for g in groups] == ['posterior=diagonal',
                                          'posterior=iaf']
  assert groups[1]['seeds'] == '0, 1, 2'
  assert (groups[1]['train_wall_s'], groups[1]['train_cpu_s']) == (10.0, 8.0)
  assert abs(groups[1]['nll_minus_baseline'] + GAP) < 4 * groups[1][
      'nll_minus_baseline_se_images']
  pairs = json.loads((tmp_path / 'out' / 'pairs.json').read_text())
  assert len(pairs) == 3
  table = (tmp_path / 'out' / 'table.md').read_text()
  assert '| posterior=diagonal (baseline) | 0, 1, 2 |' in table
  assert '(images), sd ' in table
  # A pattern that names nothing, and a per_image.json of another
  # evaluation, are refused in one line.
  with pytest.raises(ValueError, match='names no finished run folder'):
    compare_runs.Config(runs=f'{tmp_path}/vamp_s*')
  stale = runs[0]._replace(summary={**runs[0].summary, 'test_nll': 1.0})
  _folder(tmp_path, 'stale', stale)
  with pytest.raises(ValueError, match='from different evaluations'):
    compare_runs.read_run(str(tmp_path / 'stale'))
  # A baseline that no group has: the run stops with one line naming the
  # groups, not a traceback.
  wrong = compare_runs.Config(runs=f'{tmp_path}/iaf_s*',
                              baseline='posterior=diagonal')
  with pytest.raises(SystemExit, match='^compare_runs: baseline: no group '
                     'is labelled "posterior=diagonal"; the groups are: '):
    runner.run_point('compare_runs', wrong, 0, str(tmp_path / 'out2'))
