"""`download=True` (`--download`): TFDS downloads and prepares a dataset that
is not there; without it, a missing dataset is one line naming both ways.
TFDS's download is replaced by a fake here: no network is used."""

import os

import numpy as np
import pytest

from vae import data


@pytest.fixture
def no_env(monkeypatch):
  for var in (data.ENV_TFDS_DATA_DIR, data.ENV_MANUAL_DIR,
              data.ENV_CACHE_DIR):
    monkeypatch.delenv(var, raising=False)


@pytest.fixture
def fake_download(monkeypatch):
  """Replaces TFDS's download_and_prepare of binarized_mnist: it writes the
  dataset's metadata (as a prepared dataset has) and records its call; the
  splits read back are small arrays. Returns the list of calls."""
  tf = pytest.importorskip('tensorflow')
  tfds = pytest.importorskip('tensorflow_datasets')
  rng = np.random.default_rng(0)
  splits = {s: rng.integers(0, 2, (n, 28, 28, 1), dtype=np.uint8)
            for s, n in (('train', 6), ('validation', 3), ('test', 4))}
  calls = []
  cls = type(tfds.builder('binarized_mnist', data_dir=os.devnull))

  def download_and_prepare(self, *args, **kwargs):
    calls.append((str(self.data_dir), args, kwargs))
    os.makedirs(self.data_path)
    self.info.write_to_directory(self.data_path)

  def as_dataset(self, split, *args, **kwargs):
    del self, args, kwargs
    return tf.data.Dataset.from_tensor_slices({'image': splits[str(split)]})

  monkeypatch.setattr(cls, 'download_and_prepare', download_and_prepare)
  monkeypatch.setattr(cls, 'as_dataset', as_dataset)
  return calls, splits


def test_download_prepares_it_into_tfds_data_dir(tmp_path, no_env,
                                                 fake_download):
  calls, splits = fake_download
  target = tmp_path / 'data' / 'tensorflow_datasets'
  config = data.DataConfig(dataset='binarized_mnist', paths=data.DataPaths(
      tfds_data_dir=str(target), download=True))
  ds = data.load(config)
  (called,) = calls  # Downloaded once, into target.
  assert called[0].startswith(str(target / 'binarized_mnist') + os.sep)
  np.testing.assert_array_equal(
      ds.test, splits['test'].reshape(4, 784).astype(np.float32))
  # Prepared now: the next read, without download, needs no download.
  again = data.load(data.DataConfig(dataset='binarized_mnist', paths=(
      data.DataPaths(tfds_data_dir=str(target)))))
  assert len(calls) == 1
  np.testing.assert_array_equal(again.train, ds.train)


def test_without_download_a_missing_dataset_is_one_line_naming_both_ways(
    tmp_path, no_env, fake_download):
  calls, _ = fake_download
  config = data.DataConfig(dataset='binarized_mnist', paths=data.DataPaths(
      tfds_data_dir=str(tmp_path / 'empty')))
  with pytest.raises(data.DataNotFoundError) as info:
    data.load(config)
  message = str(info.value)
  assert '\n' not in message and not calls
  assert message.startswith('binarized_mnist not found (nothing prepared at')
  for way in ('download=True (flag --download)', 'tfds_data_dir=DIR',
              data.ENV_TFDS_DATA_DIR):
    assert way in message, way
  assert not (tmp_path / 'empty').exists()


def test_a_failed_download_is_one_line(tmp_path, no_env, monkeypatch,
                                       fake_download):
  tfds = pytest.importorskip('tensorflow_datasets')
  cls = type(tfds.builder('binarized_mnist', data_dir=os.devnull))

  def offline(self, *args, **kwargs):
    raise ConnectionError('Failed to establish a new connection:\n'
                          '[Errno -3] Temporary failure in name resolution')
  monkeypatch.setattr(cls, 'download_and_prepare', offline)
  with pytest.raises(data.DataNotFoundError) as info:
    data.load_dataset('binarized_mnist', data_dir=str(tmp_path),
                      download=True)
  message = str(info.value)
  assert '\n' not in message
  assert f'downloading it into {tmp_path / "binarized_mnist"}' in message
  assert 'failed: [Errno -3] Temporary failure' in message
  assert 'tfds_data_dir=DIR' in message and '--download' not in message


def test_download_may_change_when_a_run_resumes():
  # Like the other data locations: it changes where the data comes from,
  # not what is computed.
  from experiments.common import outputs  # pylint: disable=g-import-not-at-top
  differences = outputs._differences  # pylint: disable=protected-access
  assert differences({'data.paths.download': False, 'data.dataset': 'a'},
                     {'data.paths.download': True, 'data.dataset': 'a'},
                     ()) == []
  assert differences({'data.dataset': 'a'}, {'data.dataset': 'b'}, ()) == [
      "data.dataset='a' now 'b'"]


def test_every_loader_passes_download_through(monkeypatch):
  """The experiments' loaders (data.load and discrete_latents' own) hand
  the download setting to load_dataset."""
  from vae.analysis import discrete_latents  # pylint: disable=import-outside-toplevel
  seen = []

  def fake_load(name, **kwargs):
    seen.append(kwargs['download'])
    raise data.DataNotFoundError('stop here')

  monkeypatch.setattr(data, 'load_dataset', fake_load)
  config = data.DataConfig(dataset='binarized_mnist',
                           paths=data.DataPaths(download=True))
  for load in (lambda: data.load(config),
               lambda: discrete_latents.binary_images(config, 10)):
    with pytest.raises(data.DataNotFoundError):
      load()
  assert seen == [True, True]
