"""Settings declared once: dataclass fields carrying help and constraint.

    @config.settings
    class TrainConfig:
      batch_size: int = config.setting(100, 'Examples per step.', min=1)
      optimizer: str = config.setting('adam', 'Optimizer.', choices=OPTIMIZERS)

      def check(self):            # optional: relations between fields
        ...

`@settings` makes the class a frozen (hashable, jit-static) dataclass whose
constructor checks each field against its declared constraint, then calls
`check()`; a violation raises `ValueError` with one line naming the setting.
A config may nest other configs (`data: DataConfig = DataConfig()`); the
experiment layer turns every leaf field into one command-line flag of the
same name (`launch.py`), so a setting's name, type, default, help and allowed
values live in exactly one place.

Constraints (every setting has one): `choices` (the library constant listing
the allowed values), numeric bounds `min`/`max` (inclusive) and `gt`/`lt`
(strict; floats must also be finite), `text=True` for free text such as
paths. A tuple-valued setting must be non-empty (unless declared with
`empty=True`), and the constraint applies to each element. A tuple-valued
setting is a set of alternatives (each entry gives its own rows), so an
entry listed twice is refused, for every setting alike; a sequence whose
entries may repeat (layer widths) is declared with `repeats=True`. An
integer must also fit in int32 (|v| <= INT_MAX; JAX counts in int32), so a
setting declared without `max` still cannot overflow a computation. A
`None` default makes the setting optional.

A setting that another config also needs is not declared again:
`like(TrainConfig, 'batch_size', 32)` reuses TrainConfig's declaration (help
and constraint) with another default, and may only narrow the constraint.
"""

import dataclasses
import math
import types as pytypes
import typing
from typing import Any, Iterator, Sequence

_META = 'vae.setting'
_TYPES = (bool, int, float, str)
TYPE_WORDS = {bool: 'true or false', int: 'an integer', float: 'a number',
              str: 'text'}
# The largest integer a setting may hold (int32: JAX's default integer).
INT_MAX = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class Spec:
  """The declaration of one setting (the field's metadata).

  Attributes:
    help: one-line help text.
    choices: allowed values (for str settings or str tuples).
    min: inclusive lower bound.
    max: inclusive upper bound.
    gt: strict lower bound.
    lt: strict upper bound.
    text: free text (paths, names): no constraint beyond the type.
    required: the command line must give a value (the default, None, lets
      the class build from defaults; see `missing`).
    empty: a tuple-valued setting may be empty.
    repeats: a tuple-valued setting is a sequence whose entries may repeat
      (e.g. layer widths); otherwise an entry listed twice is refused.
    origin: 'module.Class.field' of the declaration this one reuses (`like`).
  """
  help: str
  choices: tuple[str, ...] | None = None
  min: float | None = None
  max: float | None = None
  gt: float | None = None
  lt: float | None = None
  text: bool = False
  required: bool = False
  empty: bool = False
  repeats: bool = False
  origin: str | None = None

  def describe(self) -> str:
    """The constraint in words, e.g. 'one of: a, b' or '>= 1'."""
    if self.choices is not None:
      return 'one of: ' + ', '.join(self.choices)
    parts = [f'{op} {_num(v)}' for op, v in (('>=', self.min), ('<=', self.max),
                                             ('>', self.gt), ('<', self.lt))
             if v is not None]
    return ' and '.join(parts) if parts else ('text' if self.text else 'any')


def _num(v: float | None) -> str:
  return f'{v:g}' if isinstance(v, float) else str(v)


def setting(default: Any, help: str, *, choices: Sequence[str] | None = None,
            min: float | None = None, max: float | None = None,
            gt: float | None = None, lt: float | None = None,
            text: bool = False, required: bool = False,
            empty: bool = False,
            repeats: bool = False) -> Any:  # pylint: disable=redefined-builtin
  """A dataclass field declaring one setting (see the module docstring).

  Args:
    default: the default value (a tuple for list-valued settings).
    help: one-line help text.
    choices: allowed values, e.g. a library constant.
    min: inclusive lower bound.
    max: inclusive upper bound.
    gt: strict lower bound.
    lt: strict upper bound.
    text: free text (no constraint beyond the type).
    required: a value must be given (default None; see `missing`).
    empty: a tuple-valued setting may be the empty tuple.
    repeats: a tuple-valued setting's entries may repeat (a sequence such
      as layer widths, not a set of alternatives).

  Returns:
    A `dataclasses.field`.
  """
  spec = Spec(help, tuple(choices) if choices is not None else None, min, max,
              gt, lt, text, required, empty, repeats)
  if required and default is not None:
    raise TypeError(f'setting {help!r}: a required setting defaults to None.')
  if spec.choices is None and not text and all(
      v is None for v in (min, max, gt, lt)) and not isinstance(default, bool):
    raise TypeError(f'setting {help!r} declares no constraint.')
  return dataclasses.field(default=default, metadata={_META: spec})


