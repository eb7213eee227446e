"""Every gradient estimator, by one name, with what it estimates and promises.

This is the one registry that models, trainers, experiments and tests read.
An entry says which targets the estimator has a surrogate for:

    expectation  ∇_θ E_{q_θ(z)}[f(z)]         (common signature below); this
                 also serves the ELBO objectives 'elbo' and 'elbo_mc_kl'
                 (`vae.objectives`), where f is the ELBO's integrand;
    iwae         ∇ IWAE_K = ∇ E[log (1/K) Σ_k p(x, z_k) / q(z_k)^β], from
                 `log_joint` (`vae.estimators.iwae`);

whether it is unbiased, which latents and which distribution families
(Normal, Bernoulli, Categorical) it works on, what it requires, and the
state or options the caller must supply. `check` refuses invalid
combinations (an estimator on a family it does not support, too few
samples) with a one-line error, and `surrogate_objective`
(`vae.objectives`) dispatches through `get`.

Control variates compose with score-type estimators
(`control_variates.with_control_variate`): the entry '<estimator>_<cv>'
is the estimator's E_q[f] surrogate with the control variate
CONTROL_VARIATES[cv] applied (`composed`), so "score + moving average" is
the score function and one control variate, not a surrogate of its own.

Adding an estimator is one surrogate function plus one entry here (adding a
control variate: one `ControlVariate` and one `composed` entry); the
registry-walking tests then check its mean against exact values. PRNG keys
derive from an estimator's name (`name_id`), not its position here.
"""

import dataclasses
import functools
from typing import Any, Callable
import zlib

from vae import types
from vae.estimators import control_variates
from vae.estimators import core
from vae.estimators import discrete
from vae.estimators import iwae

OBJECTIVES = ('elbo', 'elbo_mc_kl', 'iwae')
LATENTS = ('continuous', 'discrete')
FAMILIES = ('normal', 'bernoulli', 'categorical')
# Caller-kept state, passed as `baseline=`: a moving average of past costs
# (a training loop keeps it), or the variance-optimal constant
# b*_θ = E_q[f s_θ²] / E_q[s_θ²], s_θ = ∂ log q/∂θ (known only where E_q can
# be computed, e.g. by quadrature: `gaussian_costs.optimal_baseline`).
STATES = ('moving_average', 'optimal_baseline')
# The control variates, by name: the entry '<estimator>_<name>' composes one
# with a score-type estimator (`composed`). A state's name is the name of
# the control variate that keeps it.
CONTROL_VARIATES = {
    'mean_baseline': control_variates.cost_at_mean(),
    'delta': control_variates.delta_method(),
    'moving_average': control_variates.moving_average(),
    'optimal_baseline': control_variates.optimal_baseline(),
}


@dataclasses.dataclass(frozen=True)
class Estimator:
  """An estimator and its properties.

  Attributes:
    name: its one name.
    expectation: surrogate for ∇E_q[f] (None: not applicable), signature
      (f, params, dist_builder, key, num_samples, **options) -> scalar.
    iwae: surrogate for ∇IWAE_K (None: not applicable), signature
      (log_joint, params, dist_builder, key, K, beta) -> scalar.
    unbiased: E[estimate] equals the true gradient (for every supported
      objective; see `note` for exceptions).
    latents: the latents it works on: a subset of LATENTS.
    families: the distributions q it works on: a subset of FAMILIES.
    needs_differentiable_f: f (or log p) must be differentiable in z.
    needs_reparameterization: q must be reparameterizable.
    min_samples: the smallest valid number of samples.
    evaluations_per_sample: evaluations of f per sample (DisARM: 2).
    state: one of STATES when the caller supplies a baseline b (passed as
      `baseline=`: a scalar, or a tree like params), else None.
    options: keyword options it accepts (e.g. 'temperature').
    note: what else to know (exceptions to `unbiased`, references).
    control_variate: the name (in CONTROL_VARIATES) of the control variate
      this entry applies to another entry's surrogate (`composed`), or None.
  """
  name: str
  expectation: Callable | None
  iwae: Callable | None
  unbiased: bool
  latents: tuple[str, ...]
  families: tuple[str, ...]
  needs_differentiable_f: bool
  needs_reparameterization: bool
  min_samples: int = 1
  evaluations_per_sample: int = 1
  state: str | None = None
  options: tuple[str, ...] = ()
  note: str = ''
  control_variate: str | None = None

  def objectives(self) -> tuple[str, ...]:
    """The objectives this estimator has a surrogate for.

    An estimator whose baseline must be computed from E_q (state
    'optimal_baseline') estimates ∇E_q[f] for a known f only: no ELBO.
    """
    elbo = self.expectation is not None and self.state != 'optimal_baseline'
    out: tuple[str, ...] = ('elbo', 'elbo_mc_kl') if elbo else ()
    if self.name == 'stl':
      out = ('elbo_mc_kl',)
    return out + (('iwae',) if self.iwae is not None else ())


