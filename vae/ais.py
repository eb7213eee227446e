"""Annealed importance sampling (AIS) and bidirectional Monte Carlo (BDMC).

For any model with continuous latents (`vae.model.Model`) and a proposal
q(z) per data point (the encoder's q(z|x) by default, the prior, or any
distribution with batch [B, D] as in `vae.importance`), the geometric path

    π_t(z) ∝ f_t(z) = q(z)^{1-β_t} p(x, z)^{β_t},   p(x, z) = p(z) p(x|z),
    0 = β_0 < β_1 < ... < β_T = 1   (`schedule`: sigmoidal or linear),

goes from q (normalized) to the posterior p(z|x) (normalizer p(x)). A chain
draws z_0 ~ q and, for t = 1..T, adds the increment and moves z with an HMC
transition that leaves π_t invariant (Neal, 2001):

    log w += log f_t(z_{t-1}) - log f_{t-1}(z_{t-1})
           = (β_t - β_{t-1}) (log p(x, z_{t-1}) - log q(z_{t-1})),
    z_t ~ HMC_t(· | z_{t-1}),

so that E[w] = p(x). With S chains per data point,

    log p̂(x) = log (1/S) Σ_s w_s          (a stochastic lower bound),
    se       = √(Σ_s w_s² / (Σ_s w_s)² - 1/S)   (delta method over chains),
    ESS      = (Σ_s w_s)² / Σ_s w_s².

T = 1 would be importance sampling with q (`vae.importance`); it is refused.

Reverse AIS (`bdmc`) starts from an exact posterior sample z_T ~ p(z|x)
(known for data simulated from the model, `simulate`) and anneals back,
log w̃ += (β_{t-1} - β_t)(log p(x, z_t) - log q(z_t)), z_{t-1} ~ HMC_{t-1};
E[w̃] = 1/p(x), so -log (1/S) Σ_s w̃_s is a stochastic upper bound
(Grosse et al., 2015). The two bracket log p(x); their gap bounds the error
of either on such data.

HMC is BlackJAX's kernel (`blackjax.hmc.build_kernel`: velocity Verlet,
Metropolis correction), with the proposal's variance as the diagonal inverse
mass matrix. Its step size is adapted by a pilot run: a forward AIS pass of
its own chains on a coarser copy of the schedule (at most `pilot_temperatures`
temperatures, `pilot_steps` transitions each), with the per-temperature
Robbins–Monro update

    log ε ← log ε + γ (ā - α*)

of the acceptance ā averaged over the pilot's chains toward the target α*;
the estimate's chains then use ε(β) interpolated (in log ε) from the pilot's
temperatures, fixed in advance. Adapting on the estimate's own chains would
make each transition depend on the chains' past, and the weights would no
longer have expectation p(x) (nor the reverse ones 1/p(x)). BlackJAX's own
adaptation (`window_adaptation`: Stan's dual averaging and mass-matrix
windows) tunes one fixed target over hundreds of warm-up steps; here the
target changes at every temperature and a chain makes one transition per
temperature, so that scheme does not fit, whereas the Robbins–Monro step
follows ε along the path as β moves (Wu et al. 2017 adapt the same way).

Everything is one jitted program per batch: data points and chains are
vmapped, temperatures a `lax.scan`.
"""

import functools
import math
from typing import Any, Callable

import blackjax
import jax
import jax.numpy as jnp
import numpy as np

from vae import config as cfg
from vae import distributions as dists
from vae import importance
from vae import model as model_lib
from vae import types

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey

SCHEDULES = ('sigmoid', 'linear')
_DISCRETE = (dists.Bernoulli, dists.Categorical)


@cfg.settings
class AISConfig:
  """AIS beside importance sampling, and the BDMC bracket (off by default)."""
  ais_images: int = cfg.setting(
      0, 'Also estimate log p(x) by AIS on the first ais_images evaluation '
      'images (0: no AIS).', min=0, max=10**6)
  ais_temperatures: int = cfg.setting(
      1000, 'AIS distributions T after q (T - 1 intermediate; T = 1 is '
      'importance sampling).', min=2, max=10**6)
  ais_chains: int = cfg.setting(16, 'AIS chains per image.', min=1,
                                max=10_000)
  ais_leapfrog: int = cfg.setting(10, 'Leapfrog steps per HMC transition.',
                                  min=1, max=1000)
  ais_step_size: float = cfg.setting(
      0.5, 'Initial HMC step size of the adaptive pilot (in units of q\'s '
      'standard deviations).', gt=0.0, max=100.0)
  ais_batch_size: int = cfg.setting(50, 'Images per jitted AIS call.',
                                    min=1, max=10_000)
  bdmc_images: int = cfg.setting(
      0, 'Images simulated from the model for the BDMC bracket of log p(x) '
      '(0: no BDMC).', min=0, max=10**6)
  bdmc_temperatures: tuple[int, ...] = cfg.setting(
      (10, 100, 1000), 'Numbers of AIS distributions T of the BDMC runs.',
      min=2, max=10**6)

  def options(self) -> dict[str, Any]:
    """The keyword options of `ais` (without num_temperatures)."""
    return {'num_chains': self.ais_chains, 'num_leapfrog': self.ais_leapfrog,
            'step_size': self.ais_step_size}


