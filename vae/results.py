"""Writing experiment outputs: results, config, tables and figures.

Every experiment writes its outputs into its output directory with these
helpers so that `launch.py` can gather them:

* `write_results(output_dir, records, config)` -> `results.json` (a JSON list
  of flat records, one dict per measurement) and `results.csv` (the same
  records, one column per key).
* `write_config(output_dir, flag_values, seed)` -> `config.json` (flag values,
  seed, package versions and JAX backend).
* `format_table(records)` -> a fixed-width text table for the terminal.
* `save_figure(fig, path)` -> a PNG written with the Agg backend.

The JSON output is deterministic: the same records give a byte-identical
`results.json` (no timestamps are added; timing fields are the experiment's
own business). Non-finite floats (NaN, +-inf) become `null` so the file is
valid JSON; numpy and JAX scalars and arrays become plain Python numbers and
lists.

This module imports neither JAX nor numpy (so that scripts which do not use
them stay fast to start): numpy is only imported when a value needs it (a
value can only be a numpy scalar if numpy was imported); JAX values are
converted through `numpy.asarray`.
"""

from collections.abc import Iterable, Mapping, Sequence
import csv
import dataclasses
import enum
import io
import json
import math
import os
import pathlib
import platform
import sys
from typing import Any

RESULTS_JSON = 'results.json'
RESULTS_CSV = 'results.csv'
CONFIG_JSON = 'config.json'

# Packages whose versions are recorded in config.json.
VERSIONED_PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'chex', 'numpy')

Record = Mapping[str, Any]


def to_jsonable(value: Any) -> Any:
  """Converts `value` to plain JSON-compatible Python objects.

  Numpy/JAX scalars become `int`/`float`/`bool`, arrays become (nested)
  lists, tuples become lists, mappings become dicts with `str` keys, enums
  their name, paths their string, dataclasses dicts. NaN and +-inf become
  `None`. Other objects fall back to `str(value)`.

  Args:
    value: any value.

  Returns:
    An object made of dict, list, str, int, float (finite), bool and None.
  """
  if value is None or isinstance(value, (bool, str)):
    return value
  if isinstance(value, int):
    return int(value)
  if isinstance(value, float):
    return float(value) if math.isfinite(value) else None
  if isinstance(value, Mapping):
    return {str(k): to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if isinstance(value, enum.Enum):
    return value.name
  if isinstance(value, pathlib.PurePath):
    return str(value)
  if isinstance(value, bytes):
    return value.decode('utf-8', errors='replace')
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return {f.name: to_jsonable(getattr(value, f.name))
            for f in dataclasses.fields(value)}
  np = sys.modules.get('numpy')
  if np is not None and isinstance(value, np.generic):
    return to_jsonable(value.item())
  if hasattr(value, '__array__'):
    try:
      import numpy  # pylint: disable=g-import-not-at-top
      array = numpy.asarray(value)
    except Exception:  # pylint: disable=broad-except
      return str(value)
    if array.dtype == object:
      return [to_jsonable(v) for v in array.tolist()]
    return to_jsonable(array.tolist())
  if isinstance(value, (set, frozenset)):
    return sorted((to_jsonable(v) for v in value), key=repr)
  return str(value)


def dumps_json(obj: Any) -> str:
  """Deterministic JSON text for `obj` (after `to_jsonable`), newline-ended."""
  return json.dumps(to_jsonable(obj), indent=2, allow_nan=False,
                    ensure_ascii=False) + '\n'


def write_json(path: str | os.PathLike[str], obj: Any) -> str:
  """Writes `obj` as deterministic JSON to `path` (atomically); returns it."""
  return _write_text(path, dumps_json(obj))


def columns_of(records: Iterable[Record]) -> list[str]:
  """The union of the records' keys, in order of first appearance."""
  columns: dict[str, None] = {}
  for record in records:
    for key in record:
      columns.setdefault(str(key), None)
  return list(columns)


def _csv_cell(value: Any) -> str:
  value = to_jsonable(value)
  if value is None:
    return ''
  if isinstance(value, bool):
    return 'true' if value else 'false'
  if isinstance(value, (int, float)):
    return repr(value)
  if isinstance(value, str):
    return value
  return json.dumps(value, allow_nan=False, ensure_ascii=False,
                    separators=(',', ':'))


def dumps_csv(records: Sequence[Record],
              columns: Sequence[str] | None = None) -> str:
  """CSV text for `records`: a header row then one row per record.

  Args:
    records: the records (dicts).
    columns: the columns, default `columns_of(records)`. Missing keys and
      None/NaN give empty cells; booleans are `true`/`false`; lists and dicts
      are written as compact JSON.

  Returns:
    The CSV text with '\\n' line endings.
  """
  columns = columns_of(records) if columns is None else list(columns)
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator='\n')
  writer.writerow(columns)
  for record in records:
    record = {str(k): v for k, v in record.items()}
    writer.writerow([_csv_cell(record.get(c)) for c in columns])
  return buffer.getvalue()


