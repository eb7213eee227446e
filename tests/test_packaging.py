"""Packaging: a light core install, the experiments extra, the entry point.

`pip install .` (no extras) must give a working `vae`: the core requirements
in setup.cfg exclude the experiment layer's packages, every third-party
import in vae/ is one of the core requirements (TFDS only lazily, in
vae.data), and vae imports and runs an estimator in a process where
TensorFlow, TFDS, matplotlib, submitit, tensorboardX and tqdm cannot be
imported. A non-editable install (a wheel built from this checkout) holds
vae and vae_experiments, no top-level `experiments`, and its `vae-launch`
runs from another folder.
"""

import ast
import configparser
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENT_LAYER = ('tensorflow', 'tensorflow_datasets', 'matplotlib',
                    'submitit', 'tensorboardX', 'tqdm')
# Import name -> distribution name, where they differ.
DISTRIBUTIONS = {'absl': 'absl-py', 'orbax': 'orbax-checkpoint',
                 'tensorflow': 'tensorflow-cpu',
                 'tensorflow_datasets': 'tensorflow-datasets'}
LAZY = {'tensorflow', 'tensorflow_datasets'}  # vae.data, real datasets only.


def _setup_cfg():
  parser = configparser.ConfigParser()
  parser.read(ROOT / 'setup.cfg')
  return parser


def _names(text: str) -> set[str]:
  return {re.split(r'[<>=!;\[ ]', line.strip())[0].lower()
          for line in text.strip().splitlines() if line.strip()}


def test_core_requirements_exclude_the_experiment_layer():
  core = _names(_setup_cfg()['options']['install_requires'])
  assert core == {'jax', 'flax', 'optax', 'chex', 'numpy', 'scipy',
                  'orbax-checkpoint', 'absl-py', 'blackjax'}
  extras = _setup_cfg()['options.extras_require']
  experiments = _names(extras['experiments'])
  assert {DISTRIBUTIONS.get(n, n).lower() for n in EXPERIMENT_LAYER} <= (
      experiments | {'tensorflow'})
  assert not core & experiments
  assert 'vae[experiments]' in extras['test'].split()


def _third_party_imports(path: pathlib.Path) -> set[str]:
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names |= {a.name.split('.')[0] for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      names.add(node.module.split('.')[0])
  return {n for n in names if n != 'vae' and n not in sys.stdlib_module_names}


def test_the_library_imports_only_core_requirements():
  core = _names(_setup_cfg()['options']['install_requires'])
  for path in sorted((ROOT / 'vae').rglob('*.py')):
    for name in _third_party_imports(path):
      if name in LAZY:
        assert path.name == 'data.py', (path, name)
        continue
      assert DISTRIBUTIONS.get(name, name).lower() in core, (path, name)


_WITHOUT_EXPERIMENT_LAYER = '''
import importlib, importlib.abc, pkgutil, sys
BLOCKED = %r
class Block(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in BLOCKED:
      raise ImportError(f'{name} is not installed (blocked)')
sys.meta_path.insert(0, Block())
import jax, jax.numpy as jnp
import vae
from vae import distributions, estimators
from vae.estimators import registry
for m in pkgutil.walk_packages(vae.__path__, 'vae.'):
  importlib.import_module(m.name)
f = lambda x: jnp.sum((x - 1.0) ** 2)                # E f = (mu - 1)^2 + 1
q = lambda p: distributions.Normal(p['mu'], jnp.zeros(1))
for name in ('pathwise', 'score'):
  g = registry.get(name)(f, {'mu': jnp.zeros(1)}, q, jax.random.PRNGKey(0),
                         20000)
  assert abs(float(g['mu'][0]) + 2.0) < 0.2, (name, g)
assert not [m for m in sys.modules if m.split('.')[0] in BLOCKED]
print('ok')
'''


def test_vae_imports_and_runs_without_the_experiment_layer():
  code = _WITHOUT_EXPERIMENT_LAYER % (EXPERIMENT_LAYER + ('experiments',),)
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, cwd=ROOT, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip().endswith('ok')


def test_every_package_is_listed():
  listed = set(_setup_cfg()['options']['packages'].split())
  found = {'.'.join(p.relative_to(ROOT).parts[:-1])
           for p in ROOT.glob('vae/**/__init__.py')}
  found |= {'vae_experiments' + '.'.join(
      ('',) + p.relative_to(ROOT / 'experiments').parts[:-1])
            for p in ROOT.glob('experiments/**/__init__.py')}
  assert listed == found
  assert (ROOT / 'vae' / 'py.typed').exists()


def test_readme_commands_are_what_ci_runs():
  readme = (ROOT / 'README.md').read_text()
  ci = (ROOT / '.ci' / 'run').read_text().strip().splitlines()[-1]
  assert ci in readme
  assert "pip install -q -e '.[experiments]'" in readme


def test_entry_point_after_a_non_editable_install(tmp_path):
  target = tmp_path / 'site'
  subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps',
                  '--no-build-isolation', '--target', str(target), str(ROOT)],
                 check=True, capture_output=True, timeout=300)
  top = {p.name for p in target.iterdir()}
  assert {'vae', 'vae_experiments', 'bin'} <= top
  assert 'experiments' not in top
  assert (target / 'vae' / 'py.typed').exists()
  env = {**os.environ, 'PYTHONPATH': str(target)}
  run = lambda *a: subprocess.run([str(target / 'bin' / 'vae-launch'), *a],
                                  capture_output=True, text=True, env=env,
                                  cwd=tmp_path, timeout=300)
  out = run('--help')
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'gaussian_gradients' in out.stdout and 'train_vae' in out.stdout
  out = run('--experiment=linear_gaussian', '--dry_run')
  assert out.returncode == 0, out.stderr[-3000:]
  where = subprocess.run(
      [sys.executable, '-c', 'import vae_experiments, experiments.common; '
       'import vae; print(experiments.common.__file__, vae.__file__)'],
      capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
  assert where.stdout.split() and all(
      p.startswith(str(target)) for p in where.stdout.split()), where
