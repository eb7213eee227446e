"""Every registry claim is tested: unbiased means exact, biased shows a bias.

For each entry of `registry.ESTIMATORS` (a new entry joins by itself) and
each case it claims (its E_q[f] surrogate on every family it supports; its
IWAE_K surrogate on every family, at β = 1 and β = 0.5), the mean of D
independent estimates is compared with the exact gradient
(`tests/stat_checks.py`: closed forms, enumeration, quadrature and finite
differences). z = (mean - exact)/SE over every coordinate of every case of
every estimator is held to one Bonferroni threshold: an estimator marked
unbiased must stay below it everywhere, one marked biased must exceed it
somewhere. Flipping any `unbiased` flag makes its test fail.
"""

import dataclasses
import functools
import pathlib
import subprocess
import sys
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import stat_checks as sc
from vae import distributions as dists
from vae import stats
from vae.estimators import registry
from vae.problems import gaussian_costs as gc

NUM_DRAWS = 20000
BETAS = (1.0, 0.5)
BASELINE = 0.5  # Any constant keeps a caller-kept baseline unbiased.


def cases(e: registry.Estimator) -> list[tuple[str, str, float]]:
  """(target, family, β) for every claim of `e`."""
  out = [('expectation', f) for f in e.families if e.expectation]
  return out + [('iwae', f) for f in e.families if e.iwae]


_SIZES = {('expectation', 'normal'): 6, ('expectation', 'bernoulli'): 3,
          ('expectation', 'categorical'): 6, ('iwae', 'normal'): 2 * 2,
          ('iwae', 'bernoulli'): 2 * 2, ('iwae', 'categorical'): 2 * 3}
NUM_CHECKS = sum(_SIZES[c] for e in registry.ESTIMATORS.values()
                 for c in cases(e))
Z = stats.z_threshold(NUM_CHECKS, alpha=1e-3)


@functools.lru_cache(maxsize=None)
def _iwae_exact(family):
  """The exact IWAE_K gradients at each β in BETAS, concatenated."""
  if family == 'normal':
    return np.concatenate([sc.lg_exact_gradient(b)[:2] for b in BETAS])
  return np.concatenate([sc.discrete_iwae_problem(family, b)[2]
                         for b in BETAS])


def _case(e: registry.Estimator, target: str, family: str):
  """(estimate(key) -> flat gradient, exact flat gradient) for one case.

  IWAE cases are vmapped over β in BETAS (one trace of the estimator).
  """
  options = {'baseline': BASELINE} if e.state else {}
  n = max(2, e.min_samples)
  if (target, family) == ('expectation', 'normal'):
    exact = sc.gaussian_exact()
    return (lambda key: jnp.concatenate(list(gc.grid_gradients(
        e, sc.GAUSSIAN_FAMILIES, sc.gaussian_points(BASELINE), key,
        n).values())), np.concatenate([exact['mu'], exact['sigma']]))
  if target == 'expectation':
    logits, builder, cost, exact = {
        'bernoulli': (sc.BERNOULLI_LOGITS, dists.Bernoulli, sc.bernoulli_cost,
                      sc.bernoulli_exact()),
        'categorical': (sc.CATEGORICAL_LOGITS, dists.Categorical,
                        sc.categorical_cost, sc.categorical_exact()),
    }[family]
    fn = registry.get(e.name, **options)
    return (lambda key: jnp.ravel(fn(cost, jnp.asarray(logits, jnp.float32),
                                     builder, key, n)), exact.ravel())
  k = max(sc.IWAE_K, e.min_samples)

  def one(key, beta):
    if family == 'normal':
      g = sc.iwae_gradient(e.iwae, sc.lg_log_joint(beta), sc.lg_q(),
                           lambda q: q, key, k, beta)
      return jnp.stack([g.loc, g.log_scale])
    logits, log_joint, _ = sc.discrete_iwae_problem(family, beta)
    builder = dists.Bernoulli if family == 'bernoulli' else dists.Categorical
    return jnp.ravel(sc.iwae_gradient(e.iwae, log_joint, jnp.asarray(
        logits, jnp.float32), builder, key, k, beta))
  return (lambda key: jnp.ravel(jax.vmap(one, (None, 0))(
      key, jnp.asarray(BETAS))), _iwae_exact(family))


