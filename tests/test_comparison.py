"""vae/comparison.py: `vae.compare`, its timing and ranking, and the README
example run exactly as written there."""

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae
from vae import comparison
from vae import distributions as dists
from vae import stats

README = pathlib.Path(__file__).resolve().parents[1] / 'README.md'


def readme_example() -> str:
  """The one ```python block of the README's `vae.compare` section."""
  text = README.read_text()
  section = text[text.index('## Compare estimators on your own cost'):]
  blocks = re.findall(r'```python\n(.*?)```', section, re.S)
  return blocks[0]


def test_readme_example_runs_as_written(capsys):
  code = readme_example()
  assert len(code.strip().splitlines()) <= 15
  scope: dict = {}
  exec(compile(code, str(README), 'exec'), scope)  # pylint: disable=exec-used
  table = scope['table']
  printed = capsys.readouterr().out
  assert 'best per sample pathwise' in printed and 'efficiency' in printed
  assert [r['estimator'] for r in table[::2]] == ['score', 'score_rloo',
                                                 'pathwise']
  threshold = stats.z_threshold(len(table))
  for r in table:
    assert abs(r['z']) < threshold, r
    assert r['seconds'] > 0 and r['efficiency'] == pytest.approx(
        r['variance'] * r['seconds'])


def test_variances_agree_with_closed_forms():
  # f = (z - 3)², q = N(1, 1), N = 4: one-sample pathwise ∂/∂μ is
  # 2(z - 3), variance 4σ² = 4 -> 1 at N = 4; score ∂/∂μ is f(z)(z - μ).
  params = {'mu': jnp.array(1.0), 'sigma': jnp.array(1.0)}
  table = vae.compare(lambda z: (z - 3.0)**2, params,
                      lambda p: dists.Normal.from_scale(p['mu'], p['sigma']),
                      estimators=('pathwise',), num_samples=4,
                      num_draws=20000, key=jax.random.PRNGKey(1))
  row = {r['param']: r for r in table}['mu']
  assert row['variance'] == pytest.approx(1.0, rel=0.05)
  assert row['snr'] == pytest.approx(4.0, rel=0.05)
  assert 'z' not in row


def test_vector_params_sum_the_variance_over_coordinates():
  # Pathwise on f = Σ z², q = N(μ, 1) in 3-D: ĝ_μ = 2z, Var = 4 per
  # coordinate, traced: 12.
  table = vae.compare(lambda z: jnp.sum(z**2), jnp.zeros(3),
                      lambda m: dists.Normal.from_scale(m, jnp.ones(3)),
                      estimators=('pathwise',), num_draws=20000)
  assert len(table) == 1 and table[0]['param'] == '-'
  assert table[0]['variance'] == pytest.approx(12.0, rel=0.05)
  assert np.shape(table[0]['mean']) == (3,)


def test_an_estimator_that_does_not_apply_is_refused():
  with pytest.raises(ValueError, match='num_samples >= 2'):
    vae.compare(lambda z: z, jnp.zeros(()), lambda m: dists.Normal.from_scale(
        m, jnp.ones(())), estimators=('score_rloo',), num_samples=1)


def test_ranking_per_sample_and_per_second():
  rows = [dict(estimator='a', param='p', k=k, variance=1.0, seconds=10.0)
          for k in (1, 2)] + [
              dict(estimator='b', param='p', k=1, variance=2.0, seconds=1.0),
              dict(estimator='b', param='p', k=2, variance=0.5, seconds=1.0)]
  (row,) = comparison.ranking(rows, ['param'])
  assert row['best_per_sample'] == 'a 1/2, b 1/2'
  assert row['best_per_second'] == 'b 2/2'


def test_seconds_per_call_is_positive_and_device_named():
  assert comparison.seconds_per_call(lambda x: x * 2, jnp.ones(3)) > 0
  assert comparison.device_name()