def write_csv(path: str | os.PathLike[str], records: Sequence[Record],
              columns: Sequence[str] | None = None) -> str:
  """Writes `records` as CSV (see `dumps_csv`) to `path`; returns it."""
  return _write_text(path, dumps_csv(records, columns))


def write_results(output_dir: str | os.PathLike[str],
                  records: Sequence[Record],
                  config: Mapping[str, Any] | None = None) -> dict[str, str]:
  """Writes `results.json` and `results.csv` into `output_dir`.

  Args:
    output_dir: the experiment's output directory (created if needed).
    records: one flat dict per measurement, e.g. `{'estimator': 'score',
      'num_samples': 10, 'variance': 0.3}`. Keys should be strings; values
      numbers, strings, bools, None (numpy/JAX scalars are converted).
    config: if given, also written (as is, after JSON conversion) to
      `config.json`. Prefer `write_config` for the standard config file.

  Returns:
    A dict from 'json', 'csv' (and 'config') to the written paths.
  """
  if isinstance(records, Mapping):
    raise TypeError('write_results expects a list of records (dicts), got a '
                    'dict; wrap it in a list.')
  records = [dict(r) for r in records]
  for record in records:
    for key in record:
      if not isinstance(key, str):
        raise TypeError(f'record keys must be strings, got {key!r}')
  os.makedirs(output_dir, exist_ok=True)
  paths = {
      'json': write_json(os.path.join(output_dir, RESULTS_JSON), records),
      'csv': write_csv(os.path.join(output_dir, RESULTS_CSV), records),
  }
  if config is not None:
    paths['config'] = write_json(os.path.join(output_dir, CONFIG_JSON),
                                 dict(config))
  return paths


