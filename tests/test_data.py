"""Tests for `vae.data`."""

import os
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae import data

_ENV_VARS = (data.ENV_TFDS_DATA_DIR, data.ENV_MANUAL_DIR, data.ENV_CACHE_DIR)


@pytest.fixture
def no_env(monkeypatch):
  """No data location comes from the environment."""
  for var in _ENV_VARS:
    monkeypatch.delenv(var, raising=False)


def _block_tensorflow(monkeypatch):
  """Makes `import tensorflow` / `import tensorflow_datasets` fail."""
  for module in ('tensorflow', 'tensorflow_datasets'):
    monkeypatch.setitem(sys.modules, module, None)


def _fake_tfds(tmp_path, name, splits):
  """Mocks TFDS so that `name` is prepared and its splits are `splits`.

  Args:
    tmp_path: where the dataset metadata goes.
    name: TFDS dataset name.
    splits: split name -> uint8 [N, 28, 28, 1] images.

  Returns:
    The `tfds.testing.mock_data` context manager.
  """
  tf = pytest.importorskip('tensorflow')
  tfds = pytest.importorskip('tensorflow_datasets')
  data_dir = str(tmp_path / 'tfds_metadata')
  builder = tfds.builder(name, data_dir=data_dir)
  os.makedirs(builder.data_path)
  builder.info.write_to_directory(builder.data_path)

  def as_dataset(self, split, *args, **kwargs):
    del self, args, kwargs
    return tf.data.Dataset.from_tensor_slices({'image': splits[str(split)]})

  return tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_FILES,
                                data_dir=data_dir, as_dataset_fn=as_dataset)


def _images(n, max_value, seed):
  rng = np.random.default_rng(seed)
  return rng.integers(0, max_value + 1, (n, 28, 28, 1), dtype=np.uint8)


# Synthetic data.


def test_synthetic_dataset_shapes_values_and_determinism():
  ds = data.load_dataset('synthetic')
  assert (ds.name, ds.binarization) == ('synthetic', 'fixed')
  assert ds.train.shape == (2000, 784)
  assert ds.validation.shape == ds.test.shape == (500, 784)
  for x in (ds.train, ds.validation, ds.test):
    assert x.dtype == np.float32
    assert set(np.unique(x)) == {0.0, 1.0}
    assert x.sum(axis=1).min() >= 5  # Every image shows something.
  assert 0.03 < ds.train.mean() < 0.3
  assert len(np.unique(ds.train, axis=0)) == 2000
  again = data.load_dataset('synthetic', num_train=300, num_test=10, seed=0)
  np.testing.assert_array_equal(again.train, ds.train[:300])
  np.testing.assert_array_equal(again.test, ds.test[:10])
  other = data.load_dataset('synthetic', num_train=300, seed=1)
  assert np.mean(other.train != again.train) > 0.05
  assert np.mean(ds.test != ds.train[:500]) > 0.05
  np.testing.assert_array_equal(
      data.load_split('synthetic', 'validation', num_examples=7),
      ds.validation[:7])


def test_synthetic_images_are_spatially_structured():
  x = data.synthetic_images(500, seed=3).reshape(-1, 28, 28).astype(bool)
  on = x[:, :, :-1]
  right_on_given_on = (on & x[:, :, 1:]).sum() / on.sum()
  below_on_given_on = (x[:, :-1] & x[:, 1:]).sum() / x[:, :-1].sum()
  # Shapes are connected blobs: a neighbour of an "on" pixel is mostly on,
  # far above the pixel rate (about 0.1) that noise would give.
  assert right_on_given_on > 0.6 and below_on_given_on > 0.6
  assert x.mean() < 0.25
  # Shapes vary in position: every pixel away from the border is sometimes on.
  assert x[:, 4:24, 4:24].any(axis=0).all()


