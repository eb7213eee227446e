"""Issue 22, items 4, 5, 6 (part) and 9: values and arguments that passed.

Each probe command of the issue gives one line on stderr and its documented
exit code: 2 for a refused input (nothing written), 1 for a run whose
checked rows hold NaN or infinite values (results written, then one line
naming the rows and fields).
"""

import json
import os

import jax
import numpy as np
import pytest

from experiments.common import launch
from experiments.common import runner
from vae import config as cfg
from vae import optim
from vae import stats
from vae.problems import amortization as am
from vae.problems import linear_gaussian as lg

NONFINITE = '--experiment=tests.nonfinite_experiment'


def _cli(capsys, tmp_path, *args):
  """(exit code, stdout, stderr) of launch.py into tmp_path/'run'."""
  rc = launch.cli(['launch.py', '--nocompilation_cache',
                   f'--output_dir={tmp_path / "run"}', *args])
  out, err = capsys.readouterr()
  return rc, out, err


def _refused(capsys, tmp_path, *args):
  """The one stderr line of a refusal (exit 2, nothing written)."""
  rc, _, err = _cli(capsys, tmp_path, *args)
  assert rc == 2, err
  assert err.count('\n') == 1 and err.startswith('launch.py: '), err
  assert 'Traceback' not in err, err
  assert os.listdir(tmp_path) == [], os.listdir(tmp_path)
  return err


# Item 5: arguments dropped silently.
@pytest.mark.parametrize('args, named', [
    (['--experiment=gaussian_gradients', '--', '--mus=nan'], "'--mus=nan'"),
    (['--experiment=gaussian_gradients', '--strict', 'false'], "'false'"),
    (['--experiment=gaussian_gradients', 'stray'], "'stray'"),
    (['--experiment=gaussian_gradients', '--sweep=seed=0,1', 'stray'],
     "'stray'"),
])
def test_positional_arguments_are_refused(capsys, tmp_path, args, named):
  err = _refused(capsys, tmp_path, *args)
  assert 'unexpected argument' in err and named in err, err


# Item 6 (its parts here): tracebacks that are now one line.
@pytest.mark.parametrize('args, named', [
    (['--experiment=train_vae', '--seed=2147483648'], '--seed'),
    (['--experiment=gaussian_gradients', '--seed=4294967296'], '--seed'),
    (['--experiment=gaussian_gradients', '--seed=-1'], '--seed'),
    (['--experiment=gaussian_gradients', '--sweep=seed=0,4294967296'],
     '--seed'),
    (['--experiment=train_vae', '--lr_decay_steps=' + '9' * 25],
     'lr_decay_steps'),
    (['--experiment=..'], '--experiment=..'),
    (['--experiment=.foo'], '--experiment=.foo'),
    (['--experiment=a..b'], '--experiment=a..b'),
    (['--experiment=no_such_module.x'], 'no_such_module'),
])
def test_out_of_range_and_malformed_inputs_are_one_line(capsys, tmp_path,
                                                        args, named):
  assert named in _refused(capsys, tmp_path, *args)


def test_the_largest_seed_is_accepted(capsys, tmp_path):
  rc, out, err = _cli(capsys, tmp_path, '--experiment=gaussian_gradients',
                      f'--seed={cfg.INT_MAX}', '--dry_run')
  assert rc == 0 and 'gaussian_gradients' in out, err


def test_slurm_where_there_is_none_is_one_line(capsys, tmp_path, monkeypatch):
  monkeypatch.setattr(launch.shutil, 'which', lambda name: None)
  err = _refused(capsys, tmp_path, '--experiment=gaussian_gradients',
                 '--launcher=slurm', '--sweep=seed=0,1')
  assert '--launcher=slurm' in err and 'sbatch' in err, err


def test_integers_beyond_int32_are_refused_by_every_setting():
  for value in (cfg.INT_MAX + 1, -cfg.INT_MAX - 1):
    with pytest.raises(ValueError, match='lr_decay_steps: must be'):
      cfg.build(optim.OptimizerConfig, {'lr_decay_steps': value})


# Item 9: one rule for duplicate list entries: refused, for every setting.
def _list_settings():
  for name in runner.names():
    module = runner.load(name)
    for path, owner, field in cfg.leaves(module.Config):
      _, is_tuple, _ = cfg.value_type(owner, field)
      if is_tuple:
        yield name, module.Config, path, field


def test_every_list_setting_refuses_an_entry_listed_twice():
  checked = set()
  for name, config_cls, path, field in _list_settings():
    default = cfg.to_dict(config_cls())[path]
    if cfg.spec(field).repeats:  # Sequences (layer widths) may repeat.
      if default:
        cfg.build(config_cls, {path: tuple(default + default[:1])})
      continue
    doubled = tuple(default + default[:1])
    with pytest.raises(ValueError, match='is listed twice') as error:
      cfg.build(config_cls, {path: doubled})
    assert str(error.value).startswith(f'{field.name}: '), (name, error)
    assert '\n' not in str(error.value)
    checked.add(field.name)
  assert {'sample_counts', 'dims', 'iwae_ks', 'proposals', 'estimators',
          'costs', 'eval_iwae_ks', 'latent_dims'} <= checked