def like(cls: type, name: str, default: Any = dataclasses.MISSING, *,
         choices: Sequence[str] | None = None, min: float | None = None,
         max: float | None = None) -> Any:  # pylint: disable=redefined-builtin
  """A field reusing the declaration of setting `name` of config `cls`.

  Args:
    cls: the `settings` class that declares the setting.
    name: its field name.
    default: this field's default (default: the declared one).
    choices: a subset of the declared choices.
    min: a bound no looser than the declared lower bound.
    max: a bound no looser than the declared upper bound.

  Returns:
    A `dataclasses.field` whose `Spec` has `origin` 'module.Class.name'.
  """
  field = {f.name: f for f in dataclasses.fields(cls)}[name]
  base = spec(field)
  narrowed: dict[str, Any] = {}
  if choices is not None:
    if base.choices is None or not set(choices) <= set(base.choices):
      raise TypeError(f'like({cls.__name__}.{name}): {choices} is not a '
                      'subset of the declared choices.')
    narrowed['choices'] = tuple(choices)
  if min is not None:
    if base.min is not None and min < base.min:
      raise TypeError(f'like({cls.__name__}.{name}): min {min} < {base.min}.')
    narrowed['min'] = min
  if max is not None:
    if base.max is not None and max > base.max:
      raise TypeError(f'like({cls.__name__}.{name}): max {max} > {base.max}.')
    narrowed['max'] = max
  origin = base.origin or f'{cls.__module__}.{cls.__qualname__}.{name}'
  return dataclasses.field(
      default=field.default if default is dataclasses.MISSING else default,
      metadata={_META: dataclasses.replace(base, origin=origin, **narrowed)})


def declaration(owner: type, field: dataclasses.Field) -> str:
  """'module.Class.field' where the setting of `field` is declared."""
  return spec(field).origin or (
      f'{owner.__module__}.{owner.__qualname__}.{field.name}')


@typing.dataclass_transform(frozen_default=True)
def settings(cls):
  """Class decorator: a frozen dataclass whose constructor validates fields."""
  user_check = cls.__dict__.get('check')

  def __post_init__(self):  # pylint: disable=invalid-name
    for field in dataclasses.fields(self):
      if _META in field.metadata:
        _validate(field, getattr(self, field.name), type(self))
    if user_check is not None:
      user_check(self)

  cls.__post_init__ = __post_init__
  return dataclasses.dataclass(frozen=True)(cls)


def spec(field: dataclasses.Field) -> Spec:
  """The `Spec` of a setting field."""
  return field.metadata[_META]


def value_type(cls: type, field: dataclasses.Field) -> tuple[type, bool, bool]:
  """(element type, is a tuple, may be None) of a setting field of `cls`."""
  hint = typing.get_type_hints(cls)[field.name]
  args = typing.get_args(hint)
  optional = False
  if typing.get_origin(hint) in (typing.Union, pytypes.UnionType):
    optional = type(None) in args
    (hint,) = [a for a in args if a is not type(None)]
    args = typing.get_args(hint)
  if typing.get_origin(hint) is tuple:
    return args[0], True, optional
  if hint not in _TYPES:
    raise TypeError(f'{cls.__name__}.{field.name}: unsupported type {hint}.')
  return hint, False, optional


