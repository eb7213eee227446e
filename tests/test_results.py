"""Tests for `vae.results` and `vae.cli`."""

import csv
import datetime
import enum
import io
import json
import math
import os
import pathlib

from absl import flags
import numpy as np
import pytest

from vae import cli
from vae import results


def _strict_json(text: str):
  """json.loads that rejects NaN/Infinity (i.e. only valid JSON)."""

  def reject(name):
    raise ValueError(f'invalid JSON constant {name}')

  return json.loads(text, parse_constant=reject)


class _Color(enum.Enum):
  RED = 1


def test_to_jsonable_converts_numpy_and_non_finite():
  value = {
      'f32': np.float32(1.5), 'i64': np.int64(7), 'b': np.bool_(True),
      'nan': float('nan'), 'inf': np.float64('inf'), 'ninf': -math.inf,
      'arr': np.array([[1, 2], [3, 4]], dtype=np.int32),
      'farr': np.array([0.5, np.nan]), 'tuple': (1, 'a'), 'enum': _Color.RED,
      'path': pathlib.Path('/x/y'), 'none': None, 1: 'int key',
  }
  out = results.to_jsonable(value)
  assert out == {
      'f32': 1.5, 'i64': 7, 'b': True, 'nan': None, 'inf': None,
      'ninf': None, 'arr': [[1, 2], [3, 4]], 'farr': [0.5, None],
      'tuple': [1, 'a'], 'enum': 'RED', 'path': '/x/y', 'none': None,
      '1': 'int key',
  }
  assert type(out['i64']) is int  # pylint: disable=unidiomatic-typecheck
  assert type(out['f32']) is float  # pylint: disable=unidiomatic-typecheck
  assert type(out['b']) is bool  # pylint: disable=unidiomatic-typecheck


def test_to_jsonable_converts_jax_values():
  jnp = pytest.importorskip('jax.numpy')
  out = results.to_jsonable({'s': jnp.float32(2.5), 'a': jnp.arange(3),
                             'n': jnp.array(jnp.nan)})
  assert out == {'s': 2.5, 'a': [0, 1, 2], 'n': None}


def test_write_results_json_and_csv(tmp_path):
  records = [
      {'estimator': 'score', 'n': np.int64(1), 'var': np.float32(0.25)},
      {'estimator': 'pathwise', 'n': 10, 'var': float('nan'),
       'extra': [1, 2], 'ok': True},
  ]
  paths = results.write_results(tmp_path / 'out', records)
  assert set(paths) == {'json', 'csv'}
  text = (tmp_path / 'out' / 'results.json').read_text()
  assert _strict_json(text) == [
      {'estimator': 'score', 'n': 1, 'var': 0.25},
      {'estimator': 'pathwise', 'n': 10, 'var': None, 'extra': [1, 2],
       'ok': True},
  ]
  rows = list(csv.reader(io.StringIO(
      (tmp_path / 'out' / 'results.csv').read_text())))
  assert rows == [
      ['estimator', 'n', 'var', 'extra', 'ok'],
      ['score', '1', '0.25', '', ''],
      ['pathwise', '10', '', '[1,2]', 'true'],
  ]
  assert results.read_results(tmp_path / 'out') == _strict_json(text)


def test_write_results_is_byte_identical(tmp_path):
  def records():
    rng = np.random.default_rng(0)
    return [{'i': i, 'x': rng.normal(), 'y': np.float32(rng.normal()),
             'z': float('inf')} for i in range(5)]

  results.write_results(tmp_path / 'a', records())
  results.write_results(tmp_path / 'b', records())
  for name in ('results.json', 'results.csv'):
    assert ((tmp_path / 'a' / name).read_bytes() ==
            (tmp_path / 'b' / name).read_bytes())


def test_write_results_with_config_and_bad_input(tmp_path):
  paths = results.write_results(tmp_path, [], config={'lr': 0.1, 'x': np.nan})
  assert _strict_json((tmp_path / 'config.json').read_text()) == {
      'lr': 0.1, 'x': None}
  assert paths['config'].endswith('config.json')
  assert _strict_json((tmp_path / 'results.json').read_text()) == []
  with pytest.raises(TypeError, match='list of records'):
    results.write_results(tmp_path, {'a': 1})
  with pytest.raises(TypeError, match='keys must be strings'):
    results.write_results(tmp_path, [{1: 2}])