@pytest.mark.parametrize('experiment, arg', [
    ('gaussian_gradients', '--sample_counts=1,1'),
    ('gaussian_gradients', '--estimators=score,score'),
    ('gaussian_gradients', '--costs=square,square'),
    ('gaussian_gradients', '--square_ks=1,1.0'),
    ('mixture_of_gaussians', '--dims=1,1'),
    ('linear_gaussian', '--iwae_ks=1,1'),
    ('intractability', '--proposals=prior,prior'),
])
def test_duplicate_entries_on_the_command_line(capsys, tmp_path, experiment,
                                               arg):
  err = _refused(capsys, tmp_path, f'--experiment={experiment}', arg)
  assert arg.split('=')[0][2:] + ':' in err and 'listed twice' in err, err


def test_layer_widths_may_repeat(capsys, tmp_path):
  rc, out, err = _cli(capsys, tmp_path, '--experiment=train_vae',
                      '--hidden_sizes=5,5', '--dry_run')
  assert rc == 0 and 'hidden_sizes=(5, 5)' in out, err


# Item 4: NaN results pass as success.
def test_a_non_finite_value_in_a_checked_row_disagrees():
  rows = stats.mark_disagreements([
      {'a': float('nan'), 'disagrees': False},
      {'a': np.float32('inf'), 'b': 1.0, stats.CHECKS: [(0.1, 'two-sided')]},
      {'a': np.array([1.0, np.nan]), 'disagrees': False},
      {'a': 1.0, 'b': None, 'disagrees': False},
      {'length': float('inf')}])  # No checks: may be infinite.
  assert [r.get('disagrees') for r in rows] == [True, True, True, False, None]
  assert [r.get(stats.NONFINITE) for r in rows] == ['a', 'a', 'a', None, None]
  assert stats.mark_disagreements(rows) == rows  # Idempotent.


def test_amortization_tolerance_checks_count_nan_as_disagreement(
    monkeypatch):
  model, (x,), _, _ = lg.draw_problem(jax.random.PRNGKey(0), 4, 2, 0.5,
                                      (20,))
  params = am.init_encoder(jax.random.PRNGKey(1), 'linear', 4, 2, 8)
  nan_params = jax.tree_util.tree_map(lambda a: a * np.nan, params)
  (good,) = am.checked_gaps(model, (x,), params)
  (bad,) = am.checked_gaps(model, (x,), nan_params)
  assert np.isnan(bad['amortization_gap']) and bad['disagrees'] is True
  assert good['disagrees'] is False
  assert am.best_diagonal_check(model, x)['disagrees'] is False
  monkeypatch.setattr(am, 'approximation_gap', lambda model: np.nan)
  assert am.best_diagonal_check(model, x)['disagrees'] is True


def test_nan_rows_fail_the_run_in_one_line(capsys, tmp_path):
  rc, out, err = _cli(capsys, tmp_path, NONFINITE, '--nan_checked=7',
                      '--inf_z', '--nan_unchecked')
  assert rc == 1, err
  assert err.count('\n') == 1 and 'Traceback' not in err, err
  assert ('8 of 12 rows hold NaN or infinite values' in err and
          'row 0 (measured)' in err and '; ...' in err), err
  assert '8 of 11 rows disagree' in out
  with open(tmp_path / 'run' / 'results.json') as f:
    rows = json.load(f)  # Written, NaN as null, the rows marked.
  assert rows[0]['measured'] is None and rows[0]['disagrees'] is True
  assert rows[0][stats.NONFINITE] == 'measured'
  assert stats.NONFINITE not in rows[11]  # Unchecked: not a failure.


@pytest.mark.parametrize('strict', [[], ['--strict']])
def test_finite_rows_and_unchecked_nan_pass(capsys, tmp_path, strict):
  rc, out, err = _cli(capsys, tmp_path, NONFINITE, '--nan_unchecked',
                      *strict)
  assert rc == 0 and err == '', err
  assert '0 of 10 rows disagree' in out


def test_amortization_gap_diverged_encoder_exits_1(capsys, tmp_path):
  """The issue's probe: 21 nulls, '0 of 26 rows disagree', exit 0."""
  rc, _, err = _cli(capsys, tmp_path, '--experiment=amortization_gap',
                    '--encoder_learning_rate=10')
  assert rc == 1, err
  assert err.count('\n') == 1 and 'Traceback' not in err, err
  assert 'rows hold NaN or infinite values' in err, err
  assert 'amortization_gap.png' in os.listdir(tmp_path / 'run')


def test_amortization_gap_meaningless_noise_is_refused(capsys, tmp_path):
  err = _refused(capsys, tmp_path, '--experiment=amortization_gap',
                 '--model_noise=1e-30')
  assert 'model_noise: must be >= 0.001' in err, err