def test_synthetic_needs_no_tensorflow(monkeypatch):
  _block_tensorflow(monkeypatch)
  assert data.load_dataset('synthetic', num_train=10).train.shape == (10, 784)


def test_unknown_names_raise():
  with pytest.raises(ValueError, match='unknown dataset'):
    data.load_dataset('cifar10')
  with pytest.raises(ValueError, match='unknown split'):
    data.load_split('synthetic', 'valid')


# Binarization and batching.


def test_binarize():
  grey = np.tile(np.linspace(0.0, 1.0, 784, dtype=np.float32), (200, 1))
  key = jax.random.PRNGKey(0)
  x = data.binarize(key, grey)
  assert x.shape == grey.shape and x.dtype == jnp.float32
  x = np.asarray(x)
  assert set(np.unique(x)) == {0.0, 1.0}
  np.testing.assert_array_equal(x[:, 0], 0.0)  # P(1) = 0.
  np.testing.assert_array_equal(x[:, -1], 1.0)  # P(1) = 1.
  np.testing.assert_allclose(x.mean(axis=0), grey[0], atol=0.15)  # 200 draws.
  assert abs(x.mean() - 0.5) < 0.01
  np.testing.assert_array_equal(jax.jit(data.binarize)(key, grey), x)
  np.testing.assert_array_equal(data.binarize(0, grey), x)  # int seed.
  assert np.mean(np.asarray(data.binarize(1, grey)) != x) > 0.1


def test_epoch_permutation_is_a_deterministic_permutation():
  perm = np.asarray(data.epoch_permutation(1000, seed=0, epoch=0))
  np.testing.assert_array_equal(np.sort(perm), np.arange(1000))
  np.testing.assert_array_equal(data.epoch_permutation(1000, 0, 0), perm)
  assert np.mean(np.asarray(data.epoch_permutation(1000, 0, 1)) != perm) > .9
  assert np.mean(np.asarray(data.epoch_permutation(1000, 1, 0)) != perm) > .9


def test_epoch_batches():
  images = np.repeat(np.arange(103, dtype=np.float32)[:, None], 784, axis=1)
  batches = data.epoch_batches(images, 10, seed=4, epoch=2)
  assert batches.shape == (10, 10, 784)
  ids = np.asarray(batches[:, :, 0]).astype(int).ravel()
  assert len(set(ids)) == 100 and set(ids) <= set(range(103))
  np.testing.assert_array_equal(
      ids, np.asarray(data.epoch_permutation(103, 4, 2))[:100])
  # Works inside jit with a traced epoch and seed.
  scanned = jax.jit(lambda x, s, e: data.epoch_batches(x, 10, s, e))(
      images, 4, 2)
  np.testing.assert_array_equal(scanned, batches)
  ordered = data.epoch_batches(images, 25, seed=0, epoch=0, shuffle=False)
  np.testing.assert_array_equal(ordered.reshape(100, 784), images[:100])
  with pytest.raises(ValueError, match='batch_size'):
    data.epoch_batches(images[:5], 10, 0, 0)


# Settings.


def test_data_config_constraints_and_sizes():
  assert data.DataConfig().train_size == 2000
  assert data.DataConfig(dataset='binarized_mnist').train_size == 50_000
  assert data.DataConfig(num_train=300).train_size == 300
  for kwargs, message in [
      (dict(num_train=10**8), 'num_train: must be <= 200000'),
      (dict(num_train=0), 'num_train: must be >= 1'),
      (dict(dataset='mnist', num_train=50_001),
       'num_train: mnist has 50000 training images'),
      (dict(dataset='cifar10'), "dataset: 'cifar10' is not one of")]:
    with pytest.raises(ValueError, match=message) as info:
      data.DataConfig(**kwargs)
    assert '\n' not in str(info.value)
  config = data.DataConfig(num_train=30)
  ds = data.load(config, seed=5)
  np.testing.assert_array_equal(
      ds.train, data.load_dataset('synthetic', num_train=30, seed=5).train)


