"""Image datasets as flat float32 arrays [N, 784] in [0, 1], and batching.

One loader, `load_dataset` (`load` takes a `DataConfig`; `load_split` is a
view of one split), and one batcher, `epoch_batches` (an epoch as an array
of batches for `lax.scan`, shuffled by (seed, epoch)).

Datasets (`DATASETS`):

* `binarized_mnist`: Larochelle & Murray's fixed binarization (TFDS splits
  train/validation/test = 50,000/10,000/10,000), values already 0/1.
* `mnist`, `fashion_mnist`: grey levels in [0, 1] meant for *dynamic*
  binarization: call `binarize(key, batch)` on every training batch. TFDS has
  no validation split for them, so the last `num_validation` (default 10,000)
  TFDS train images form the validation split.
* `synthetic`: small binary images of random bars, strokes, blobs and rings,
  generated from a seed; needs no files and no TensorFlow.

Real datasets are read through tensorflow-datasets, which is imported lazily,
only when a dataset has to be read from TFDS. Where they come from:

* `download=True` (setting `download`, flag `--download`): where the network
  allows it, TFDS downloads and prepares the dataset into `data_dir` (default
  ~/tensorflow_datasets) when it is not there yet; later reads need no
  network;
* `data_dir` / env `VAE_TFDS_DATA_DIR`: a TFDS data dir with the dataset
  already prepared (it is never downloaded unless `download=True`), e.g. one
  that an earlier `download=True` filled, or a copy of another machine's
  `<data dir>/binarized_mnist` folder;
* `manual_dir` / env `VAE_MANUAL_DIR`: the raw files (e.g. the `.amat` files),
  prepared by TFDS's own builder into the (writable) `data_dir`;
* `cache_dir` / env `VAE_DATA_CACHE`: `<cache_dir>/<name>.npz` holds the TFDS
  splits as uint8. It is written after a TFDS load and read, with numpy only,
  when it exists, so machines without TensorFlow can use it.

If none of them has the data, `DataNotFoundError` says, in one line, how to
download it and where to put it offline (and which flag to pass);
a cache or TFDS file that cannot be read raises `DataCorruptError` naming
the file and the fix (both are `FileNotFoundError`s: one line, no traceback
at the command line).
"""

import dataclasses
import functools
import glob
import json
import os
import zipfile
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from vae import config as cfg
from vae.types import Array, PRNGKey

DATASETS = ('binarized_mnist', 'mnist', 'fashion_mnist', 'synthetic')
SPLITS = ('train', 'validation', 'test')
IMAGE_SHAPE = (28, 28)
IMAGE_SIZE = 784

ENV_TFDS_DATA_DIR = 'VAE_TFDS_DATA_DIR'
ENV_MANUAL_DIR = 'VAE_MANUAL_DIR'
ENV_CACHE_DIR = 'VAE_DATA_CACHE'

Binarization = Literal['fixed', 'dynamic', 'none']

_CACHE_FORMAT = 1
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MNIST_FILES = ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz',
                't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz')


# Training images per dataset (mnist, fashion_mnist: 60,000 less the 10,000
# validation images); synthetic images are generated, up to MAX_SYNTHETIC.
TRAIN_SIZES = dict(binarized_mnist=50_000, mnist=50_000, fashion_mnist=50_000,
                   synthetic=2_000)
MAX_SYNTHETIC = 200_000


class DataNotFoundError(FileNotFoundError):
  """A dataset is in none of the places the loader was told to look."""


class DataCorruptError(DataNotFoundError):
  """A data file exists but cannot be read (names the file and the fix)."""


@cfg.settings
class DataPaths:
  """Where the data of a real dataset is, and whether TFDS may download it
  (see the module docstring)."""
  download: bool = cfg.setting(
      False, 'Let TFDS download and prepare the dataset into tfds_data_dir '
      '(default ~/tensorflow_datasets) if it is not there (needs the '
      'network; once there, later runs need none).')
  tfds_data_dir: str | None = cfg.setting(
      None, 'TFDS data dir with the dataset prepared (default: env '
      f'{ENV_TFDS_DATA_DIR}).', text=True)
  manual_dir: str | None = cfg.setting(
      None, 'Folder with the raw files for TFDS to prepare (default: env '
      f'{ENV_MANUAL_DIR}).', text=True)
  data_cache_dir: str | None = cfg.setting(
      None, 'Folder of a numpy cache <name>.npz of the dataset, read if '
      f'present, written after a TFDS read (default: env {ENV_CACHE_DIR}).',
      text=True)


