"""Command-line flags generated from a config class, one per setting.

Every leaf setting of an experiment's `Config` (nested configs expanded)
becomes one absl flag of the same name: its type, default, help text and
allowed values come from the declaration, so `--help` lists them and absl
parses the values. `config_from_flags` builds the config from the parsed
flags; its constructor checks every constraint (`vae.config.settings`).
"""

import typing

from absl import flags

from vae import config as cfg


def flag_paths(config_cls: type) -> dict[str, str]:
  """{flag name: dotted path of the setting}; flag names must be unique."""
  paths: dict[str, str] = {}
  for path, _, field in cfg.leaves(config_cls):
    if field.name in paths:
      raise TypeError(f'{config_cls.__name__}: two settings are named '
                      f'{field.name!r} ({paths[field.name]}, {path}).')
    paths[field.name] = path
  return paths


def _help(spec: cfg.Spec) -> str:
  return f'{spec.help} [{spec.describe()}]'


def define_flags(config_cls: type, flag_values: flags.FlagValues,
                 module_name: str, defaults: typing.Any = None) -> None:
  """Defines one flag per setting of `config_cls` in `flag_values`.

  Args:
    config_cls: a `vae.config.settings` class.
    flag_values: where to define them.
    module_name: the module the flags are listed under in help.
    defaults: an instance whose values are the flags' defaults (default: the
      class defaults).
  """
  flag_paths(config_cls)
  default_values = cfg.to_dict(defaults if defaults is not None else
                               config_cls())
  for path, owner, field in cfg.leaves(config_cls):
    spec = cfg.spec(field)
    elem, is_tuple, _ = cfg.value_type(owner, field)
    default = default_values[path]
    kwargs: dict[str, typing.Any] = dict(flag_values=flag_values,
                                         module_name=module_name)
    if is_tuple:
      flags.DEFINE_list(field.name, [str(v) for v in default], _help(spec),
                        **kwargs)
    elif elem is bool:
      flags.DEFINE_bool(field.name, default, _help(spec), **kwargs)
    elif spec.choices is not None:
      flags.DEFINE_enum(field.name, default, spec.choices, spec.help, **kwargs)
    elif elem is int:
      flags.DEFINE_integer(field.name, default, _help(spec), **kwargs)
    elif elem is float:
      flags.DEFINE_float(field.name, default, _help(spec), **kwargs)
    else:
      flags.DEFINE_string(field.name, default, _help(spec), **kwargs)


def _convert(name: str, value: str, elem: type):
  if elem is str:
    return value
  try:
    if elem is bool:
      return {'true': True, 'false': False}[value.lower()]
    return elem(value)
  except (ValueError, KeyError):
    raise ValueError(f'{name}: {value!r} is not {cfg.TYPE_WORDS[elem]}.'
                    ) from None


def config_from_flags(config_cls: type, flag_values: flags.FlagValues,
                      defaults: typing.Any = None) -> typing.Any:
  """The config whose settings are the parsed flags' values.

  Raises:
    ValueError: one line naming the first setting with a bad value.
  """
  values = cfg.to_dict(defaults if defaults is not None else config_cls())
  for path, owner, field in cfg.leaves(config_cls):
    elem, is_tuple, _ = cfg.value_type(owner, field)
    value = flag_values[field.name].value
    if is_tuple:
      assert value is not None  # define_flags gave the list flag a list.
      value = tuple(_convert(field.name, v.strip(), elem) for v in value)
    values[path] = value
  return cfg.build(config_cls, values)