def _validate(field: dataclasses.Field, value: Any, cls: type) -> None:
  s = spec(field)
  elem_type, is_tuple, optional = value_type(cls, field)
  name = field.name
  if value is None:
    if optional:
      return
    raise ValueError(f'{name}: a value is required.')
  values = value if is_tuple else (value,)
  if is_tuple and (not isinstance(value, tuple) or not (value or s.empty)):
    raise ValueError(f'{name}: expected a non-empty list, got {value!r}.')
  if is_tuple and not s.repeats:
    for i, v in enumerate(values):
      if v in values[:i]:
        raise ValueError(f'{name}: {v!r} is listed twice; list each value '
                         'once.')
  for v in values:
    ok = isinstance(v, elem_type) and not (elem_type is not bool and
                                            isinstance(v, bool))
    if elem_type is float and isinstance(v, int) and not isinstance(v, bool):
      ok = True
    if not ok:
      raise ValueError(f'{name}: {v!r} is not {TYPE_WORDS[elem_type]}.')
    if s.choices is not None and v not in s.choices:
      raise ValueError(f'{name}: {v!r} is not one of: {", ".join(s.choices)}.')
    if isinstance(v, float) and not math.isfinite(v):
      raise ValueError(f'{name}: {v!r} is not finite.')
    if isinstance(v, (int, float)) and not isinstance(v, bool):
      for bad, text in ((s.min is not None and v < s.min, f'>= {_num(s.min)}'),
                        (s.max is not None and v > s.max, f'<= {_num(s.max)}'),
                        (s.gt is not None and v <= s.gt, f'> {_num(s.gt)}'),
                        (s.lt is not None and v >= s.lt, f'< {_num(s.lt)}')):
        if bad:
          raise ValueError(f'{name}: must be {text}, got {_num(v)}.')
      if isinstance(v, int) and abs(v) > INT_MAX:
        raise ValueError(f'{name}: must be at most {INT_MAX} in magnitude '
                         f'(int32), got {v}.')


def leaves(cls: type, prefix: str = '') -> Iterator[tuple[str, type,
                                                          dataclasses.Field]]:
  """(dotted path, owner class, field) of every setting, nested ones too."""
  for field in dataclasses.fields(cls):
    if _META in field.metadata:
      yield prefix + field.name, cls, field
    elif dataclasses.is_dataclass(field.type) or dataclasses.is_dataclass(
        typing.get_type_hints(cls)[field.name]):
      sub = typing.get_type_hints(cls)[field.name]
      yield from leaves(sub, f'{prefix}{field.name}.')
    else:
      raise TypeError(f'{cls.__name__}.{field.name} is neither a setting nor '
                      'a nested config.')


def build(cls: type, values: dict[str, Any], prefix: str = '') -> Any:
  """An instance of `cls` from {dotted path: value}; others keep defaults.

  Nested configs are built bottom-up, so the first invalid value raises.
  """
  kwargs = {}
  for field in dataclasses.fields(cls):
    path = prefix + field.name
    if _META in field.metadata:
      if path in values:
        kwargs[field.name] = values[path]
    else:
      sub = typing.get_type_hints(cls)[field.name]
      nested = {k: v for k, v in values.items() if k.startswith(path + '.')}
      if nested:  # From this field's default, which may differ from sub's.
        kwargs[field.name] = build(
            sub, {**_flatten(field.default, path + '.'), **nested}, path + '.')
  return cls(**kwargs)


def _flatten(config: Any, prefix: str = '') -> dict[str, Any]:
  out = {}
  for path, _, _ in leaves(type(config)):
    obj = config
    for part in path.split('.'):
      obj = getattr(obj, part)
    out[prefix + path] = obj
  return out


def missing(config: Any) -> list[str]:
  """The required settings (`setting(required=True)`) still at None."""
  values = _flatten(config)
  return [path.split('.')[-1] for path, _, field in leaves(type(config))
          if spec(field).required and values[path] is None]


def to_dict(config: Any) -> dict[str, Any]:
  """{dotted path: value} of every setting (tuples as lists: JSON-ready)."""
  return {k: list(v) if isinstance(v, tuple) else v
          for k, v in _flatten(config).items()}


def from_dict(cls: type, values: dict[str, Any]) -> Any:
  """Inverse of `to_dict` (lists become tuples); unknown keys are an error."""
  known = {path: (owner, field) for path, owner, field in leaves(cls)}
  unknown = sorted(set(values) - set(known))
  if unknown:
    raise ValueError(f'unknown settings: {", ".join(unknown)}.')
  return build(cls, {k: tuple(v) if isinstance(v, list) else v
                     for k, v in values.items()})