@cfg.settings
class DataConfig:
  """Which images to train on, and where they are."""
  dataset: str = cfg.setting(
      'synthetic', 'Dataset; mnist and fashion_mnist are binarized '
      'dynamically (a new draw per batch).', choices=DATASETS)
  num_train: int | None = cfg.setting(
      None, 'Use the first num_train training images (default: all; '
      f'synthetic: {TRAIN_SIZES["synthetic"]}).', min=1, max=MAX_SYNTHETIC)
  paths: DataPaths = DataPaths()

  def check(self):
    """num_train ≤ the images the dataset has."""
    most = MAX_SYNTHETIC if self.dataset == 'synthetic' else TRAIN_SIZES[
        self.dataset]
    if self.num_train is not None and self.num_train > most:
      raise ValueError(f'num_train: {self.dataset} has {most} training '
                       f'images, got {self.num_train}.')

  @property
  def train_size(self) -> int:
    """The number of training images `load` returns."""
    return self.num_train or TRAIN_SIZES[self.dataset]


@dataclasses.dataclass(frozen=True)
class _TfdsSpec:
  splits: tuple[str, ...]  # The TFDS splits.
  max_value: int  # Pixel value that maps to 1.0.
  binarization: Binarization
  manual_files: tuple[str, ...]


_TFDS = {
    'binarized_mnist': _TfdsSpec(
        ('train', 'validation', 'test'), 1, 'fixed',
        tuple(f'binarized_mnist_{s}.amat' for s in ('train', 'valid', 'test'))),
    'mnist': _TfdsSpec(('train', 'test'), 255, 'dynamic', _MNIST_FILES),
    'fashion_mnist': _TfdsSpec(('train', 'test'), 255, 'dynamic',
                               _MNIST_FILES),
}


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """All three splits of a dataset, each float32 [N, 784] in [0, 1].

  Attributes:
    name: the dataset name, one of `DATASETS`.
    train: training images.
    validation: validation images.
    test: test images.
    binarization: 'fixed' (values are already 0/1), 'dynamic' (grey levels:
      draw `binarize(key, batch)` for every batch) or 'none' (grey levels meant
      to be used as they are).
  """
  name: str
  train: np.ndarray
  validation: np.ndarray
  test: np.ndarray
  binarization: Binarization

  def split(self, split: str) -> np.ndarray:
    """Returns the images of `split` ('train', 'validation' or 'test')."""
    _check_split(split)
    return getattr(self, split)

  @property
  def pixel_mean(self) -> np.ndarray:
    """Mean of each pixel over the training set, float32 [784]."""
    return self.train.mean(axis=0, dtype=np.float64).astype(np.float32)


def load(config: DataConfig, seed: int = 0) -> Dataset:
  """`load_dataset` with the settings of `config` (synthetic images: `seed`)."""
  return load_dataset(config.dataset, data_dir=config.paths.tfds_data_dir,
                      manual_dir=config.paths.manual_dir,
                      cache_dir=config.paths.data_cache_dir,
                      download=config.paths.download,
                      num_train=config.num_train, seed=seed)