def read_results(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """Reads the records of a `results.json` (or of its output directory)."""
  if os.path.isdir(path):
    path = os.path.join(path, RESULTS_JSON)
  with open(path, encoding='utf-8') as f:
    records = json.load(f)
  if not isinstance(records, list) or not all(
      isinstance(r, dict) for r in records):
    raise ValueError(f'{path}: expected a JSON list of objects')
  return records


def package_versions() -> dict[str, str | None]:
  """Versions of python and of `VERSIONED_PACKAGES` (None if missing)."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  versions: dict[str, str | None] = {'python': platform.python_version()}
  for name in VERSIONED_PACKAGES:
    try:
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      versions[name] = None
  return versions


def jax_info() -> dict[str, Any] | None:
  """JAX backend and devices, or None when JAX was not imported.

  This does not import JAX: a script that never imported it used no JAX
  backend, and importing it only to record that would be slow.
  """
  jax = sys.modules.get('jax')
  if jax is None:
    return None
  try:
    devices = jax.devices()
    return {
        'backend': jax.default_backend(),
        'device_count': len(devices),
        'devices': [str(d) for d in devices],
        'device_kinds': sorted({d.device_kind for d in devices}),
    }
  except Exception as e:  # pylint: disable=broad-except
    return {'error': f'{type(e).__name__}: {e}'}


def _is_project_module(module_name: str) -> bool:
  """Whether flags defined in `module_name` belong to the project.

  absl's own modules and installed libraries (modules living in a
  site-packages/dist-packages folder, e.g. chex or jax) are not; the
  `vae` package, the main script (absl names it by its path) and any other
  module of the source tree are.

  Args:
    module_name: a key of `FlagValues.flags_by_module_dict()`.

  Returns:
    True for project modules.
  """
  if module_name == 'absl' or module_name.startswith('absl.'):
    return False
  if module_name == 'vae' or module_name.startswith('vae.'):
    return True
  module = sys.modules.get(module_name)
  path = getattr(module, '__file__', None) if module is not None else (
      module_name)
  if not path:
    return True
  parts = os.path.realpath(path).split(os.sep)
  return not ('site-packages' in parts or 'dist-packages' in parts)


def flag_values_dict(flag_values: Any) -> dict[str, Any]:
  """The values of the project's flags in `flag_values`, sorted by name.

  Args:
    flag_values: an `absl.flags.FlagValues` (e.g. `flags.FLAGS`, after
      parsing) or a plain mapping from flag names to values.

  Returns:
    {name: value} for every flag defined by the experiment script, the `vae`
    package (e.g. the common flags of `vae.cli`) or other modules of the
    source tree; not absl's internal flags nor those that installed
    libraries (chex, jax, ...) define.
  """
  if isinstance(flag_values, Mapping):
    return {str(k): flag_values[k] for k in sorted(flag_values, key=str)}
  values = {}
  for module, module_flags in flag_values.flags_by_module_dict().items():
    if not _is_project_module(str(module)):
      continue
    for flag in module_flags:
      values[flag.name] = flag.value
  return {k: values[k] for k in sorted(values)}


def write_config(output_dir: str | os.PathLike[str], flag_values: Any,
                 seed: int | None,
                 extra: Mapping[str, Any] | None = None) -> str:
  """Writes `config.json` into `output_dir`; returns its path.

  Contents: `flags` (every flag of the experiment and of `vae.cli`, not
  absl's internal ones nor installed libraries'; see `flag_values_dict`), `seed`, `argv`, `versions`
  (python, jax, jaxlib, flax, optax, chex, numpy, vae), `jax` (backend and
  devices, or null if the script did not import JAX) and `extra`.

  Args:
    output_dir: the experiment's output directory (created if needed).
    flag_values: `absl.flags.FLAGS` (parsed) or a mapping of flag values.
    seed: the random seed used.
    extra: optional additional JSON-able information.

  Returns:
    The path of the written file.
  """
  # Local import: vae/__init__.py is tiny and imports nothing heavy.
  import vae  # pylint: disable=g-import-not-at-top
  versions = package_versions()
  versions['vae'] = getattr(vae, '__version__', None)
  config = {
      'seed': seed,
      'flags': flag_values_dict(flag_values),
      'argv': list(sys.argv),
      'versions': versions,
      'jax': jax_info(),
      'extra': dict(extra) if extra is not None else None,
  }
  os.makedirs(output_dir, exist_ok=True)
  return write_json(os.path.join(output_dir, CONFIG_JSON), config)


def _scalar(value: Any) -> Any:
  """Numpy/JAX 0-d values as Python scalars; anything else unchanged."""
  np = sys.modules.get('numpy')
  if np is None or isinstance(value, (str, bytes)):
    return value
  if isinstance(value, np.generic):
    return value.item()
  if hasattr(value, '__array__') and np.ndim(value) == 0:
    return np.asarray(value).item()
  return value


def _format_cell(value: Any, float_fmt: str) -> str:
  value = _scalar(value)
  if value is None:
    return '-'
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, float):
    return format(value, float_fmt)
  return str(value)


def _is_number(value: Any) -> bool:
  value = _scalar(value)
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_table(records: Sequence[Record],
                 columns: Sequence[str] | None = None,
                 float_fmt: str = '.4g') -> str:
  """A fixed-width text table of `records` for the terminal.

  Args:
    records: the records (dicts).
    columns: the columns to show, default all (`columns_of(records)`).
    float_fmt: format spec for floats, e.g. '.4g' or '.3f'.

  Returns:
    The table: a header, a rule, one line per record (numbers
    right-aligned, everything else left-aligned; missing values '-'), no
    trailing newline.
  """
  columns = columns_of(records) if columns is None else list(columns)
  if not columns:
    return '(no results)'
  cells = [[_format_cell(r.get(c), float_fmt) for c in columns]
           for r in records]
  numeric = [all(_is_number(r.get(c)) or r.get(c) is None for r in records)
             for c in columns]
  widths = [max([len(c)] + [len(row[i]) for row in cells])
            for i, c in enumerate(columns)]

  def line(items: Sequence[str], header: bool = False) -> str:
    parts = []
    for item, width, num in zip(items, widths, numeric):
      parts.append(item.rjust(width) if num and not header else
                   item.ljust(width))
    return '  '.join(parts).rstrip()

  lines = [line(columns, header=True), '  '.join('-' * w for w in widths)]
  lines.extend(line(row) for row in cells)
  return '\n'.join(lines)


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 150,
                close: bool = True) -> str:
  """Saves a matplotlib figure as PNG with the Agg backend; returns the path.

  Works headless (no display needed). If `matplotlib.pyplot` has not been
  imported yet, the Agg backend is selected for the whole process.

  Args:
    fig: a `matplotlib.figure.Figure`.
    path: where to write; parent directories are created. '.png' is appended
      when the path has no suffix.
    dpi: resolution.
    close: close the figure afterwards (frees memory in long sweeps).

  Returns:
    The path written.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  if 'matplotlib.pyplot' not in sys.modules:
    matplotlib.use('Agg')
  path = os.fspath(path)
  if not os.path.splitext(path)[1]:
    path += '.png'
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, format='png', dpi=dpi, bbox_inches='tight',
              metadata={'Software': None})
  if close and 'matplotlib.pyplot' in sys.modules:
    sys.modules['matplotlib.pyplot'].close(fig)
  return path


def _write_text(path: str | os.PathLike[str], text: str) -> str:
  """Writes `text` to `path` via a temporary file and an atomic rename."""
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w', encoding='utf-8', newline='') as f:
    f.write(text)
  os.replace(tmp, path)
  return path