def schedule(num_temperatures: int, kind: str = 'sigmoid',
             delta: float = 4.0) -> np.ndarray:
  """β_0 = 0 < β_1 < ... < β_T = 1 (float64 [T + 1]).

    sigmoid: β_t = (s_t - s_0) / (s_T - s_0),  s_t = σ(δ (2t/T - 1))
             (Grosse et al. 2013; Wu et al. 2017: dense near both ends),
    linear:  β_t = t / T.
  """
  _check_int('num_temperatures', num_temperatures, 1)
  t = np.arange(num_temperatures + 1) / num_temperatures
  if kind == 'linear':
    return t
  if kind != 'sigmoid':
    raise ValueError(f'schedule: {kind!r} is not one of {SCHEDULES}.')
  s = 1.0 / (1.0 + np.exp(-delta * (2.0 * t - 1.0)))
  return (s - s[0]) / (s[-1] - s[0])


def _check_int(name: str, value: int, low: int) -> None:
  if int(value) != value or value < low:
    raise ValueError(f'{name}: {value} must be an integer >= {low}.')


def _check(num_temperatures, num_chains, num_leapfrog, step_size,
           target_acceptance, schedule_kind, pilot_temperatures,
           pilot_steps) -> None:
  """One-line ValueErrors for bad settings, before any work."""
  if int(num_temperatures) != num_temperatures or num_temperatures < 2:
    raise ValueError(f'num_temperatures: {num_temperatures} must be an '
                     'integer >= 2 (T = 1 is importance sampling: use '
                     'vae.importance).')
  _check_int('num_chains', num_chains, 1)
  _check_int('num_leapfrog', num_leapfrog, 1)
  _check_int('pilot_temperatures', pilot_temperatures, 1)
  _check_int('pilot_steps', pilot_steps, 1)
  if not step_size > 0 or not math.isfinite(step_size):
    raise ValueError(f'step_size: {step_size} must be a finite number > 0.')
  if not 0.0 < target_acceptance < 1.0:
    raise ValueError(f'target_acceptance: {target_acceptance} must be in '
                     '(0, 1).')
  if schedule_kind not in SCHEDULES:
    raise ValueError(f'schedule: {schedule_kind!r} is not one of '
                     f'{SCHEDULES}.')


def check_continuous(model: model_lib.Model, params: Params,
                     proposal: Any = None) -> None:
  """ValueError (one line) unless p(z) and q are continuous densities."""
  for name, dist in (('prior', model.prior(params)), ('proposal', proposal)):
    if isinstance(dist, _DISCRETE):
      raise ValueError(f'AIS needs continuous latents: the {name} is '
                       f'{type(dist).__name__}.')


def _inverse_mass(q: Any) -> Array:
  """diag M⁻¹ = Var_q[z] [D] (1 where q has no variance)."""
  var = getattr(q, 'variance', None)
  return var() if var is not None else jnp.ones(q.mean().shape)


def _chain_weights(log_w: Array) -> dict[str, Array]:
  """log (1/S) Σ_s w_s, its delta-method se and the ESS from log w [S]."""
  s = log_w.shape[-1]
  lse = jax.nn.logsumexp(log_w, -1)
  lse2 = jax.nn.logsumexp(2.0 * log_w, -1)
  ratio = jnp.exp(lse2 - 2.0 * lse)  # Σ w² / (Σ w)².
  return {'log_px': lse - math.log(s),
          'log_px_se': jnp.sqrt(jnp.maximum(ratio - 1.0 / s, 0.0)),
          'ess': 1.0 / ratio}


