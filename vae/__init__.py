"""vae: variational autoencoders and Monte Carlo gradient estimators in JAX.

The public API (docs/library.md shows it in use):

  vae.distributions   Normal, MultivariateNormal, Bernoulli, Categorical,
                      relaxed ones (pytrees: sample, log_prob); vae.kl
  vae.objectives      elbo, elbo_mc_kl, iwae_bound, surrogate_objective
  vae.model           Model (prior, encoder, decoder: the model interface),
                      log-weights, bounds and surrogates of any model
  vae.estimators      get(name) -> estimator(function, params,
                      dist_builder, key, num_samples) -> grads; names()
  vae.models          networks and the image / belief-net / Gaussian VAEs
  vae.optim, vae.train, vae.evaluate   the optax step, the epoch trainer
                      (train.train), the evaluation (evaluate.evaluate)
  vae.importance      importance_sampling (log p(x), bounds, their errors)
  vae.moments         moments: the chunked gradient-moment routine
  vae.compare         estimators compared on your cost, per second too
  vae.problems        toys with exact answers

Also at the top (the same objects): Model, Normal, MultivariateNormal,
Bernoulli, Categorical, elbo, iwae_bound, surrogate_objective,
importance_sampling, compare.
"""

__version__ = '0.1.0'

# Loaded on first use (PEP 562), so that `import vae.estimators` stays the
# maths core alone (tests/test_registry.py); a type checker reads the
# imports below.
import importlib
from typing import TYPE_CHECKING, Any

SUBMODULES = ('ais', 'analysis', 'checkpoint', 'comparison', 'config', 'data',
              'distributions', 'estimators', 'evaluate', 'importance', 'kl',
              'model', 'models', 'moments', 'objectives', 'optim', 'problems',
              'stats', 'train', 'types')
NAMES = {'Model': 'model', 'Normal': 'distributions',
         'MultivariateNormal': 'distributions', 'Bernoulli': 'distributions',
         'Categorical': 'distributions', 'elbo': 'objectives',
         'iwae_bound': 'objectives', 'surrogate_objective': 'objectives',
         'importance_sampling': 'importance', 'compare': 'comparison'}
__all__ = sorted(SUBMODULES + tuple(NAMES))


def __getattr__(name: str) -> Any:
  if name in SUBMODULES:
    return importlib.import_module(f'vae.{name}')
  if name in NAMES:
    return getattr(importlib.import_module(f'vae.{NAMES[name]}'), name)
  raise AttributeError(f'module vae has no attribute {name!r}')


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
  # pylint: disable=g-import-not-at-top,useless-import-alias
  from vae import ais as ais
  from vae import analysis as analysis
  from vae import checkpoint as checkpoint
  from vae import comparison as comparison
  from vae import config as config
  from vae import data as data
  from vae import distributions as distributions
  from vae import estimators as estimators
  from vae import evaluate as evaluate
  from vae import importance as importance
  from vae import kl as kl
  from vae import model as model
  from vae import models as models
  from vae import moments as moments
  from vae import objectives as objectives
  from vae import optim as optim
  from vae import problems as problems
  from vae import stats as stats
  from vae import train as train
  from vae import types as types
  from vae.comparison import compare as compare
  from vae.distributions import Bernoulli as Bernoulli
  from vae.distributions import Categorical as Categorical
  from vae.distributions import MultivariateNormal as MultivariateNormal
  from vae.distributions import Normal as Normal
  from vae.importance import importance_sampling as importance_sampling
  from vae.model import Model as Model
  from vae.objectives import elbo as elbo
  from vae.objectives import iwae_bound as iwae_bound
  from vae.objectives import surrogate_objective as surrogate_objective
