"""experiments/amortization_gap on a tiny setting: its claims, its refusals."""

import os

import pytest

from experiments import amortization_gap
from experiments.common import runner
from vae.problems import amortization as am

_TINY = dict(model_data_dim=6, model_latent_dim=3, encoder_train_size=30,
             encoder_test_size=300, mlp_hidden=32, encoder_steps=1500,
             joint_steps=2000)


@pytest.fixture(scope='module')
def records(tmp_path_factory):
  """The strict run's records by kind: {'final': [...], 'curve': [...]}."""
  out = str(tmp_path_factory.mktemp('amortization_gap'))
  by_kind = {'final': [], 'curve': []}
  for r in runner.run_point('amortization_gap',
                            amortization_gap.Config(**_TINY), 0, out,
                            strict=True):
    by_kind[r['kind']].append(r)
  assert 'amortization_gap.png' in os.listdir(out)
  return by_kind


def _rows(records, kind, encoder):
  return [r for r in records[kind] if r['encoder'] == encoder]


def test_gaps_match_the_closed_form_and_the_model_is_not_factorized(records):
  final = records['final']
  assert len(final) == 6 and not any(r['disagrees'] for r in final)
  for r in final:
    assert abs(r['approximation_gap'] -
               r['approximation_gap_closed_form']) < 1e-9
  fixed = [r for r in final if r['encoder'] != amortization_gap.JOINT]
  assert min(r['approximation_gap'] for r in fixed) > 0.05


def test_training_closes_the_gap_and_the_mlp_overfits(records):
  linear = _rows(records, 'curve', 'linear')
  assert (linear[-1]['amortization_gap_train'] <
          0.1 * linear[0]['amortization_gap_train'])
  mlp = {r['split']: r for r in _rows(records, 'final', 'mlp')}
  assert (mlp['held-out']['amortization_gap'] >
          2 * mlp['train']['amortization_gap'])


def test_a_model_learned_by_the_elbo_adapts_to_the_factorized_q(records):
  joint = _rows(records, 'final', amortization_gap.JOINT)[0]
  fixed = _rows(records, 'final', 'linear')[0]
  assert joint['approximation_gap'] < 0.5 * fixed['approximation_gap']


def test_a_wrong_closed_form_fails_the_strict_run(records, tmp_path,
                                                 monkeypatch):
  del records  # Run first: the same settings reuse its compiled programs.
  exact = am.approximation_gap
  monkeypatch.setattr(am, 'approximation_gap', lambda m: exact(m) + 1e-6)
  with pytest.raises(runner.Disagreement, match='6 of 30 rows'):
    runner.run_point('amortization_gap', amortization_gap.Config(**_TINY), 0,
                     str(tmp_path), strict=True)


def test_bad_settings_are_refused_in_one_line():
  bad = {'encoder_steps: must be >= 0': dict(encoder_steps=-5),
         'exceeds model_data_dim': dict(model_latent_dim=12),
         'is not one of': dict(encoders=('conv',)),
         'model_noise: must be >= 0.001': dict(model_noise=0.0)}
  for message, values in bad.items():
    with pytest.raises(ValueError, match=message) as error:
      amortization_gap.Config(**values)
    assert '\n' not in str(error.value), message
