"""Comparing discrete-latent estimators on a sigmoid belief net.

Each estimator e trains the same initial parameters with its own number of
decoder evaluations K_e per example (`sigmoid_belief_net.
samples_per_estimator`), and at fixed parameters its encoder gradient's
variance (and bias against the pooled unbiased estimators with the same
K) is measured by `vae_gradients.bernoulli_encoder_records`.
"""

from typing import Any

import jax.numpy as jnp
import optax

from vae import data as data_lib
from vae import types
from vae.analysis import vae_gradients
from vae.models import gaussian_vae
from vae.models import sigmoid_belief_net as sbn

Array = types.Array
PRNGKey = types.PRNGKey
Record = dict[str, Any]


def binary_images(config: data_lib.DataConfig, num_test: int,
                  seed: int = 0) -> tuple[Array, Array]:
  """(training images, the first `num_test` test images), 0/1 float32.

  A fixed binarization is kept; grey levels x are binarized once,
  b ~ Bernoulli(x) with key 0 (`data.binarize`).
  """
  paths = config.paths
  ds = data_lib.load_dataset(
      config.dataset, data_dir=paths.tfds_data_dir, seed=seed,
      manual_dir=paths.manual_dir, cache_dir=paths.data_cache_dir,
      num_train=config.num_train, num_validation=1, num_test=num_test)
  return tuple(jnp.asarray(x if ds.binarization == 'fixed' else
                           data_lib.binarize(0, x))
               for x in (ds.train, ds.test))


def train_estimators(train_x: Array, test_x: Array, params: sbn.Params,
                     samples: dict[str, int],
                     optimizer: optax.GradientTransformation, key: PRNGKey,
                     **options) -> tuple[list[Record], dict[str, Any]]:
  """`sbn.train_and_evaluate` from `params` for each estimator e in turn.

  Every estimator gets the same key (so the same minibatches) and
  num_samples = samples[e] (K_e); `options` are the other keyword
  arguments of `train_and_evaluate`.

  Returns:
    (the records of all estimators, {estimator: final train.TrainState}).
  """
  records, states = [], {}
  for name, k in samples.items():
    curve, states[name] = sbn.train_and_evaluate(
        train_x, test_x, params, name, optimizer, key, num_samples=k,
        **options)
    records += curve
  return records, states


def encoder_variance_records(points: dict[str, tuple[sbn.Params, Array]],
                             x: Array, samples: dict[str, int],
                             temperature: float, key: PRNGKey,
                             num_draws: int) -> list[Record]:
  """Encoder-gradient statistics of each estimator at each point.

  `vae_gradients.bernoulli_encoder_records` once per distinct K (the bias
  reference pools the unbiased estimators with the same K), the rows
  ordered by point, then by estimator as in `samples`, each with
  variance_per_parameter = Σ_j Var[ĝ_j] / P (P encoder parameters: the
  mean per-component variance).
  """
  names = list(samples)
  records = []
  for k in dict.fromkeys(samples.values()):
    records += vae_gradients.bernoulli_encoder_records(
        points, x, [n for n in names if samples[n] == k], k, temperature,
        key, num_draws)
  params = next(iter(points.values()))[0]
  size = gaussian_vae.num_params(params['encoder'])
  return sorted(({**r, 'variance_per_parameter': r['total_variance'] / size}
                 for r in records), key=lambda r: (
                     list(points).index(r['at']),
                     names.index(r['estimator'])))