def load_dataset(name: str, *, data_dir: str | None = None,
                 manual_dir: str | None = None, cache_dir: str | None = None,
                 download: bool = False, dynamic_binarization: bool = True,
                 num_train: int | None = None,
                 num_validation: int | None = None,
                 num_test: int | None = None, seed: int = 0) -> Dataset:
  """Loads all splits of dataset `name`.

  Args:
    name: one of `DATASETS`.
    data_dir: TFDS data dir; defaults to env `VAE_TFDS_DATA_DIR`, then to
      TFDS's own default (~/tensorflow_datasets).
    manual_dir: directory with the raw files to prepare the dataset from;
      defaults to env `VAE_MANUAL_DIR`.
    cache_dir: directory of the numpy cache `<name>.npz`; defaults to env
      `VAE_DATA_CACHE`; None: no cache.
    download: let TFDS download and prepare the dataset into `data_dir` if
      it is not prepared there (needs the network; a failed download is a
      `DataNotFoundError`).
    dynamic_binarization: for grey-level datasets, whether they are meant to
      be binarized per batch ('dynamic') or used as they are ('none').
    num_train: keep the first `num_train` training images; None: all (the
      `synthetic` default is 2,000).
    num_validation: size of the validation split; None: the default (10,000;
      `synthetic`: 500). For `mnist` and `fashion_mnist` these are the last
      TFDS train images, which are then not in `train`.
    num_test: keep the first `num_test` test images; None: all (`synthetic`:
      500).
    seed: seed of the `synthetic` images; unused for the other datasets.

  Returns:
    The `Dataset`.

  Raises:
    DataNotFoundError: the data is in none of the given places (and not
      downloaded): one line naming `download=True` and the offline places.
  """
  sizes = dict(train=num_train, validation=num_validation, test=num_test)
  if name == 'synthetic':
    splits = {s: _synthetic_split(s, sizes[s], seed) for s in SPLITS}
    return Dataset(name=name, binarization='fixed', **splits)
  spec = _spec(name)
  raw = _load_raw(name, spec.splits, data_dir=data_dir, manual_dir=manual_dir,
                  cache_dir=cache_dir, download=download)
  splits = _split_raw(raw, spec, sizes)
  binarization = spec.binarization
  if binarization == 'dynamic' and not dynamic_binarization:
    binarization = 'none'
  return Dataset(name=name, binarization=binarization,
                 **{s: _to_float(x, spec.max_value) for s, x in splits.items()})


def load_split(name: str, split: str, *, num_examples: int | None = None,
               **kwargs) -> np.ndarray:
  """The images of one split of `load_dataset(name, **kwargs)`, float32.

  x = load_dataset(name, **kwargs).split(split)[:num_examples].
  """
  _check_split(split)
  if name == 'synthetic' and num_examples is not None:
    kwargs = {**kwargs, f'num_{"train" if split == "train" else split}':
              num_examples}
  return load_dataset(name, **kwargs).split(split)[:num_examples]


def binarize(key_or_seed: PRNGKey | int,
             images: Array | np.ndarray) -> Array:
  """Draws binary images with P(pixel = 1) = grey level (pure, jittable).

  Args:
    key_or_seed: a JAX PRNG key, or an int seed.
    images: grey levels in [0, 1], any shape.

  Returns:
    0/1 images, float32 (or the floating dtype of `images`), same shape.
  """
  key = key_or_seed
  if isinstance(key_or_seed, (int, np.integer)):
    key = jax.random.PRNGKey(int(key_or_seed))
  images = jnp.asarray(images)
  dtype = images.dtype if jnp.issubdtype(images.dtype,
                                         jnp.floating) else jnp.float32
  return jax.random.bernoulli(key, images).astype(dtype)


@functools.partial(jax.jit, static_argnums=0)
def epoch_permutation(num_examples: int, seed: int | Array,
                      epoch: int | Array) -> Array:
  """The order of the examples in epoch `epoch` (jitted; seed, epoch traced).

  Args:
    num_examples: number of examples (static).
    seed: shuffling seed.
    epoch: epoch number; each epoch has its own order.

  Returns:
    int32 [num_examples], a permutation of range(num_examples).
  """
  key = jax.random.fold_in(jax.random.PRNGKey(seed), epoch)
  return jax.random.permutation(key, num_examples)


def epoch_indices(num_examples: int, batch_size: int, seed: int | Array,
                  epoch: int | Array) -> Array:
  """The example indices of epoch `epoch`'s batches, [N // B, B] (int32).

  Batch t holds π[tB:(t+1)B] of π = `epoch_permutation(N, seed, epoch)`; the
  last N mod B examples of the order are dropped.
  """
  num_batches = _num_batches(num_examples, batch_size)
  return epoch_permutation(num_examples, seed, epoch)[
      :num_batches * batch_size].reshape(num_batches, batch_size)


def _num_batches(num_examples: int, batch_size: int) -> int:
  if num_examples < batch_size:
    raise ValueError(f'batch_size {batch_size} > {num_examples} examples')
  return num_examples // batch_size