def z_scores(name: str) -> dict[tuple, np.ndarray]:
  """{case: z per coordinate} for every claim of estimator `name`."""
  e = registry.ESTIMATORS[name]
  built = {c: _case(e, *c) for c in cases(e)}
  stats_ = sc.draw_moments(lambda key: {str(c): est(key) for c, (est, _) in
                                        built.items()}, NUM_DRAWS,
                           seed=registry.name_id(name))
  return {c: sc.z_scores(stats_['mean'][str(c)], stats_['variance'][str(c)],
                         NUM_DRAWS, exact) for c, (_, exact) in built.items()}


@pytest.mark.parametrize('name', list(registry.ESTIMATORS))
def test_every_claim_of_the_registry(name):
  e = registry.ESTIMATORS[name]
  assert cases(e), f'{name}: claims no family and no objective'
  zs = z_scores(name)
  worst = {c: float(np.max(np.abs(z))) for c, z in zs.items()}
  if e.unbiased:
    assert max(worst.values()) < Z, (name, worst, Z)
  else:
    assert max(worst.values()) > Z, (name, 'claims a bias no case shows',
                                     worst, Z)


def test_the_walk_catches_a_planted_wrong_estimator(monkeypatch):
  # pathwise with its gradient scaled by 1.05 must fail the walk.
  e = registry.ESTIMATORS['pathwise']
  scaled = lambda s: lambda *a, **k: 1.05 * s(*a, **k)
  monkeypatch.setitem(registry.ESTIMATORS, 'pathwise', dataclasses.replace(
      e, expectation=scaled(e.expectation), iwae=scaled(e.iwae)))
  zs = z_scores('pathwise')
  assert 3.5 < Z < 6.0
  assert max(np.max(np.abs(z)) for z in zs.values()) > Z, zs


def test_check_refuses_what_the_registry_does_not_claim():
  with pytest.raises(ValueError, match='does not work on categorical'):
    registry.check('score_mean_baseline', family='categorical')
  with pytest.raises(ValueError, match='does not work on categorical'):
    registry.check('disarm', family='categorical')
  with pytest.raises(ValueError, match='does not apply to objective'):
    registry.check('score_optimal_baseline', 'elbo')
  with pytest.raises(ValueError, match='num_samples >= 2'):
    registry.check('vimco', 'iwae', num_samples=1)
  with pytest.raises(ValueError, match='choose from'):
    registry.get('nope')
  # DReG is exact at every β (general weights), so β ≠ 1 is accepted.
  assert registry.check('dreg', 'iwae', 5, beta=0.3).name == 'dreg'


def test_score_mean_baseline_refuses_categorical_in_one_line():
  with pytest.raises(TypeError, match='score_mean_baseline needs q with a'):
    registry.get('score_mean_baseline')(
        sc.categorical_cost, jnp.asarray(sc.CATEGORICAL_LOGITS),
        dists.Categorical, jax.random.PRNGKey(0), 2)


def test_names_list_what_a_model_can_train_with():
  trainable = registry.names()
  assert 'score_optimal_baseline' not in trainable  # needs E_q[f s²]
  assert 'score_optimal_baseline' in registry.names('expectation')
  assert set(registry.names(latents='discrete')) == {
      n for n in trainable if 'discrete' in registry.lookup(n).latents}
  for name, e in registry.ESTIMATORS.items():
    assert set(e.families) <= set(registry.FAMILIES), name
    assert ('normal' in e.families) == ('continuous' in e.latents), name


def test_the_core_imports_no_settings_model_trainer_or_experiment():
  # The maths core (distributions, kl, objectives, estimators/) in a fresh
  # interpreter: none of vae.config, models, trainers, moments, analyses or
  # experiments gets imported.
  code = ('import sys; import vae.distributions, vae.kl, vae.objectives, '
          'vae.estimators.registry; print(sorted(m for m in sys.modules if '
          'm.startswith(("vae.config", "vae.models", "vae.train", "vae.optim",'
          ' "vae.moments", "vae.evaluate", "vae.analysis", "experiments"))))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                       text=True, check=True, cwd=pathlib.Path(
                           __file__).parents[1]).stdout
  assert out.strip() == '[]', out


def test_name_ids_are_stable_and_distinct():
  # crc32 of the name: the same in every process and for every order.
  assert registry.name_id('score') == zlib.crc32(b'score') & 0x7fffffff
  ids = [registry.name_id(n) for n in registry.ESTIMATORS]
  assert len(set(ids)) == len(ids)
