"""Training loop: validation, schedules, exact resume, NaN stop, checkpoints."""

import csv
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vae import checkpointing
from vae import data
from vae import training

# One small config shared by the tests that train, so the epoch function is
# compiled once per process (`training._compiled_train_epoch` is cached).
TINY = training.TrainConfig(hidden_sizes=(8,), latent_dim=2, batch_size=10,
                            epochs=2, objective='elbo',
                            estimator='score_moving_average', num_samples=2,
                            warmup_steps=5, seed=3)


def _grey_dataset(num_train=40):
  """Grey-level images, binarized dynamically."""
  rng = np.random.default_rng(0)
  train = rng.uniform(0, 1, (num_train, 784)).astype(np.float32) * 0.3
  test = rng.uniform(0, 1, (10, 784)).astype(np.float32) * 0.3
  return data.Dataset(name='mnist', train=train, validation=test, test=test,
                      binarization='dynamic')


def _quiet(_):
  pass


def _train(config, dataset, out, **kwargs):
  kwargs.setdefault('tensorboard', False)
  kwargs.setdefault('use_orbax', False)
  return training.train(config, dataset, str(out), log=_quiet, **kwargs)


def _assert_trees_equal(a, b):
  flat_a, tree_a = jax.tree.flatten(a)
  flat_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b
  for x, y in zip(flat_a, flat_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize('changes, message', [
    (dict(objective='iwae', estimator='score_rloo'),
     "estimator 'score_rloo' does not apply to objective 'iwae'; choose from: "
     'pathwise, score, stl, dreg, vimco.'),
    (dict(objective='elbo', estimator='dreg'),
     "estimator 'dreg' does not apply to objective 'elbo'"),
    (dict(objective='kl'), "unknown objective 'kl'; choose from elbo, "
     'elbo_mc_kl, iwae.'),
    (dict(optimizer='lbfgs'), "unknown optimizer 'lbfgs'"),
    (dict(lr_schedule='step'), "unknown lr_schedule 'step'"),
    (dict(objective='iwae', estimator='vimco', num_samples=1),
     'needs num_samples >= 2'),
    (dict(batch_size=0), 'batch_size must be >= 1'),
])
def test_validate_names_the_valid_choices(changes, message):
  config = training.TrainConfig(**changes)
  with pytest.raises(ValueError) as info:
    training.validate(config)
  assert message in str(info.value)
  assert '\n' not in str(info.value)


def test_all_listed_estimators_validate():
  for objective in training.registry.OBJECTIVES:
    estimators = training.registry.names(objective, 'continuous')
    for estimator in estimators:
      training.validate(training.TrainConfig(
          objective=objective, estimator=estimator, num_samples=2))


def test_beta_warmup_is_linear():
  config = training.TrainConfig(beta=0.5, warmup_steps=10)
  betas = [float(training.beta_at(config, jnp.int32(t))) for t in (0, 5, 10,
                                                                    20)]
  np.testing.assert_allclose(betas, [0.0, 0.25, 0.5, 0.5])
  assert float(training.beta_at(training.TrainConfig(beta=0.7),
                                jnp.int32(0))) == pytest.approx(0.7)


def test_learning_rate_schedules():
  def lrs(schedule, **kw):
    config = training.TrainConfig(learning_rate=1e-3, lr_schedule=schedule,
                                  epochs=10, **kw)
    fn = training.learning_rate_schedule(config, steps_per_epoch=100)
    return np.array([float(fn(t)) for t in (0, 500, 1000)])
  np.testing.assert_allclose(lrs('constant'), 1e-3)
  np.testing.assert_allclose(lrs('cosine', lr_decay_rate=0.1),
                             [1e-3, 5.5e-4, 1e-4], rtol=1e-5)
  np.testing.assert_allclose(lrs('exponential', lr_decay_rate=0.01),
                             [1e-3, 1e-4, 1e-5], rtol=1e-5)
  # Burda et al.: 1 epoch at 1e-3, 3 at 1e-3·10^(-1/7), then 9 at 10^(-2/7).
  fn = training.learning_rate_schedule(
      training.TrainConfig(lr_schedule='burda'), steps_per_epoch=10)
  np.testing.assert_allclose(
      [float(fn(t)) for t in (9, 10, 39, 40, 129, 130)],
      1e-3 * 10**(-np.array([0, 1, 1, 2, 2, 3]) / 7), rtol=1e-5)


def test_make_optimizer_kinds():
  params = {'w': jnp.ones(3)}
  for name in training.OPTIMIZERS:
    opt = training.make_optimizer(training.TrainConfig(optimizer=name), 10)
    updates, _ = opt.update({'w': jnp.ones(3)}, opt.init(params), params)
    assert np.all(np.asarray(optax.apply_updates(params, updates)['w']) < 1)


def test_resume_reaches_the_same_parameters(tmp_path):
  dataset = _grey_dataset()
  full = _train(TINY, dataset, tmp_path / 'full')
  assert int(full.state.step) == 8 and full.resumed_from is None
  assert float(full.state.baseline) != 0.0  # The score baseline is state.

  first = _train(TINY, dataset, tmp_path / 'split', stop_after_epochs=1)
  assert int(first.state.step) == 4
  assert checkpointing.latest_step(
      training.checkpoint_dir(str(tmp_path / 'split'))) == 4
  second = _train(TINY, dataset, tmp_path / 'split')
  assert second.resumed_from == 4 and len(second.history) == 1
  _assert_trees_equal(second.state, full.state)

  # metrics.csv: one row per epoch, the resumed one appended.
  with open(tmp_path / 'split' / training.METRICS_CSV) as f:
    rows = list(csv.DictReader(f))
  assert [int(r['step']) for r in rows] == [4, 8]
  with open(tmp_path / 'full' / training.METRICS_CSV) as f:
    full_rows = list(csv.DictReader(f))
  assert [r['train_bound'] for r in rows] == [r['train_bound']
                                              for r in full_rows]

  # A finished run resumes to the same state without training.
  again = _train(TINY, dataset, tmp_path / 'split')
  assert again.history == [] and int(again.state.step) == 8

  # The saved parameters load for evaluation.
  config, model, params, step = training.load_params(str(tmp_path / 'split'))
  assert config == TINY and step == 8
  assert model == training.make_model(TINY)
  _assert_trees_equal(params, full.state.params)


def test_resume_refuses_another_config(tmp_path):
  dataset = _grey_dataset()
  _train(TINY, dataset, tmp_path, stop_after_epochs=1)
  other = TINY.__class__(**{**TINY.to_json(), 'learning_rate': 0.5,
                            'hidden_sizes': (8,)})
  with pytest.raises(ValueError, match='learning_rate=0.001 now 0.5'):
    _train(other, dataset, tmp_path)
  with pytest.raises(ValueError, match='has checkpoints'):
    _train(TINY, dataset, tmp_path, resume=False)


def test_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  # An infinite pixel in a fixed-binarization image makes x·logits NaN/Inf in
  # step 3 (the decoder's bias init clips the pixel mean, so it is finite).
  good = _grey_dataset()
  train = np.array(good.train)
  train[25, 0] = np.inf
  dataset = data.Dataset(name='synthetic', train=train, validation=good.test,
                         test=good.test, binarization='fixed')
  with pytest.raises(FloatingPointError, match='NaN/Inf in epoch 1'):
    _train(TINY, dataset, tmp_path)
  directory = training.checkpoint_dir(str(tmp_path))
  assert checkpointing.latest_step(directory) == 0
  _, _, params, _ = training.load_params(str(tmp_path))
  for leaf in jax.tree.leaves(params):
    assert np.all(np.isfinite(np.asarray(leaf)))


@pytest.mark.parametrize('use_orbax', [False, True])
def test_checkpoint_round_trip(tmp_path, use_orbax):
  if use_orbax and checkpointing._orbax() is None:  # pylint: disable=protected-access
    pytest.skip('orbax.checkpoint is not installed')
  opt = optax.adam(1e-3)
  params = {'enc': {'w': jnp.arange(6.0).reshape(2, 3), 'b': jnp.ones(3)}}
  tree = {'step': jnp.int32(7), 'params': params, 'opt_state': opt.init(params),
          'baseline': jnp.float32(-3.5)}
  for step in (1, 2, 3):
    checkpointing.save(str(tmp_path), step, tree, keep=2, use_orbax=use_orbax)
  (tmp_path / 'step_9.orbax-checkpoint-tmp').mkdir()  # A killed write.
  (tmp_path / 'step_8.npz.tmp123').write_bytes(b'partial')
  assert checkpointing.list_steps(str(tmp_path)) == [2, 3]
  zeros = jax.tree.map(jnp.zeros_like, tree)
  restored = checkpointing.restore(str(tmp_path), zeros)
  _assert_trees_equal(restored, tree)
  only_params = checkpointing.restore(str(tmp_path), {'params': params}, 2)
  _assert_trees_equal(only_params, {'params': params})
  with pytest.raises(FileNotFoundError):
    checkpointing.restore(str(tmp_path), zeros, step=1)
  with pytest.raises(ValueError, match='shape'):
    checkpointing.restore(str(tmp_path), {'baseline': jnp.zeros(2)})
  checkpointing.save(str(tmp_path), 4, tree, use_orbax=use_orbax)
  assert not os.path.exists(tmp_path / 'step_9.orbax-checkpoint-tmp')
  assert not os.path.exists(tmp_path / 'step_8.npz.tmp123')