def test_write_config(tmp_path):
  jax = pytest.importorskip('jax')
  fv = flags.FlagValues()
  flags.DEFINE_integer('num_samples', 10, 'Samples.', flag_values=fv)
  flags.DEFINE_enum('estimator', 'score', ['score', 'pathwise'], 'Est.',
                    flag_values=fv)
  flags.DEFINE_integer('verbosity_like', 0, 'An absl-internal flag.',
                       flag_values=fv, module_name='absl.logging')
  flags.DEFINE_bool('library_flag', False, 'Defined by an installed library.',
                    flag_values=fv, module_name=np.__name__)
  flags.DEFINE_string('script_flag', 'x', 'Defined by the main script.',
                      flag_values=fv, module_name='/src/experiments/exp.py')
  cli.define_common_flags(fv)
  cli.define_common_flags(fv)  # Idempotent.
  fv(['prog', '--num_samples=5', '--seed=3',
      f'--output_dir={tmp_path / "run"}'])
  out = cli.output_dir('exp', flag_values=fv)
  assert out == str(tmp_path / 'run') and os.path.isdir(out)
  path = results.write_config(out, fv, cli.seed(fv), extra={'note': 'hi'})
  config = _strict_json(pathlib.Path(path).read_text())
  assert config['flags'] == {'estimator': 'score', 'num_samples': 5,
                             'output_dir': out, 'script_flag': 'x',
                             'seed': 3}
  assert config['seed'] == 3
  assert config['extra'] == {'note': 'hi'}
  assert set(config['versions']) >= {'python', 'jax', 'jaxlib', 'flax',
                                     'optax', 'chex', 'numpy'}
  assert config['versions']['jax'] == jax.__version__
  assert config['jax']['backend'] == jax.default_backend()
  assert config['jax']['device_count'] == len(jax.devices())


def test_write_config_accepts_a_mapping(tmp_path):
  results.write_config(tmp_path, {'b': 2, 'a': np.float32(0.5)}, seed=1)
  config = _strict_json((tmp_path / 'config.json').read_text())
  assert list(config['flags']) == ['a', 'b']
  assert config['flags'] == {'a': 0.5, 'b': 2}


def test_cli_output_dir_default_is_fresh(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  fv = flags.FlagValues()
  cli.define_common_flags(fv)
  fv(['prog'])
  assert fv.seed == 0 and fv.output_dir is None
  out = cli.output_dir('exp', flag_values=fv)
  assert os.path.isdir(out)
  assert os.path.dirname(out) == str(tmp_path / 'runs')
  assert os.path.basename(out).startswith('exp-')
  assert fv.output_dir == out  # Stored back: the same folder next time.
  assert cli.output_dir('exp', flag_values=fv) == out
  now = datetime.datetime(2024, 1, 2, 3, 4, 5)
  first = cli.fresh_output_dir('e', tmp_path / 'r', now=now)
  second = cli.fresh_output_dir('e', tmp_path / 'r', now=now)
  assert os.path.basename(first) == 'e-20240102-030405'
  assert os.path.basename(second) == 'e-20240102-030405-1'


def test_cli_output_dir_needs_common_flags():
  with pytest.raises(ValueError, match='define_common_flags'):
    cli.output_dir('x', flag_values=flags.FlagValues())


def test_format_table():
  records = [{'name': 'score', 'n': 1, 'var': 0.123456},
             {'name': 'pathwise', 'n': 100, 'var': float('nan'), 'x': None}]
  table = results.format_table(records, float_fmt='.3f')
  lines = table.split('\n')
  assert lines[0].split() == ['name', 'n', 'var', 'x']
  assert set(lines[1]) <= {'-', ' '}
  assert lines[2].split() == ['score', '1', '0.123', '-']
  assert lines[3].split() == ['pathwise', '100', 'nan', '-']
  # Numbers are right-aligned in their column.
  assert lines[2].index('1 ') == lines[3].index('100') + 2
  assert len({len(l) for l in lines[:2]}) == 1
  only = results.format_table(records, columns=['var'])
  assert only.split('\n')[2].strip() == '0.1235'
  assert results.format_table([]) == '(no results)'


def test_save_figure(tmp_path):
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  fig = figure.Figure(figsize=(2, 2))
  fig.add_subplot().plot([0, 1], [1, 0])
  path = results.save_figure(fig, tmp_path / 'plots' / 'line')
  assert path.endswith('line.png')
  assert pathlib.Path(path).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
