"""Tests for vae.config and the flags generated from configs."""

import dataclasses

from absl import flags
import pytest

from experiments.common import flags as config_flags
from vae import config as cfg


@cfg.settings
class Inner:
  rate: float = cfg.setting(0.5, 'A rate.', gt=0.0, lt=1.0)
  sizes: tuple[int, ...] = cfg.setting((2, 3), 'Sizes.', min=1)


@cfg.settings
class Outer:
  inner: Inner = Inner(rate=0.25)
  name: str = cfg.setting('a', 'A name.', choices=('a', 'b'))
  count: int | None = cfg.setting(None, 'A count.', min=1, max=10)
  verbose: bool = cfg.setting(False, 'Verbose.')

  def check(self):
    if self.count is not None and self.count > sum(self.inner.sizes):
      raise ValueError(f'count: must be <= sum(sizes) = '
                       f'{sum(self.inner.sizes)}, got {self.count}.')


def test_defaults_nest_and_are_frozen():
  config = Outer()
  assert config.inner.rate == 0.25  # The nested field's default instance.
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.name = 'b'
  assert hash(config) == hash(Outer())


@pytest.mark.parametrize('kwargs, message', [
    (dict(name='c'), "name: 'c' is not one of: a, b."),
    (dict(count=0), 'count: must be >= 1, got 0.'),
    (dict(count=11), 'count: must be <= 10, got 11.'),
    (dict(count=2.5), 'count: 2.5 is not an integer.'),
    (dict(count=6), 'count: must be <= sum(sizes) = 5, got 6.'),
    (dict(verbose=1), 'verbose: 1 is not true or false.'),
])
def test_each_violation_is_one_line_naming_the_setting(kwargs, message):
  with pytest.raises(ValueError) as info:
    Outer(**kwargs)
  assert str(info.value) == message


@pytest.mark.parametrize('kwargs, message', [
    (dict(rate=1.0), 'rate: must be < 1, got 1.'),
    (dict(rate=float('nan')), 'rate: nan is not finite.'),
    (dict(sizes=()), 'sizes: expected a non-empty list'),
    (dict(sizes=(1, 0)), 'sizes: must be >= 1, got 0.'),
])
def test_bounds_finiteness_and_lists(kwargs, message):
  with pytest.raises(ValueError, match='^' + message.replace('(', r'\(')
                     .replace(')', r'\)')):
    Inner(**kwargs)


def test_a_setting_without_a_constraint_is_refused_at_declaration():
  with pytest.raises(TypeError, match='declares no constraint'):
    cfg.setting(3, 'Unconstrained.')


def test_dict_round_trip_and_unknown_keys():
  config = Outer(count=3, inner=Inner(sizes=(4,)))
  values = cfg.to_dict(config)
  assert values == {'inner.rate': 0.5, 'inner.sizes': [4], 'name': 'a',
                    'count': 3, 'verbose': False}
  assert cfg.from_dict(Outer, values) == config
  with pytest.raises(ValueError, match='unknown settings: nope'):
    cfg.from_dict(Outer, {**values, 'nope': 1})


def _parse(argv):
  fv = flags.FlagValues()
  config_flags.define_flags(Outer, fv, 'test')
  fv(['prog'] + argv)
  return config_flags.config_from_flags(Outer, fv)


def test_flags_are_generated_from_the_config():
  assert _parse([]) == Outer()
  config = _parse(['--rate=0.75', '--sizes=5,6', '--name=b', '--count=4',
                   '--verbose'])
  assert config == Outer(Inner(0.75, (5, 6)), 'b', 4, True)


def test_help_lists_choices_and_constraints():
  fv = flags.FlagValues()
  config_flags.define_flags(Outer, fv, 'test')
  text = fv.module_help('test')
  assert '<a|b>' in text and '[> 0 and < 1]' in text and '[>= 1]' in text


def test_bad_flag_values_are_one_line_errors():
  with pytest.raises(flags.Error):
    _parse(['--name=c'])  # absl's enum check.
  with pytest.raises(ValueError, match="^sizes: 'x' is not an integer.$"):
    _parse(['--sizes=1,x'])
  with pytest.raises(ValueError, match=r'^count: must be <= sum\(sizes\)'):
    _parse(['--count=9'])


def test_required_settings_build_from_defaults_and_are_listed_missing():
  @cfg.settings
  class Needs:
    path: str | None = cfg.setting(None, 'A path.', text=True, required=True)
  assert cfg.missing(Needs()) == ['path']
  assert cfg.missing(Needs(path='x')) == []
  with pytest.raises(TypeError, match='defaults to None'):
    cfg.setting('x', 'A path.', text=True, required=True)


def test_empty_lists_only_where_declared():
  @cfg.settings
  class Layers:
    hidden: tuple[int, ...] = cfg.setting((), 'Sizes.', min=1, empty=True)
  assert Layers().hidden == ()
  fv = flags.FlagValues()
  config_flags.define_flags(Layers, fv, 'test')
  fv(['prog', '--hidden=3,4'])
  assert config_flags.config_from_flags(Layers, fv).hidden == (3, 4)
  fv(['prog', '--hidden='])
  assert config_flags.config_from_flags(Layers, fv).hidden == ()


def test_two_settings_with_one_name_are_refused():
  @cfg.settings
  class Clash:
    a: Inner = Inner()
    b: Inner = Inner()
  with pytest.raises(TypeError, match="two settings are named 'rate'"):
    config_flags.flag_paths(Clash)


def test_like_reuses_a_declaration_and_only_narrows_it():
  @cfg.settings
  class Reuser:
    name: str = cfg.like(Outer, 'name', 'b', choices=('b',))
    count: int | None = cfg.like(Outer, 'count', 3, max=5)

  (name, _, f_name), (_, _, f_count) = list(cfg.leaves(Reuser))
  assert name == 'name' and cfg.spec(f_name).help == 'A name.'
  assert cfg.declaration(Reuser, f_name) == f'{__name__}.Outer.name'
  assert Reuser().name == 'b' and cfg.spec(f_count).min == 1
  with pytest.raises(ValueError, match='name: .* not one of: b'):
    Reuser(name='a')
  with pytest.raises(ValueError, match='count: must be <= 5'):
    Reuser(count=6)
  with pytest.raises(TypeError, match='not a subset'):
    cfg.like(Outer, 'name', choices=('c',))
  with pytest.raises(TypeError, match='max 11 > 10'):
    cfg.like(Outer, 'count', max=11)


def test_no_setting_is_declared_in_two_places():
  """Across every experiment, one flag name has one declaration."""
  import importlib  # pylint: disable=import-outside-toplevel
  from experiments.common import runner  # pylint: disable=import-outside-toplevel
  where = {}
  for name in runner.names():
    config = importlib.import_module(f'experiments.{name}').Config
    for _, owner, field in cfg.leaves(config):
      where.setdefault(field.name, set()).add(cfg.declaration(owner, field))
  twice = {k: sorted(v) for k, v in where.items() if len(v) > 1}
  assert not twice, twice