@functools.partial(jax.jit, static_argnames=('batch_size', 'shuffle'))
def epoch_batches(images: Array, batch_size: int, seed: int | Array,
                  epoch: int | Array, *, shuffle: bool = True) -> Array:
  """One epoch as an array of batches, for `lax.scan` (jitted).

  The last `len(images) % batch_size` examples of the epoch's order are
  dropped; they differ from epoch to epoch when shuffling.

  Args:
    images: [N, ...] examples.
    batch_size: examples per batch (static).
    seed: shuffling seed.
    epoch: epoch number.
    shuffle: if False, keep the order of `images`.

  Returns:
    [N // batch_size, batch_size, ...] array.
  """
  images = jnp.asarray(images)
  if shuffle:
    images = jnp.take(images, epoch_indices(
        images.shape[0], batch_size, seed, epoch).reshape(-1), axis=0)
  else:
    images = images[:_num_batches(images.shape[0], batch_size) * batch_size]
  return images.reshape((-1, batch_size) + images.shape[1:])


def synthetic_images(num_examples: int, seed: int = 0, *, stream: int = 0,
                     max_shapes: int = 3) -> np.ndarray:
  """Binary 28x28 images of 1 to `max_shapes` random bars/strokes/blobs/rings.

  Each shape is a capsule (the points within a radius of a segment):
  horizontal and vertical bars, strokes at any angle, filled discs, or rings.
  Images come in blocks of 256 with their own seeds, so the first m of n
  images do not depend on n.

  Args:
    num_examples: number of images.
    seed: images are a deterministic function of (seed, stream).
    stream: independent streams for one seed (the splits use 0, 1, 2).
    max_shapes: most shapes in one image.

  Returns:
    float32 [num_examples, 784] of 0/1.
  """
  blocks = [_synthetic_block(np.random.default_rng([seed, stream, i]),
                             max_shapes)
            for i in range(-(-num_examples // _BLOCK))]
  if not blocks:
    return np.zeros((0, IMAGE_SIZE), np.float32)
  return np.concatenate(blocks)[:num_examples]


def _synthetic_split(split: str, num_examples: int | None,
                     seed: int) -> np.ndarray:
  if num_examples is None:
    num_examples = _SYNTHETIC_SIZES[split]
  return synthetic_images(num_examples, seed=seed, stream=SPLITS.index(split))


_SYNTHETIC_SIZES = dict(train=2000, validation=500, test=500)
_BLOCK = 256
_ROWS, _COLS = (g.ravel().astype(np.float32) for g in np.meshgrid(
    np.arange(28), np.arange(28), indexing='ij'))


def _synthetic_block(rng: np.random.Generator, k: int) -> np.ndarray:
  """`_BLOCK` images of `synthetic_images`, float32 [_BLOCK, 784]."""
  shape = (_BLOCK, k, 1)  # Broadcasts against the 784 pixels.
  kind = rng.integers(0, 5, size=shape)  # hbar, vbar, stroke, disc, ring.
  active = np.arange(k)[:, None] < rng.integers(1, k + 1, size=(_BLOCK, 1, 1))
  center_row, center_col = rng.uniform(6.0, 21.0, size=(2,) + shape)
  half_length = np.where(kind < 3, rng.uniform(4.0, 9.0, size=shape), 0.0)
  angle = np.select([kind == 0, kind == 1], [0.0, np.pi / 2],
                    rng.uniform(0.0, np.pi, size=shape))
  radius = np.select([kind == 3, kind == 4],
                     [rng.uniform(2.5, 5.0, size=shape),
                      rng.uniform(4.0, 7.0, size=shape)],
                     rng.uniform(0.8, 1.5, size=shape)).astype(np.float32)
  # Segment from start to start + (d_row, d_col); distances of all pixels.
  d_row = (2 * half_length * np.sin(angle)).astype(np.float32)
  d_col = (2 * half_length * np.cos(angle)).astype(np.float32)
  rel_row = _ROWS - (center_row - d_row / 2).astype(np.float32)
  rel_col = _COLS - (center_col - d_col / 2).astype(np.float32)
  t = np.clip((rel_row * d_row + rel_col * d_col)
              / np.maximum(d_row**2 + d_col**2, 1e-6), 0.0, 1.0)
  dist = np.hypot(rel_row - t * d_row, rel_col - t * d_col)
  inside = np.where(kind == 4, np.abs(dist - radius) <= 0.9, dist <= radius)
  return (inside & active).any(axis=1).astype(np.float32)


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f'unknown split {split!r}; expected one of {SPLITS}')


def _spec(name: str) -> _TfdsSpec:
  if name not in _TFDS:
    raise ValueError(f'unknown dataset {name!r}; expected one of {DATASETS}')
  return _TFDS[name]


def _to_float(images: np.ndarray, max_value: int) -> np.ndarray:
  images = images.astype(np.float32)
  if max_value != 1:
    images /= max_value
  return images


def _split_raw(raw: dict[str, np.ndarray], spec: _TfdsSpec,
               sizes: dict[str, int | None]) -> dict[str, np.ndarray]:
  """Maps TFDS splits (uint8) to our three splits, truncated to `sizes`."""
  out = dict(raw)
  if 'validation' not in spec.splits and 'train' in raw:
    n_valid = 10_000 if sizes['validation'] is None else sizes['validation']
    train = raw['train']
    if not 0 <= n_valid < len(train):
      raise ValueError(f'num_validation={n_valid} must be in [0, '
                       f'{len(train)}) for {len(train)} train images')
    out['train'], out['validation'] = np.split(train, [len(train) - n_valid])
  return {s: x if sizes[s] is None else x[:sizes[s]] for s, x in out.items()
          if s in sizes}


def _resolve_dir(value: str | None, env: str) -> str | None:
  """`value`, else env var `env`; relative paths also tried at repo root."""
  value = value or os.environ.get(env) or None
  if value is None:
    return None
  value = os.path.expanduser(value)
  if not os.path.isabs(value) and not os.path.exists(value):
    at_root = os.path.join(_REPO_ROOT, value)
    if os.path.exists(at_root):
      return at_root
  return value


def _load_raw(name: str, splits: tuple[str, ...], *, data_dir: str | None,
              manual_dir: str | None, cache_dir: str | None,
              download: bool) -> dict[str, np.ndarray]:
  """TFDS splits as uint8 [N, 784], from the cache or else from TFDS."""
  cache_dir = _resolve_dir(cache_dir, ENV_CACHE_DIR)
  data_dir = _resolve_dir(data_dir, ENV_TFDS_DATA_DIR)
  manual_dir = _resolve_dir(manual_dir, ENV_MANUAL_DIR)
  cache_path = cache_dir and os.path.join(cache_dir, f'{name}.npz')
  if cache_path and os.path.exists(cache_path):
    return _read_cache(cache_path, name)
  raw = _read_tfds(name, splits, data_dir=data_dir, manual_dir=manual_dir,
                   download=download)
  if cache_path:
    _write_cache(cache_path, name, raw)
  return raw


def _read_cache(path: str, name: str) -> dict[str, np.ndarray]:
  """The splits in the cache `path`; DataCorruptError if it is unreadable."""
  try:
    if not zipfile.is_zipfile(path):
      raise ValueError('not an .npz (zip) file')
    with np.load(path, allow_pickle=False) as npz:
      meta = json.loads(str(npz['meta']))
      if meta.get('format') != _CACHE_FORMAT or meta.get('name') != name:
        raise ValueError(f'it holds {meta}')
      out = {s: npz[s] for s in meta['splits']}
  except Exception as e:  # pylint: disable=broad-except
    # zipfile, zlib, json and numpy each raise their own errors.
    detail = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise DataCorruptError(
        f'{path} is not a readable cache of {name} ({detail}); delete it '
        'and it is written again from TFDS on the next read.') from None
  for split, images in out.items():
    if images.ndim != 2 or images.shape[1] != IMAGE_SIZE:
      raise DataCorruptError(f'{path}: split {split} has shape '
                             f'{images.shape}; delete the file.')
  return out


def _write_cache(path: str, name: str, raw: dict[str, np.ndarray]) -> None:
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  meta = dict(format=_CACHE_FORMAT, name=name, splits=sorted(raw),
              max_value=_TFDS[name].max_value)
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'wb') as f:
    # numpy's stub cannot tell that no split is named allow_pickle.
    np.savez_compressed(f, meta=np.array(json.dumps(meta)),
                        **raw)  # type: ignore[arg-type]
  os.replace(tmp, path)  # Atomic: readers never see a partial file.


def _not_found(name: str, detail: str, downloaded: bool = False) -> str:
  """The one line of a missing dataset: how to download it (unless that
  was just tried) and where to put it offline."""
  files = ('the .amat files' if name == 'binarized_mnist'
           else ', '.join(_TFDS[name].manual_files))
  download = '' if downloaded else (
      'where the network allows it, set download=True (flag --download) and '
      'TFDS downloads it into tfds_data_dir; ')
  return (f'{name} not found ({detail}): {download}offline, set '
          f'tfds_data_dir=DIR (or '
          f'{ENV_TFDS_DATA_DIR}) where DIR/{name} is prepared (e.g. copied '
          'from another TFDS data dir), or '
          f'manual_dir=DIR (or {ENV_MANUAL_DIR}) with {files} and a '
          f'writable tfds_data_dir, or data_cache_dir=DIR (or '
          f'{ENV_CACHE_DIR}) holding {name}.npz')


def _import_tfds(name: str):
  """Imports TF and TFDS quietly, keeping TF off the GPUs (JAX's memory)."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  # oneDNN only changes TF's float round-off, which reading images does not
  # use; off, TF prints no notice about it on stderr.
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataNotFoundError(_not_found(
        name, f'tensorflow-datasets cannot be imported ({e}) and there '
        'is no numpy cache')) from None
  tf.get_logger().setLevel('ERROR')
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TF already initialised its devices.
    pass
  return tf, tfds


def _is_json_object(path: str) -> bool:
  try:
    with open(path, encoding='utf-8') as f:
      return isinstance(json.load(f), dict)
  except (OSError, ValueError):
    return False


def _read_tfds(name: str, splits: tuple[str, ...], *, data_dir: str | None,
               manual_dir: str | None,
               download: bool) -> dict[str, np.ndarray]:
  """Reads `splits` through TFDS, preparing from `manual_dir` if needed."""
  tf, tfds = _import_tfds(name)
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # pylint: disable=broad-except
    # A garbage dataset_info.json (or features.json): TFDS raises a
    # ParseError, AssertionError, ... with a long traceback.
    root = os.path.join(data_dir or os.environ.get('TFDS_DATA_DIR') or
                        os.path.expanduser('~/tensorflow_datasets'), name)
    infos = sorted(glob.glob(os.path.join(root, '*', '*.json')))
    if not infos:
      raise
    infos = ([f for f in infos if not _is_json_object(f)] or
             [f for f in infos if f.endswith('dataset_info.json')] or infos)
    detail = (str(e).strip().splitlines() or [type(e).__name__])[-1]
    detail = detail.rsplit('}": ', 1)[-1].rstrip('.')  # TFDS's preamble.
    raise DataCorruptError(
        f'{name}: cannot read {", ".join(infos)} ({detail[:200]}); '
        f'prepare it again: delete {root} and set manual_dir=DIR with '
        f'{", ".join(_TFDS[name].manual_files)}.') from None
  if not (builder.data_path / 'dataset_info.json').exists():
    if manual_dir:
      missing = [f for f in _TFDS[name].manual_files
                 if not os.path.exists(os.path.join(manual_dir, f))]
      if missing:
        raise DataNotFoundError(_not_found(
            name, f'manual_dir {manual_dir} lacks {missing}'))
      builder.download_and_prepare(download_config=tfds.download.
                                   DownloadConfig(manual_dir=manual_dir))
    elif download:
      try:
        builder.download_and_prepare()
      except Exception as e:  # pylint: disable=broad-except
        # No network: TFDS raises its own errors, with long tracebacks.
        detail = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        detail = detail if len(detail) <= 200 else detail[:197] + '...'
        raise DataNotFoundError(_not_found(
            name, f'downloading it into {builder.data_dir} failed: {detail}',
            downloaded=True)) from None
    else:
      raise DataNotFoundError(_not_found(
          name, f'nothing prepared at {builder.data_dir}'))
  out = {}
  for split in splits:
    ds = builder.as_dataset(split=split, shuffle_files=False,
                            read_config=tfds.ReadConfig(try_autocache=False))
    ds = ds.map(lambda ex: tf.reshape(ex['image'], [IMAGE_SIZE])).batch(10_000)
    try:
      batches = list(tfds.as_numpy(ds))
    except tf.errors.OpError as e:  # E.g. DataLossError: truncated record.
      files = ', '.join(os.path.join(builder.data_path, f) for f in
                        builder.info.splits[split].filenames)
      raise DataCorruptError(
          f'{name}: cannot read {files} ({e.message.splitlines()[0]}); '
          f'prepare it again: delete {builder.data_path} and set '
          f'manual_dir=DIR with {", ".join(_TFDS[name].manual_files)}.'
      ) from None
    out[split] = (np.concatenate(batches) if batches
                  else np.zeros((0, IMAGE_SIZE), np.uint8))
  return out