# TFDS code path (mocked), cache, errors.


def test_binarized_mnist_through_tfds(tmp_path, no_env):
  raw = {s: _images(n, 1, i) for i, (s, n) in enumerate(
      [('train', 6), ('validation', 3), ('test', 4)])}
  with _fake_tfds(tmp_path, 'binarized_mnist', raw):
    ds = data.load_dataset('binarized_mnist')
    test = data.load_split('binarized_mnist', 'test', num_examples=2)
  assert ds.binarization == 'fixed'
  for split in data.SPLITS:
    expected = raw[split].reshape(-1, 784).astype(np.float32)
    np.testing.assert_array_equal(ds.split(split), expected)
  np.testing.assert_array_equal(test, ds.test[:2])
  np.testing.assert_allclose(ds.pixel_mean, ds.train.mean(0))


def test_mnist_grey_levels_and_validation_split(tmp_path, no_env):
  raw = {'train': _images(10, 255, 0), 'test': _images(4, 255, 1)}
  with _fake_tfds(tmp_path, 'mnist', raw):
    ds = data.load_dataset('mnist', num_validation=3)
    valid = data.load_split('mnist', 'validation', num_validation=3)
    grey = data.load_dataset('mnist', num_validation=3,
                             dynamic_binarization=False)
  assert ds.binarization == 'dynamic' and grey.binarization == 'none'
  train = raw['train'].reshape(10, 784) / np.float32(255)
  np.testing.assert_allclose(ds.train, train[:7], rtol=1e-6)
  np.testing.assert_allclose(ds.validation, train[7:], rtol=1e-6)
  np.testing.assert_allclose(valid, train[7:], rtol=1e-6)
  np.testing.assert_allclose(ds.test * 255, raw['test'].reshape(4, 784),
                             rtol=1e-5)
  assert ds.train.dtype == np.float32 and ds.train.max() <= 1.0
  assert len(np.unique(ds.train)) > 100  # Grey levels, not binarized.


def test_cache_round_trip_without_tensorflow(tmp_path, monkeypatch, no_env):
  raw = {'train': _images(10, 255, 0), 'test': _images(4, 255, 1)}
  cache_dir = tmp_path / 'cache'
  with _fake_tfds(tmp_path, 'fashion_mnist', raw):
    ds = data.load_dataset('fashion_mnist', num_validation=2,
                           cache_dir=str(cache_dir))
  with np.load(cache_dir / 'fashion_mnist.npz') as npz:
    assert npz['train'].dtype == np.uint8
    np.testing.assert_array_equal(npz['train'], raw['train'].reshape(10, 784))

  _block_tensorflow(monkeypatch)
  monkeypatch.setenv(data.ENV_CACHE_DIR, str(cache_dir))
  cached = data.load_dataset('fashion_mnist', num_validation=2,
                             data_dir=str(tmp_path / 'nothing_here'))
  assert cached.binarization == ds.binarization == 'dynamic'
  for split in data.SPLITS:
    np.testing.assert_array_equal(cached.split(split), ds.split(split))
  np.testing.assert_array_equal(
      data.load_split('fashion_mnist', 'validation', num_validation=5),
      raw['train'][5:].reshape(5, 784) / np.float32(255))
  with pytest.raises(data.DataNotFoundError, match='VAE_DATA_CACHE'):
    data.load_dataset('mnist')  # No cache for it, and TFDS is blocked.


@pytest.mark.parametrize('content', [b'', b'PK\x03\x04 garbage', None])
def test_corrupt_cache_names_the_file_and_the_fix(tmp_path, no_env,
                                                  content):
  path = tmp_path / 'mnist.npz'
  if content is None:  # A valid npz of another dataset.
    np.savez(path, meta=np.array('{"format": 1, "name": "kmnist"}'))
  else:
    path.write_bytes(content)
  with pytest.raises(data.DataCorruptError) as info:
    data.load_dataset('mnist', cache_dir=str(tmp_path))
  message = str(info.value)
  assert '\n' not in message and str(path) in message
  assert 'delete it' in message
  assert isinstance(info.value, FileNotFoundError)  # One line at the CLI.


