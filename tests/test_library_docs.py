"""docs/library.md: every Python example runs as it stands, and the public
API it documents is there (top-level names; each estimator's own name and
docstring)."""

import pathlib
import pydoc
import re
import subprocess
import sys

import pytest

import vae
from vae.estimators import registry

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = ROOT / 'docs' / 'library.md'


def examples() -> list[str]:
  return re.findall(r'```python\n(.*?)```', PAGE.read_text(), re.S)


def test_the_page_has_its_three_examples():
  assert len(examples()) == 3


@pytest.mark.parametrize('index', range(3))
def test_example_runs(index, tmp_path):
  out = subprocess.run([sys.executable, '-c', examples()[index]],
                       capture_output=True, text=True, cwd=tmp_path,
                       env={'PYTHONPATH': str(ROOT), 'PATH': '/usr/bin:/bin',
                            'JAX_PLATFORMS': 'cpu'}, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]


def test_the_package_exports_its_public_names():
  for name in vae.__all__:
    assert getattr(vae, name) is not None, name
  assert vae.Model is vae.model.Model
  assert vae.importance_sampling is vae.importance.importance_sampling
  assert vae.estimators.get is registry.get
  assert vae.estimators.names is registry.names
  assert 'train' in dir(vae)
  with pytest.raises(AttributeError, match='no attribute'):
    getattr(vae, 'nothing_here')


@pytest.mark.parametrize('name', registry.names('expectation'))
def test_each_estimator_has_its_own_name_and_docstring(name):
  estimator = registry.get(name)
  assert estimator.__name__ == name
  doc = pydoc.render_doc(estimator, renderer=pydoc.plaintext)
  assert f'function {name} in' in doc
  assert f"Registry estimator '{name}'" in doc
  assert 'The gradient estimate: a pytree like `params`' in doc
  returns = estimator.__doc__.split('Returns:')[-1]
  assert 'Monte Carlo estimate (1/N)' not in returns
  assert 'surrogate whose gradient' not in returns
  assert ', as a surrogate' not in estimator.__doc__.splitlines()[0]