_CONT, _DISC, _ANY = ('continuous',), ('discrete',), LATENTS
_N, _B, _C = ('normal',), ('bernoulli',), ('categorical',)
# Shared keyword arguments of `Estimator` (fields of several types).
_SCORE: dict[str, Any] = dict(needs_differentiable_f=False,
                              needs_reparameterization=False)
_REPARAM: dict[str, Any] = dict(needs_differentiable_f=True,
                                needs_reparameterization=True)
_RELAXED: dict[str, Any] = dict(needs_differentiable_f=True,
                                needs_reparameterization=False,
                                options=('temperature',))


def composed(base: Estimator, control_variate: str, **changes) -> Estimator:
  """The entry '<base>_<control_variate>': base's E_q[f] surrogate with the
  control variate CONTROL_VARIATES[control_variate] applied
  (`control_variates.with_control_variate`: ĝ[f] - c ⊙ (ĝ[h] - ∇E_q[h])).

  It keeps base's properties but its IWAE surrogate (none); `changes`
  narrow them (families, requirements, state) and add a note.
  """
  if base.expectation is None:
    raise ValueError(f'{base.name!r} has no E_q[f] surrogate to compose.')
  return dataclasses.replace(
      base, name=f'{base.name}_{control_variate}',
      expectation=control_variates.with_control_variate(
          base.expectation, CONTROL_VARIATES[control_variate]),
      iwae=None, control_variate=control_variate, **changes)


_SCORE_ENTRY = Estimator('score', core.score_function_surrogate,
                         iwae.iwae_score_surrogate, True, _ANY, FAMILIES,
                         **_SCORE)

# Keys derive from names (`name_id`), not from this order.
ESTIMATORS: dict[str, Estimator] = {e.name: e for e in [
    Estimator('pathwise', core.pathwise_surrogate, iwae.iwae_surrogate, True,
              _CONT, _N, **_REPARAM),
    _SCORE_ENTRY,
    composed(_SCORE_ENTRY, 'mean_baseline', families=_N + _B,
             note='baseline b = f(E_q[z]); not for Categorical q (its '
             'samples are indices, E_q[z] is none)'),
    Estimator('score_rloo', core.leave_one_out_surrogate, None, True, _ANY,
              FAMILIES, min_samples=2, **_SCORE),
    composed(_SCORE_ENTRY, 'delta', latents=_CONT, families=_N,
             needs_differentiable_f=True,
             note='Normal q; f twice differentiable'),
    Estimator('measure_valued', core.measure_valued_surrogate, None, True,
              _CONT, _N, evaluations_per_sample=4, **_SCORE,
              note='Normal q; coupled (common random numbers); 4 '
              'evaluations of f per sample and coordinate'),
    Estimator('gumbel_softmax', discrete.gumbel_softmax_surrogate, None, False,
              _DISC, _B + _C, **_RELAXED,
              note='biased; the bias vanishes as temperature -> 0'),
    Estimator('straight_through', discrete.straight_through_surrogate, None,
              False, _DISC, _B + _C, **_RELAXED,
              note='biased; the value is unbiased (exact discrete samples)'),
    Estimator('disarm', discrete.disarm_surrogate, None, True, _DISC, _B,
              evaluations_per_sample=2, **_SCORE,
              note='Bernoulli q; num_samples antithetic pairs'),
    composed(_SCORE_ENTRY, 'moving_average', state='moving_average',
             note='baseline: a moving average of past costs, kept by the '
             'caller (unbiased: it does not depend on this step\'s samples)'),
    Estimator('stl', None, iwae.stl_surrogate, False, _CONT, _N, **_REPARAM,
              note='unbiased at K = 1 (the ELBO), biased for K > 1'),
    Estimator('dreg', None, iwae.dreg_surrogate, True, _CONT, _N, **_REPARAM,
              note='weights (1 - β) w̃ + β w̃²: unbiased at every β'),
    Estimator('vimco', None, iwae.vimco_surrogate, True, _ANY, FAMILIES,
              min_samples=2, **_SCORE),
    composed(_SCORE_ENTRY, 'optimal_baseline', state='optimal_baseline',
             note='score function with the variance-optimal constant '
             'b*_θ = E[f s_θ²]/E[s_θ²] per parameter, supplied by the caller '
             '(exact where E_q is known); ∇E_q[f] only'),
]}