def test_missing_data_error_names_the_flags(tmp_path, no_env):
  pytest.importorskip('tensorflow_datasets')
  with pytest.raises(data.DataNotFoundError) as info:
    data.load_dataset('binarized_mnist', data_dir=str(tmp_path / 'empty'))
  message = str(info.value)
  assert '\n' not in message
  assert message.startswith('binarized_mnist not found')
  for hint in ('tfds_data_dir=DIR', 'VAE_TFDS_DATA_DIR', 'manual_dir=DIR',
               'VAE_MANUAL_DIR', '.amat'):
    assert hint in message
  assert not (tmp_path / 'empty').exists()  # Nothing downloaded or created.

  manual = tmp_path / 'manual'
  manual.mkdir()
  (manual / 'binarized_mnist_train.amat').write_text('0 1\n')
  with pytest.raises(data.DataNotFoundError,
                     match='binarized_mnist_valid.amat') as info:
    data.load_split('binarized_mnist', 'train', manual_dir=str(manual),
                    data_dir=str(tmp_path / 'prepared'))
  assert '\n' not in str(info.value)
  assert 'binarized_mnist_train.amat' not in str(info.value).split('lacks')[1]


@pytest.mark.skipif(not os.environ.get(data.ENV_TFDS_DATA_DIR),
                    reason=f'set {data.ENV_TFDS_DATA_DIR} for real data')
def test_real_binarized_mnist():
  ds = data.load_dataset('binarized_mnist')  # Found through the env var.
  assert ds.train.shape == (50_000, 784)
  assert ds.validation.shape == ds.test.shape == (10_000, 784)
  assert np.all((ds.train == 0) | (ds.train == 1))
  np.testing.assert_allclose(
      [ds.train.mean(), ds.validation.mean(), ds.test.mean()],
      [0.1306, 0.1311, 0.1325], atol=1e-4)


@pytest.mark.skipif(not os.environ.get(data.ENV_TFDS_DATA_DIR),
                    reason=f'set {data.ENV_TFDS_DATA_DIR} for real data')
def test_truncated_tfrecord_names_the_file(tmp_path, monkeypatch):
  source = os.path.join(os.environ[data.ENV_TFDS_DATA_DIR], 'binarized_mnist')
  shutil.copytree(source, tmp_path / 'binarized_mnist')
  monkeypatch.delenv(data.ENV_CACHE_DIR, raising=False)
  (shard,) = [p for p in (tmp_path / 'binarized_mnist').rglob('*test*')
              if 'tfrecord' in p.name]
  shard.write_bytes(shard.read_bytes()[:len(shard.read_bytes()) // 2])
  with pytest.raises(data.DataCorruptError) as info:
    data.load_dataset('binarized_mnist', data_dir=str(tmp_path))
  message = str(info.value)
  assert '\n' not in message and str(shard) in message
  assert 'manual_dir=DIR' in message


@pytest.mark.parametrize('content', ['garbage{', '[]'])
def test_garbage_dataset_info_names_the_file(tmp_path, no_env, content):
  pytest.importorskip('tensorflow_datasets')
  version = tmp_path / 'binarized_mnist' / '1.0.0'
  version.mkdir(parents=True)
  (version / 'dataset_info.json').write_text(content)
  with pytest.raises(data.DataCorruptError) as info:
    data.load_dataset('binarized_mnist', data_dir=str(tmp_path))
  message = str(info.value)
  assert '\n' not in message
  assert str(version / 'dataset_info.json') in message
  assert f'delete {tmp_path / "binarized_mnist"}' in message
  assert 'manual_dir=DIR' in message