def _anneal(model, params, x, q, z0, key, betas, log_eps, num_leapfrog,
            target_acceptance, steps, gain, adapt):
  """One data point's S chains along betas [N + 1] (forward or back).

  Step n (n = 1..N) adds (β_n - β_{n-1})(log p(x, z) - log q(z)) to each
  chain's log w and then makes `steps` HMC transitions at β_n with step
  size exp(log_eps[n]); with `adapt`, ε is instead carried from step to
  step (log_eps[1] starts it) and each transition is followed by the
  Robbins–Monro update log ε += γ (ā - α*), ā the chains' mean acceptance.

  Returns:
    (log w [S], final z [S, D], mean acceptance per step [N],
     log ε used per step [N]).
  """
  kernel = blackjax.hmc.build_kernel()
  inverse_mass = _inverse_mass(q)
  prior = model.prior(params)

  def tempered(beta):
    def log_f(z):  # log f_β = log q + β h; aux: h = log p(x, z) - log q.
      log_q = model_lib.event_log_prob(q, z)
      h = (model_lib.event_log_prob(prior, z) +
           model_lib.event_log_prob(model.decoder(params, z), x) - log_q)
      return log_q + beta * h, h
    return log_f

  def transition(z, beta, eps, k):
    log_f = tempered(beta)
    (value, h), grad = jax.value_and_grad(log_f, has_aux=True)(z)
    state = blackjax.mcmc.hmc.HMCState(z, value, grad)
    new, info = kernel(k, state, lambda y: log_f(y)[0], eps, inverse_mass,
                       num_leapfrog)
    acc = jnp.nan_to_num(info.acceptance_rate, nan=0.0)
    return new.position, h, acc

  moves = jax.vmap(transition, in_axes=(0, None, None, 0))

  def step(carry, inputs):
    z, log_w, log_e = carry
    beta_prev, beta, log_e_fixed, k = inputs
    log_e = log_e if adapt else log_e_fixed
    keys = jax.random.split(k, steps)
    accs = []
    for i in range(steps):
      z_new, h, acc = moves(z, beta, jnp.exp(log_e),
                            jax.random.split(keys[i], z.shape[0]))
      if i == 0:  # The increment at z_{n-1}, before it moves.
        log_w = log_w + (beta - beta_prev) * h
      z = z_new
      accs.append(jnp.mean(acc))
      if adapt:
        log_e = log_e + gain * (accs[-1] - target_acceptance)
    return (z, log_w, log_e), (jnp.mean(jnp.stack(accs)), log_e)

  num = betas.shape[0] - 1
  init = (z0, jnp.zeros(z0.shape[0], z0.dtype), log_eps[1])
  (z, log_w, _), (acc, used) = jax.lax.scan(
      step, init, (betas[:-1], betas[1:], log_eps[1:],
                   jax.random.split(key, num)))
  return log_w, z, acc, used


def _pilot_log_eps(model, params, x, q, key, betas, schedule_kind, num_chains,
                   num_leapfrog, step_size, target_acceptance,
                   pilot_temperatures, pilot_steps, gain):
  """log ε(β_t) [T + 1] for one data point, from the adaptive pilot run."""
  num = betas.shape[0] - 1
  coarse = (jnp.asarray(schedule(pilot_temperatures, schedule_kind),
                        betas.dtype) if num > pilot_temperatures else betas)
  k_z, k_run = jax.random.split(key)
  z0 = q.sample(k_z, (num_chains,))
  start = jnp.full(coarse.shape, jnp.log(step_size))
  _, _, _, log_e = _anneal(model, params, x, q, z0, k_run, coarse, start,
                           num_leapfrog, target_acceptance, pilot_steps, gain,
                           True)
  # ε at each pilot temperature (after its updates), interpolated in β.
  return jnp.interp(betas, coarse[1:], log_e)


@functools.partial(jax.jit, static_argnames=(
    'model', 'num_temperatures', 'num_chains', 'num_leapfrog', 'schedule_kind',
    'pilot_temperatures', 'pilot_steps', 'reverse'))
