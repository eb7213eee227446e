"""Every gradient estimator for E_q[f], by name, with what it promises.

`ESTIMATORS[name]` is an `EstimatorInfo`; `info.fn` has the common signature
`(function, params, dist_builder, key, num_samples) -> grads`. The IWAE
encoder estimators (STL, DReG, VIMCO) estimate a different target and are
listed in `vae.objectives.ESTIMATORS_FOR`.
"""

import dataclasses
import functools
from typing import Callable

from vae.estimators import control_variates
from vae.estimators import discrete
from vae.estimators import core
from vae import types


@dataclasses.dataclass(frozen=True)
class EstimatorInfo:
  """An estimator and its properties.

  Attributes:
    name: registry name.
    fn: the estimator, common signature.
    surrogate: the surrogate objective it is the gradient of.
    unbiased: whether E[estimate] = ∇ E_q[f] exactly.
    needs_differentiable_f: whether f must be differentiable in z.
    needs_reparameterization: whether q must be reparameterizable.
    latents: 'continuous', 'discrete' or 'any'.
    min_samples: smallest valid num_samples.
  """
  name: str
  fn: types.GradientEstimator
  surrogate: Callable
  unbiased: bool
  needs_differentiable_f: bool
  needs_reparameterization: bool
  latents: str
  min_samples: int = 1


def _info(name, surrogate, **kwargs) -> EstimatorInfo:
  return EstimatorInfo(name=name,
                       fn=core.gradient_from_surrogate(surrogate),
                       surrogate=surrogate, **kwargs)


ESTIMATORS: dict[str, EstimatorInfo] = {
    info.name: info for info in [
        _info('pathwise', core.pathwise_surrogate, unbiased=True,
              needs_differentiable_f=True, needs_reparameterization=True,
              latents='continuous'),
        _info('score', core.score_function_surrogate, unbiased=True,
              needs_differentiable_f=False, needs_reparameterization=False,
              latents='any'),
        _info('score_mean_baseline', control_variates.cost_at_mean_surrogate,
              unbiased=True, needs_differentiable_f=False,
              needs_reparameterization=False, latents='any'),
        _info('score_rloo', core.leave_one_out_surrogate, unbiased=True,
              needs_differentiable_f=False, needs_reparameterization=False,
              latents='any', min_samples=2),
        _info('score_delta', control_variates.delta_method_surrogate,
              unbiased=True, needs_differentiable_f=True,
              needs_reparameterization=False, latents='continuous'),
        _info('measure_valued', core.measure_valued_surrogate,
              unbiased=True, needs_differentiable_f=False,
              needs_reparameterization=False, latents='continuous'),
        _info('gumbel_softmax', discrete.gumbel_softmax_surrogate,
              unbiased=False, needs_differentiable_f=True,
              needs_reparameterization=False, latents='discrete'),
        _info('straight_through',
              discrete.straight_through_surrogate, unbiased=False,
              needs_differentiable_f=True, needs_reparameterization=False,
              latents='discrete'),
        _info('disarm', discrete.disarm_surrogate, unbiased=True,
              needs_differentiable_f=False, needs_reparameterization=False,
              latents='discrete'),
    ]
}

CONTINUOUS = tuple(n for n, i in ESTIMATORS.items() if i.latents != 'discrete')
DISCRETE = tuple(n for n, i in ESTIMATORS.items() if i.latents != 'continuous')


def index(name: str) -> int:
  """A stable integer id of an estimator (for deriving PRNG keys)."""
  return list(ESTIMATORS).index(name)


def get(name: str, **options) -> types.GradientEstimator:
  """The estimator `name`, with keyword options (e.g. temperature) bound.

  Raises:
    ValueError: naming the valid choices, for an unknown name.
  """
  if name not in ESTIMATORS:
    raise ValueError(f'unknown estimator {name!r}; choose from '
                     f'{", ".join(ESTIMATORS)}.')
  fn = ESTIMATORS[name].fn
  return functools.partial(fn, **options) if options else fn
