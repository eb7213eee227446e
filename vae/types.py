"""Type aliases and the frozen-dataclass-as-pytree helper used across `vae`."""

import dataclasses
from typing import Any, Callable, Protocol, TypeAlias, TypeVar, dataclass_transform

import jax

Array: TypeAlias = jax.Array
PRNGKey: TypeAlias = jax.Array
Params = Any  # A pytree of arrays.
Shape = tuple[int, ...]

# f(z) -> scalar: the integrand of E_{q(z)}[f(z)] for ONE sample z.
CostFn = Callable[[Array], Array]
# params -> distribution object (see `vae.distributions`).
DistBuilder = Callable[[Params], Any]


class GradientEstimator(Protocol):
  """The one signature all gradient estimators share.

  `estimator(function, params, dist_builder, key, num_samples) -> grads`
  returns one estimate of d/dparams E_{q_params(z)}[function(z)] that averages
  `num_samples` samples; `grads` has the structure of `params`.
  """

  def __call__(self, function: CostFn, params: Params,
               dist_builder: DistBuilder, key: PRNGKey,
               num_samples: int) -> Params:
    ...


_T = TypeVar('_T')


@dataclass_transform(frozen_default=True)
def pytree_dataclass(cls: type[_T]) -> type[_T]:
  """Makes `cls` a frozen dataclass registered as a JAX pytree.

  Fields declared with `dataclasses.field(metadata={'static': True})` are
  static (part of the tree structure); all others are leaves.
  """
  cls = dataclasses.dataclass(frozen=True)(cls)
  # mypy does not see that dataclass() has made cls a dataclass.
  fields = dataclasses.fields(cls)  # type: ignore[arg-type]
  meta = [f.name for f in fields if f.metadata.get('static', False)]
  data = [f.name for f in fields if not f.metadata.get('static', False)]
  return jax.tree_util.register_dataclass(cls, data_fields=data,
                                          meta_fields=meta)


def static_field(**kwargs: Any) -> Any:
  """A dataclass field that is static (not a pytree leaf)."""
  return dataclasses.field(metadata={'static': True}, **kwargs)

