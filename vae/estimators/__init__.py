"""Gradient estimators of ∇_θ E_{q_θ}[f]: one signature, one name each.

    estimator(function, params, dist_builder, key, num_samples) -> grads

`get(name)` is the estimator `name` of the registry (`names()` lists them,
`lookup(name)` gives its entry: what it estimates and promises); the
modules hold the surrogates: `core` (pathwise, score, RLOO,
measure-valued), `control_variates`, `iwae` (IWAE_K: STL, DReG, VIMCO),
`discrete` (Gumbel-softmax, straight-through, DisARM), `registry`.
"""

from vae.estimators import control_variates
from vae.estimators import core
from vae.estimators import discrete
from vae.estimators import iwae
from vae.estimators import registry
from vae.estimators.registry import ESTIMATORS
from vae.estimators.registry import Estimator
from vae.estimators.registry import check
from vae.estimators.registry import get
from vae.estimators.registry import lookup
from vae.estimators.registry import names

__all__ = ['ESTIMATORS', 'Estimator', 'check', 'control_variates', 'core',
           'discrete', 'get', 'iwae', 'lookup', 'names', 'registry']