def _batch(model, params, x, key, proposal, z_exact, step_size,
           target_acceptance, gain, *, num_temperatures, num_chains,
           num_leapfrog, schedule_kind, pilot_temperatures, pilot_steps,
           reverse):
  q = model.encoder(params, x) if proposal is None else proposal
  betas = jnp.asarray(schedule(num_temperatures, schedule_kind), jnp.float32)

  def one(xb, qb, zb, kb):
    k_pilot, k_z, k_fwd, k_rev = jax.random.split(kb, 4)
    log_eps = _pilot_log_eps(
        model, params, xb, qb, k_pilot, betas, schedule_kind, num_chains,
        num_leapfrog, step_size, target_acceptance, pilot_temperatures,
        pilot_steps, gain)
    z0 = qb.sample(k_z, (num_chains,))
    log_w, _, acc, _ = _anneal(model, params, xb, qb, z0, k_fwd, betas,
                               log_eps, num_leapfrog, target_acceptance, 1,
                               gain, False)
    out = {**_chain_weights(log_w), 'log_weights': log_w,
           'acceptance': jnp.mean(acc), 'step_size': jnp.exp(log_eps[1:])}
    if reverse:
      zr = jnp.broadcast_to(zb, (num_chains,) + zb.shape[-1:]) \
          if zb.ndim == 1 else zb
      log_wr, _, acc_r, _ = _anneal(
          model, params, xb, qb, zr, k_rev, betas[::-1], log_eps[::-1],
          num_leapfrog, target_acceptance, 1, gain, False)
      back = _chain_weights(log_wr)  # log (1/S) Σ w̃ estimates -log p(x).
      out.update({'upper': -back['log_px'], 'upper_se': back['log_px_se'],
                  'ess_reverse': back['ess'], 'log_weights_reverse': log_wr,
                  'acceptance_reverse': jnp.mean(acc_r),
                  'lower_one': jnp.mean(log_w), 'upper_one': -jnp.mean(log_wr),
                  'gap_one': -jnp.mean(log_wr) - jnp.mean(log_w)})
    return out

  keys = jax.random.split(key, x.shape[0])
  zs = jnp.zeros((x.shape[0], 1)) if z_exact is None else z_exact
  return jax.vmap(one)(x, q, zs, keys)


def ais_batch(model: model_lib.Model, params: Params, x: Array, key: PRNGKey,
              proposal: Any = None, *, num_temperatures: int,
              num_chains: int = 16, num_leapfrog: int = 10,
              step_size: float = 0.5, target_acceptance: float = 0.65,
              schedule_kind: str = 'sigmoid', pilot_temperatures: int = 50,
              pilot_steps: int = 4, gain: float = 1.0) -> dict[str, Array]:
  """Forward AIS of x [B, d]: log p̂(x) = log (1/S) Σ_s w_s per data point.

  Each chain: z_0 ~ q, then for t = 1..T, log w += (β_t - β_{t-1})
  (log p(x, z) - log q(z)) and one HMC transition (L leapfrog steps) that
  leaves π_t ∝ q^{1-β_t} p(x, ·)^{β_t} invariant; E[w] = p(x) (module).

  Args:
    model: the model (static; continuous latents).
    params: its parameters.
    x: [B, d].
    key: PRNG key (data point b: split(key, B)[b], split in 4 for the
      pilot, the initial draws, the forward and the reverse chains).
    proposal: q with batch shape [B, D] (default: the encoder's q(z|x)).
    num_temperatures: T >= 2, distributions after q (T - 1 intermediate).
    num_chains: S, chains per data point.
    num_leapfrog: L, leapfrog steps per HMC transition.
    step_size: the pilot's initial ε (in units of q's standard deviations).
    target_acceptance: α*, the acceptance rate the pilot adapts toward.
    schedule_kind: 'sigmoid' or 'linear' (`schedule`).
    pilot_temperatures: the pilot's temperatures (the sigmoid schedule with
      min(T, this) steps; ε is interpolated in β in between).
    pilot_steps: HMC transitions (each with an update of ε) per pilot
      temperature.
    gain: γ of the Robbins–Monro update log ε += γ (ā - α*).

  Returns:
    {'log_px', 'log_px_se', 'ess', 'acceptance': [B]; 'log_weights':
     [B, S]; 'step_size': [B, T] (ε at β_1..β_T)}.
  """
  _check(num_temperatures, num_chains, num_leapfrog, step_size,
         target_acceptance, schedule_kind, pilot_temperatures, pilot_steps)
  check_continuous(model, params, proposal)
  return _batch(model, params, x, key, proposal, None, step_size,
                target_acceptance, gain, num_temperatures=num_temperatures,
                num_chains=num_chains, num_leapfrog=num_leapfrog,
                schedule_kind=schedule_kind,
                pilot_temperatures=pilot_temperatures,
                pilot_steps=pilot_steps, reverse=False)


