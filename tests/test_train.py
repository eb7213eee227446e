"""vae.train: the step, schedules, settings, and the epoch trainer's
exact resume, NaN/divergence stops, interruption and checkpoint fallback."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vae import checkpoint
from vae import data
from vae import optim
from vae import train
from vae.estimators import registry
from vae.models import image_vae

# One small setting shared by the tests that train, so that the epoch
# function compiles once per process (`train._compiled` is cached): the
# score-function estimator with its moving-average baseline, KL warm-up
# and dynamic binarization, 4 steps per epoch.
MODEL = image_vae.make(image_vae.ModelConfig(hidden_sizes=(8,), latent_dim=2))
OPTIMIZER = optim.OptimizerConfig(adam_eps=1e-4)
TINY = train.TrainConfig(objective='elbo', estimator='score_moving_average',
                         num_samples=2, warmup_steps=5, batch_size=10,
                         epochs=2)
FIXED = train.TrainConfig(batch_size=10, epochs=2)  # Pathwise, fixed pixels.
SEED = 3


def _grey_dataset(binarization='dynamic', num_train=40):
  rng = np.random.default_rng(0)
  train_images = rng.uniform(0, 1, (num_train, 784)).astype(np.float32) * 0.3
  test = rng.uniform(0, 1, (10, 784)).astype(np.float32) * 0.3
  if binarization == 'fixed':
    train_images, test = (x > 0.25 for x in (train_images, test))
    train_images, test = train_images.astype(np.float32), test.astype(
        np.float32)
  return data.Dataset(name='mnist', train=train_images, validation=test,
                      test=test, binarization=binarization)


def _train(out, config=TINY, dataset=None, **kwargs):
  kwargs.setdefault('log', lambda _: None)
  return train.train(MODEL, dataset or _grey_dataset(), OPTIMIZER, config,
                     SEED, str(out), **kwargs)


def test_step_and_fit_are_sgd_with_a_moving_average_baseline():
  """θ_{t+1} = θ_t - η (θ_t - x_t); b_{t+1} = d b_t + (1 - d) x_t."""
  def loss(theta, x, key, baseline):
    del key, baseline
    return 0.5 * jnp.sum((theta - x)**2), {'cost': x}
  optimizer = optax.sgd(0.1)
  step = optim.make_step(loss, optimizer, baseline_decay=0.5)
  xs = jnp.array([1.0, 2.0, 4.0])
  state, aux = optim.fit(step, optim.init_state(jnp.float32(0.0), optimizer),
                         xs, jax.random.split(jax.random.PRNGKey(0), 3))
  theta, b = 0.0, 0.0
  for x in (1.0, 2.0, 4.0):
    theta, b = theta - 0.1 * (theta - x), 0.5 * b + 0.5 * x
  assert int(state.step) == 3
  np.testing.assert_allclose([state.params, state.baseline], [theta, b],
                             rtol=1e-6)
  np.testing.assert_array_equal(aux['cost'], xs)


def test_learning_rate_schedules():
  def lrs(schedule, **kw):
    config = optim.OptimizerConfig(lr_schedule=schedule, **kw)
    fn = optim.learning_rate_schedule(config, 1000, steps_per_epoch=100)
    return np.array([float(fn(t)) for t in (0, 500, 1000)])
  np.testing.assert_allclose(lrs('constant'), 1e-3)
  np.testing.assert_allclose(lrs('cosine', lr_decay_rate=0.1),
                             [1e-3, 5.5e-4, 1e-4], rtol=1e-5)
  np.testing.assert_allclose(lrs('exponential', lr_decay_rate=0.01),
                             [1e-3, 1e-4, 1e-5], rtol=1e-5)
  # Burda et al.: 1 epoch at 1e-3, 3 at 1e-3·10^(-1/7), then 9 at 10^(-2/7).
  fn = optim.learning_rate_schedule(
      optim.OptimizerConfig(lr_schedule='burda'), 10**6, steps_per_epoch=10)
  np.testing.assert_allclose(
      [float(fn(t)) for t in (9, 10, 39, 40, 129, 130)],
      1e-3 * 10**(-np.array([0, 1, 1, 2, 2, 3]) / 7), rtol=1e-5)
  params = {'w': jnp.ones(3)}
  for name in optim.OPTIMIZERS:
    opt = optim.make_optimizer(optim.OptimizerConfig(optimizer=name), 10)
    updates, _ = opt.update({'w': jnp.ones(3)}, opt.init(params), params)
    assert np.all(np.asarray(optax.apply_updates(params, updates)['w']) < 1)


@pytest.mark.parametrize('changes, message', [
    (dict(objective='iwae', estimator='score_rloo'),
     "estimator 'score_rloo' does not apply to objective 'iwae'; choose "
     'from: pathwise, score, stl, dreg, vimco.'),
    (dict(objective='elbo', estimator='dreg'),
     "estimator 'dreg' does not apply to objective 'elbo'"),
    (dict(objective='kl'), "objective: 'kl' is not one of: elbo, "
     'elbo_mc_kl, iwae.'),
    (dict(objective='iwae', estimator='vimco', num_samples=1),
     'needs num_samples >= 2'),
    (dict(estimator='score_rloo', num_samples=1), 'needs num_samples >= 2'),
    (dict(beta=-0.5), 'beta: must be >= 0'),
    (dict(batch_size=0), 'batch_size: must be >= 1'),
    (dict(num_samples=10**7), 'num_samples: must be <= 10000'),
    (dict(estimator='gumbel_softmax'), "estimator: 'gumbel_softmax' is not"),
])
def test_invalid_settings_are_refused_in_one_line(changes, message):
  with pytest.raises(ValueError) as info:
    train.TrainConfig(**changes)
  assert message in str(info.value)
  assert '\n' not in str(info.value)


def test_every_listed_estimator_is_accepted_and_beta_warms_up():
  for objective in registry.OBJECTIVES:
    for estimator in registry.names(objective, 'continuous'):
      train.TrainConfig(objective=objective, estimator=estimator,
                        num_samples=2)
  config = train.TrainConfig(beta=0.5, warmup_steps=10)
  np.testing.assert_allclose(
      [float(train.beta_at(config, jnp.int32(t))) for t in (0, 5, 10, 20)],
      [0.0, 0.25, 0.5, 0.5])
  assert float(train.beta_at(train.TrainConfig(beta=0.7), 0)) == (
      pytest.approx(0.7))


def test_divergence_floor_and_jump():
  ok = {'finite': True, 'bound': -120.0, 'min_bound': -150.0,
        'max_bound': -90.0}
  assert train.divergence(ok, -130.0, 784) is None
  assert 'NaN/Inf' in train.divergence({**ok, 'finite': False}, None, 784)
  floor = -10 * 784 * np.log(2)  # -5434.
  low = {**ok, 'min_bound': floor - 1}
  assert 'diverged to' in train.divergence(low, None, 784)
  assert train.divergence(low, None, 784, beta=2.0) is None
  assert 'rose to' in train.divergence({**ok, 'max_bound': 600.0}, None, 784)
  assert 'jumped' in train.divergence({**ok, 'bound': -1.3e4,
                                       'min_bound': -1.3e4}, -100.0, 10**4)


def test_epoch_is_fit_of_model_loss_on_epoch_batches(monkeypatch):
  """make_epoch (batches gathered per step, the pathwise noise drawn before
  the scan) = `fit` of `model_loss` over `epoch_batches` (noise drawn in
  each step by `batch_surrogate`)."""
  monkeypatch.setattr(train, 'NOISE_AHEAD_STEPS', 1)
  config = train.TrainConfig(num_samples=2, warmup_steps=3, batch_size=10)
  images = jnp.asarray(_grey_dataset('fixed', num_train=45).train)
  opt = optax.adam(1e-2)
  state = optim.init_state(MODEL.init(jax.random.PRNGKey(0)), opt)
  epoch = train.make_epoch(MODEL, opt, config, SEED, False)
  ours, stats = epoch(state, images, jnp.int32(1))
  t = jnp.arange(4)
  step = optim.make_step(train.model_loss(MODEL, config, False), opt)
  ref, aux = jax.jit(lambda s: optim.fit(
      step, s, (data.epoch_batches(images, 10, SEED, 1),
                jax.vmap(lambda i: train.beta_at(config, i))(t)),
      jax.vmap(lambda i: train.step_key(SEED, i))(t)))(state)
  np.testing.assert_allclose(stats['bound'], jnp.mean(aux['bound']),
                             rtol=1e-6)
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5,
                                                       atol=1e-7),
               ours.params, ref.params)


def test_memory_estimate_counts_parameters_and_activations():
  model = image_vae.ModelConfig()
  small = train.memory_estimate(model, train.TrainConfig(batch_size=1))
  assert 5 * 4 * model.num_params() < small < 6 * 4 * model.num_params()
  huge = image_vae.ModelConfig(hidden_sizes=(10_000,) * 3,
                               latent_dim=10_000)
  assert train.memory_estimate(huge, train.TrainConfig()) > 2**33
  train.check_memory(model, train.TrainConfig())
  with pytest.raises(ValueError, match='a training step needs about') as e:
    train.check_memory(model, train.TrainConfig(batch_size=10**5,
                                                num_samples=10**4))
  assert '\n' not in str(e.value)


@pytest.fixture(scope='module')
def full_run(tmp_path_factory):
  out = tmp_path_factory.mktemp('full')
  rows = []
  result = _train(out, on_epoch=rows.append)
  return out, result, rows


def test_resume_reaches_the_same_parameters(full_run, tmp_path):
  _, full, rows = full_run
  assert int(full.state.step) == 8 and full.resumed_from is None
  assert float(full.state.baseline) != 0.0  # The score baseline is state.
  assert [r['step'] for r in rows] == [4, 8]
  assert [r['beta'] for r in rows] == pytest.approx([0.8, 1.0])  # 5 steps.
  assert all(r['test_bound'] < 0 for r in rows)

  first = _train(tmp_path, stop_after_epochs=1)
  assert int(first.state.step) == 4
  assert checkpoint.latest_step(str(tmp_path)) == 4
  lines, second_rows = [], []
  second = _train(tmp_path, log=lines.append, on_epoch=second_rows.append)
  assert second.resumed_from == 4 and len(second.history) == 1
  assert any('resuming' in line and 'step 4' in line for line in lines)
  chex.assert_trees_all_equal(second.state, full.state)
  assert second_rows[0]['train_bound'] == rows[1]['train_bound']
  again = _train(tmp_path)  # Finished: the same state, no training.
  assert again.history == [] and int(again.state.step) == 8
  chex.assert_trees_all_equal(again.state.params, full.state.params)


def test_interrupt_checkpoints_and_resumes_exactly(full_run, tmp_path):
  _, full, _ = full_run

  def interrupt(row):  # While epoch 2 is reported: epoch 1 is the last.
    if row['epoch'] == 2:
      raise KeyboardInterrupt('SIGTERM')

  lines = []
  config = train.TrainConfig(**{**TINY.__dict__, 'checkpoint_every': 5})
  with pytest.raises(KeyboardInterrupt):
    _train(tmp_path, config, on_epoch=interrupt, log=lines.append)
  assert checkpoint.list_steps(str(tmp_path)) == [4]
  assert 'interrupted' in lines[-1]
  resumed = _train(tmp_path, config)
  chex.assert_trees_all_equal(resumed.state, full.state)


def test_corrupt_latest_checkpoint_falls_back(full_run, tmp_path):
  out, full, _ = full_run
  _train(tmp_path, stop_after_epochs=1)
  checkpoint.save(str(tmp_path), 8, {'broken': jnp.zeros(3)})
  folder = checkpoint.step_dir(str(tmp_path), 8)
  for root, _, files in os.walk(folder):
    for f in files:
      if f.endswith('METADATA'):
        open(os.path.join(root, f), 'wb').write(b'garbage')
  lines = []
  resumed = _train(tmp_path, log=lines.append)
  assert resumed.resumed_from == 4
  assert sum('step_8' in line and 'cannot be read' in line
             for line in lines) == 1
  chex.assert_trees_all_equal(resumed.state, full.state)
  assert checkpoint.list_steps(str(out)) == [4, 8]


@pytest.mark.parametrize('pixel, message', [
    (np.inf, 'NaN/Inf in epoch 1'), (1e6, '(diverged|rose) to'),
    (-1e6, '(diverged|rose) to')])
def test_nan_or_divergence_stops_with_the_last_good_state(tmp_path, pixel,
                                                          message):
  dataset = _grey_dataset('fixed')
  dataset.train[25, 0] = pixel  # In step 3 of epoch 1 (seed 3's order).
  with pytest.raises(train.Diverged, match=message) as info:
    _train(tmp_path, FIXED, dataset)
  assert '\n' not in str(info.value)
  assert 'the last good state (step 0)' in str(info.value)
  assert checkpoint.list_steps(str(tmp_path)) == [0]
  tree = checkpoint.restore(str(tmp_path), 0, {'params': MODEL.init(
      jax.random.PRNGKey(0))})
  for leaf in jax.tree.leaves(tree):
    assert np.all(np.isfinite(leaf))


def test_batch_larger_than_the_data_is_refused(tmp_path):
  with pytest.raises(ValueError, match='batch_size: 10 > 5 training'):
    _train(tmp_path, dataset=_grey_dataset(num_train=5))
