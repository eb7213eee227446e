"""The library's layers, read from its import statements (docs/architecture.md):

    core       types, stats, distributions, kl, objectives, model, estimators/
    models     vae/models/ (networks + prior/encoder/decoder)
    machinery  config, data, checkpoint, optim, train, evaluate, importance,
               ais, moments, comparison
    problems   vae/problems/ (toys with exact answers)
    analysis   vae/analysis/

Each layer imports only its own and the layers above it (a model may also
declare its settings with `vae.config`; the package `vae` itself re-exports
the public API, `vae.compare` among it, from any layer); nothing in `vae/`
imports `experiments`, `benchmarks` or `launch`.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = ('core', 'models', 'machinery', 'problems', 'analysis')
CORE = {'vae', 'vae.types', 'vae.stats', 'vae.distributions', 'vae.kl',
        'vae.objectives', 'vae.model'}
MACHINERY = {'vae.config', 'vae.data', 'vae.checkpoint', 'vae.optim',
             'vae.train', 'vae.evaluate', 'vae.importance', 'vae.moments',
             'vae.ais', 'vae.comparison', 'vae.missing'}


def layer(module: str) -> str:
  """The layer of a `vae` module name."""
  if module in CORE or module.startswith('vae.estimators'):
    return 'core'
  if module.startswith('vae.models'):
    return 'models'
  if module in MACHINERY:
    return 'machinery'
  if module.startswith('vae.problems'):
    return 'problems'
  if module.startswith('vae.analysis'):
    return 'analysis'
  raise AssertionError(f'{module}: no layer; add it to tests/test_layers.py')


def imports(path: pathlib.Path) -> set[str]:
  """Every module named by an import statement of the file (any depth)."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module)
      names.update(f'{node.module}.{a.name}' for a in node.names)
  return names


def modules() -> dict[str, set[str]]:
  out = {}
  for path in sorted((ROOT / 'vae').rglob('*.py')):
    name = '.'.join(path.relative_to(ROOT).with_suffix('').parts)
    out[name.removesuffix('.__init__')] = imports(path)
  return out


def _vae_imports(names: set[str], known: set[str]) -> set[str]:
  """The `vae` modules among `names` (dropping `from vae.x import f`'s f)."""
  return {n for n in names if n in known}


def test_every_module_has_a_layer():
  for name in modules():
    layer(name)


@pytest.mark.parametrize('name', sorted(modules()))
def test_imports_go_only_upward(name):
  all_modules = modules()
  own = LAYERS.index(layer(name))
  for other in _vae_imports(all_modules[name], set(all_modules)):
    if other == 'vae' or other == name:
      continue
    allowed = LAYERS.index(layer(other)) <= own
    if layer(name) == 'models':  # Settings may be declared with vae.config.
      allowed = layer(other) in ('core', 'models') or other == 'vae.config'
    if layer(name) == 'core':  # No settings system in the maths core.
      allowed = layer(other) == 'core'
    if name == 'vae':  # The package re-exports the public API (any layer).
      allowed = True
    assert allowed, f'{name} ({layer(name)}) imports {other} ({layer(other)})'


def test_no_library_module_imports_the_experiment_layer():
  for name, names in modules().items():
    bad = {n for n in names if n.split('.')[0] in (
        'experiments', 'benchmarks', 'launch')}
    assert not bad, f'{name} imports {bad}'


def test_a_violation_is_caught():
  """The checker is not vacuous: an upward import is reported."""
  assert LAYERS.index(layer('vae.train')) > LAYERS.index(layer('vae.model'))
  assert layer('vae.models.image_vae') == 'models'
  with pytest.raises(AssertionError, match='no layer'):
    layer('vae.somewhere_new')