def bdmc_batch(model: model_lib.Model, params: Params, x: Array,
               z_exact: Array, key: PRNGKey, proposal: Any = None, *,
               num_temperatures: int, num_chains: int = 16,
               num_leapfrog: int = 10, step_size: float = 0.5,
               target_acceptance: float = 0.65,
               schedule_kind: str = 'sigmoid', pilot_temperatures: int = 50,
               pilot_steps: int = 4, gain: float = 1.0) -> dict[str, Array]:
  """BDMC bracket lower ≤ log p(x) ≤ upper (in expectation) per data point.

    lower = log (1/S) Σ_s w_s     (forward AIS from z_0 ~ q, `ais_batch`),
    upper = -log (1/S) Σ_s w̃_s   (reverse AIS from z_T = z_exact ~ p(z|x):
            log w̃ = Σ_t (β_{t-1} - β_t)(log p(x, z_t) - log q(z_t)),
            E[w̃] = 1/p(x)),
    gap   = upper - lower ≥ the error of either (in expectation),

and the one-chain bracket of Grosse et al. (2015), looser and less noisy
where S chains are averaged over many data points:

    lower_one = (1/S) Σ_s log w_s,   upper_one = -(1/S) Σ_s log w̃_s,
    E[gap_one] = E[upper_one - lower_one] = KL(fwd ‖ rev) + KL(rev ‖ fwd)

(the Jeffreys divergence between the forward and the reverse chains'
distributions over (z_0, ..., z_T); Grosse et al. 2016), which shrinks
toward 0 as T grows.

  Valid only where z_exact is an exact posterior sample: data simulated
  from the model (`simulate`). Both directions use the same ε(β) from one
  forward pilot. With one z_exact per data point ([B, D]) the S reverse
  chains share their start, so 'upper_se' (the delta method over chains)
  omits the start's variation; average over data points, whose starts are
  independent, for a calibrated spread (Grosse et al. 2015 do so).

  Args:
    model, params, x, key, proposal: as `ais_batch`.
    z_exact: [B, D] (or [B, S, D]) exact posterior samples.
    num_temperatures ... gain: as `ais_batch`.

  Returns:
    `ais_batch`'s keys (forward) and 'lower' (= log_px), 'lower_se',
    'upper', 'upper_se', 'gap', 'lower_one', 'upper_one', 'gap_one',
    'ess_reverse', 'acceptance_reverse' [B], 'log_weights_reverse' [B, S].
  """
  _check(num_temperatures, num_chains, num_leapfrog, step_size,
         target_acceptance, schedule_kind, pilot_temperatures, pilot_steps)
  check_continuous(model, params, proposal)
  out = _batch(model, params, x, key, proposal, z_exact, step_size,
               target_acceptance, gain, num_temperatures=num_temperatures,
               num_chains=num_chains, num_leapfrog=num_leapfrog,
               schedule_kind=schedule_kind,
               pilot_temperatures=pilot_temperatures, pilot_steps=pilot_steps,
               reverse=True)
  return {**out, 'lower': out['log_px'], 'lower_se': out['log_px_se'],
          'gap': out['upper'] - out['log_px']}


def simulate(model: model_lib.Model, params: Params, key: PRNGKey,
             num: int) -> tuple[Array, Array]:
  """(x [N, d], z [N, D]): z ~ p(z), x ~ p(x|z); z is an exact sample of
  p(z|x) for its x (the data BDMC needs)."""
  k_z, k_x = jax.random.split(key)
  z = model.prior(params).sample(k_z, (num,))
  return model.decoder(params, z).sample(k_x), z


def ais(model: model_lib.Model, params: Params, x: np.ndarray | Array,
        key: PRNGKey, proposal: Any = None, z_exact: Any = None,
        batch_size: int = 100, log: Callable[[str], None] | None = None,
        **options) -> dict[str, np.ndarray]:
  """`ais_batch` (or `bdmc_batch` with z_exact [N, D]) over batches of the
  rows of x [N, d]; batch i uses fold_in(key, i). Same estimates (module).
  `log`, if given, gets a progress line about every tenth of the batches.

  Returns:
    The batch functions' arrays, float64, [N] (or [N, ...]).
  """
  def batch(b, k, parts):
    q, z = parts
    if z_exact is None:
      return ais_batch(model, params, b, k, q, **options)
    return bdmc_batch(model, params, b, z, k, q, **options)

  out = importance.over_batches(
      batch, x, key, batch_size,
      (proposal, None if z_exact is None else jnp.asarray(z_exact)), log=log,
      label='AIS')
  return {name: np.asarray(v, np.float64) for name, v in out.items()}