def names(objective: str | None = None, latents: str | None = None,
          stateless: bool = False) -> tuple[str, ...]:
  """The estimators for `objective` ('expectation' for E_q[f]) and `latents`.

  Args:
    objective: one of OBJECTIVES or 'expectation' (∇E_q[f] for a known f,
      incl. estimators whose baseline the caller computes from E_q); None:
      any of OBJECTIVES (what a model can train with).
    latents: 'continuous' or 'discrete'; None: any.
    stateless: leave out estimators that need caller-kept state.

  Returns:
    Names, in registry order.
  """
  out = []
  for e in ESTIMATORS.values():
    if objective == 'expectation' and e.expectation is None:
      continue
    if objective is None and not e.objectives():
      continue
    if objective not in (None, 'expectation') and objective not in (
        e.objectives()):
      continue
    if latents is not None and latents not in e.latents:
      continue
    if stateless and e.state is not None:
      continue
    out.append(e.name)
  return tuple(out)


def lookup(name: str) -> Estimator:
  """The entry `name`; ValueError naming the choices otherwise."""
  if name not in ESTIMATORS:
    raise ValueError(f'unknown estimator {name!r}; choose from: '
                     f'{", ".join(ESTIMATORS)}.')
  return ESTIMATORS[name]


def name_id(name: str) -> int:
  """A stable integer id of estimator `name`, for deriving PRNG keys.

  id = crc32(name) & 0x7fffffff (`zlib`; Python's `hash` is salted per
  process): fold_in(key, name_id(e)) depends on the name alone, so
  reordering or extending ESTIMATORS, or the list a study compares, changes
  no estimator's key.
  """
  return zlib.crc32(lookup(name).name.encode()) & 0x7fffffff


def check(name: str, objective: str = 'expectation', num_samples: int = 1,
          beta: float | types.Array = 1.0, latents: str | None = None,
          family: str | None = None) -> Estimator:
  """The entry, after refusing an invalid combination (ValueError, one line).

  Args:
    name: the estimator.
    objective: 'expectation' or one of OBJECTIVES.
    num_samples: samples per estimate (K for 'iwae').
    beta: the KL weight of the objective (every estimator here is valid
      at every β ≥ 0; DReG uses the general weights).
    latents: 'continuous' or 'discrete', if known.
    family: 'normal', 'bernoulli' or 'categorical' (q's family), if known.

  Returns:
    The `Estimator`.
  """
  e = lookup(name)
  valid = names(objective)
  if objective not in OBJECTIVES + ('expectation',):
    raise ValueError(f'unknown objective {objective!r}; choose from: '
                     f'{", ".join(OBJECTIVES)}.')
  if name not in valid:
    raise ValueError(f'estimator {name!r} does not apply to objective '
                     f'{objective!r}; choose from: {", ".join(valid)}.')
  if num_samples < e.min_samples:
    raise ValueError(f'estimator {name!r} needs num_samples >= '
                     f'{e.min_samples}, got {num_samples}.')
  if latents is not None and latents not in e.latents:
    raise ValueError(f'estimator {name!r} does not work on {latents} '
                     f'latents; choose from: '
                     f'{", ".join(names(objective, latents))}.')
  if family is not None and family not in e.families:
    raise ValueError(f'estimator {name!r} does not work on {family} q; it '
                     f'works on: {", ".join(e.families)}.')
  if isinstance(beta, (int, float)) and not beta >= 0:
    raise ValueError(f'beta must be >= 0, got {beta}.')
  return e


def get(name: str, **options) -> types.GradientEstimator:
  """The E_q[f] estimator `name` with the common signature, options bound.

  `estimator(function, params, dist_builder, key, num_samples) -> grads`,
  a function named `name` whose docstring is its own: its surrogate's
  equation, its properties here (`describe`) and what it returns.
  """
  e = lookup(name)
  if e.expectation is None:
    choices = ', '.join(names('expectation'))
    raise ValueError(f'estimator {name!r} estimates an IWAE gradient, not '
                     f'∇E_q[f]; choose from: {choices}.')
  unknown = set(options) - set(e.options) - (
      {'baseline'} if e.state else set())
  if unknown:
    raise ValueError(f'estimator {name!r} takes no option '
                     f'{", ".join(sorted(unknown))}.')
  surrogate = functools.partial(e.expectation, **options) if options else (
      e.expectation)
  return core.gradient_from_surrogate(surrogate, name, describe(e))


def describe(e: Estimator) -> str:
  """One paragraph: the entry's name and properties (for docstrings)."""
  text = (f"Registry estimator '{e.name}': "
          f"{'unbiased' if e.unbiased else 'biased'}; latents "
          f"{', '.join(e.latents)}; q {', '.join(e.families)}; "
          f"{'f differentiable in z' if e.needs_differentiable_f else 'any f'}"
          f"; objectives {', '.join(e.objectives()) or 'E_q[f] only'}.")
  return text + (f' {e.note[0].upper()}{e.note[1:]}.' if e.note else '')
