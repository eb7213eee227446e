"""Missing data: masks, the MIWAE bound, imputation, held-out likelihoods.

For any model (`vae.model.Model`) whose decoder factorizes over the
coordinates of x (an elementwise `log_prob`, e.g. Bernoulli pixels or a
diagonal Gaussian), a boolean mask m (True = missing) splits x into x_obs
and x_miss. The encoder never sees x_miss: it sees x̃ = x where observed and
a fill value f where missing. Then (Mattei & Frellsen 2019)

    log p(x_obs|z) = Σ_{j: m_j = 0} log p(x_j|z)   (a factorized decoder),
    MIWAE_K = log (1/K) Σ_k p(x_obs|z_k) p(z_k) / q(z_k|x̃),  z_k ~ q(z|x̃),

a lower bound on log p(x_obs) in expectation, tight as K → ∞; training
maximizes it (`miwae_loss`, a loss for `vae.optim.make_step`;
`train_miwae`: epochs of `optim.fit` with a fixed mask per image).

Imputation of x_miss ~ p(x_miss|x_obs) = ∫ p(x_miss|z) p(z|x_obs) dz:

  (a) SIR (`importance_impute`): w_k ∝ p(x_obs|z_k) p(z_k)/q(z_k|x̃),
      z ~ Categorical(w̄) among the z_k, x_miss ~ p(x_miss|z); consistent
      as K → ∞. Its held-out conditional log-likelihood is
        log p̂(x_miss|x_obs) = log p̂(x) - log p̂(x_obs)
                            = log Σ_k w̄_k p(x_miss|z_k)
      (the same K samples in both estimates), with the delta-method SE of
      the ratio, and ESS = 1 / Σ_k w̄_k².
  (b) pseudo-Gibbs (Rezende et al. 2014; `pseudo_gibbs`): z_t ~ q(z|x̂_{t-1}),
      x_miss,t ~ p(x_miss|z_t), x̂_t = (x_obs, x_miss,t). Exact only if q is
      the exact posterior p(z|x); otherwise its stationary law (if any) is
      not p(x_miss|x_obs).
  (c) Metropolis-within-Gibbs (Mattei & Frellsen 2018; `metropolis_gibbs`):
      z̃ ~ q(z|x̂_{t-1}), accepted with probability min(1, ρ),
        ρ = p(x̂_{t-1}|z̃) p(z̃) q(z_{t-1}|x̂_{t-1})
            / (p(x̂_{t-1}|z_{t-1}) p(z_{t-1}) q(z̃|x̂_{t-1})),
      then x_miss,t ~ p(x_miss|z_t): a Gibbs sampler of p(z, x_miss|x_obs)
      whose z-step is an independence Metropolis–Hastings step targeting
      p(z|x̂_{t-1}); asymptotically exact. With a fixed proposal q(z|x̃)
      instead of q(z|x̂_{t-1}) ('mwg_masked') it stays exact.

The chains start at x̂_0 = x̃ and run S chains per data point; after
`burn_in` steps they average E[x|z_t] (the Rao–Blackwellized imputation
mean) and p(x_miss|z_t) (their own conditional log-likelihood,
log (1/N) Σ_t p(x_miss|z_t)); ESS from BlackJAX's multi-chain estimate on
the trace of log p(x_obs|z_t). Nothing here looks at x_miss except those
evaluation terms.
"""

import functools
import math
import time
from typing import Any, Callable

import blackjax.diagnostics
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vae import data as data_lib
from vae import model as model_lib
from vae import optim
from vae import train
from vae import types

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey

# Masks by what they hide: the top half (rows < h/2) or the left half
# (columns < w/2) of an h x w image, exactly 50% or 80% of the pixels chosen
# at random per image, or each pixel independently with probability `rate`.
MASKS = ('top_half', 'left_half', 'random_50', 'random_80', 'mcar')
METHODS = ('sir', 'pseudo_gibbs', 'mwg', 'mwg_masked')


def _image_shape(data_dim: int,
                 image_shape: tuple[int, int] | None) -> tuple[int, int]:
  if image_shape is None:
    side = math.isqrt(data_dim)
    if side * side != data_dim:
      raise ValueError(f'image_shape: data_dim {data_dim} is not a square; '
                       'give the image shape for a half mask.')
    return side, side
  if image_shape[0] * image_shape[1] != data_dim:
    raise ValueError(f'image_shape: {image_shape} does not hold {data_dim} '
                     'values.')
  return image_shape


def make_masks(kind: str, key: PRNGKey, num: int, data_dim: int,
               rate: float = 0.5,
               image_shape: tuple[int, int] | None = None) -> Array:
  """Boolean masks m [num, d], True = missing; row i from fold_in(key, i).

    top_half:  m_j = [row(j) < h/2];   left_half: m_j = [col(j) < w/2];
    random_50 / random_80: m hides exactly round(p·d) pixels, p = 0.5 / 0.8,
      a uniformly random subset per row;
    mcar: m_j ~ Bernoulli(rate) independently.

  Row i depends only on (key, i), so the mask of image i is the same
  wherever it is drawn (a fixed missing-data pattern per image).

  Args:
    kind: one of `MASKS`.
    key: PRNG key (random kinds).
    num: rows.
    data_dim: d.
    rate: the missing probability of 'mcar', in (0, 1).
    image_shape: (h, w) for the half masks (default: square).

  Returns:
    bool [num, d].
  """
  if kind not in MASKS:
    raise ValueError(f'mask: {kind!r} is not one of {", ".join(MASKS)}.')
  if kind in ('top_half', 'left_half'):
    h, w = _image_shape(data_dim, image_shape)
    rows, cols = np.divmod(np.arange(data_dim), w)
    one = rows < h // 2 if kind == 'top_half' else cols < w // 2
    return jnp.broadcast_to(jnp.asarray(one), (num, data_dim))
  if kind == 'mcar' and not 0.0 < rate < 1.0:
    raise ValueError(f'mask_rate: {rate} must be in (0, 1).')
  hidden = round({'random_50': 0.5, 'random_80': 0.8}.get(kind, 0.0) *
                 data_dim)

  def row(i):
    k = jax.random.fold_in(key, i)
    if kind == 'mcar':
      return jax.random.bernoulli(k, rate, (data_dim,))
    ranks = jnp.argsort(jax.random.permutation(k, data_dim))
    return ranks < hidden

  return jax.vmap(row)(jnp.arange(num))


def check_mask(missing: Array | np.ndarray, data_dim: int | None = None,
               allow_complete_rows: bool = False) -> None:
  """Refuses (ValueError, one line) a mask with a row that hides every
  coordinate (nothing to condition on) or, unless `allow_complete_rows`,
  one that hides none (nothing to impute); also a mask hiding nothing at
  all, and one that is not boolean [N, d]."""
  m = np.asarray(missing)
  if m.dtype != np.bool_ or m.ndim != 2 or (data_dim is not None and
                                            m.shape[1] != data_dim):
    raise ValueError(f'mask: need a boolean [N, {data_dim or "d"}] array, '
                     f'got {m.dtype} {m.shape}.')
  hidden = m.sum(1)
  full = np.flatnonzero(hidden == m.shape[1])
  if full.size:
    raise ValueError(f'mask: row {full[0]} of {len(m)} hides every '
                     'coordinate; at least one must be observed.')
  empty = np.flatnonzero(hidden == 0)
  if empty.size == len(m) or (empty.size and not allow_complete_rows):
    raise ValueError(f'mask: row {empty[0]} of {len(m)} hides no '
                     'coordinate; there is nothing to impute.')


def fill(x: Array, missing: Array, value: float | Array = 0.0) -> Array:
  """x̃ = x where observed, the fill value f (scalar or [d]) where missing."""
  return jnp.where(missing, jnp.asarray(value, x.dtype), x)


def masked_log_likelihood(dist: Any, x: Array, keep: Array) -> Array:
  """Σ_{j: keep_j} log p(x_j|z) over the last axis (a factorized decoder).

  `dist.log_prob` must be elementwise (e.g. Bernoulli, diagonal Normal);
  a joint density (a full-covariance Gaussian) is refused.
  """
  log_p = dist.log_prob(x)
  if jnp.shape(log_p)[-1:] != jnp.shape(x)[-1:]:
    raise ValueError('decoder: missing data needs a decoder that factorizes '
                     'over coordinates (an elementwise log_prob).')
  return jnp.sum(jnp.where(keep, log_p, 0.0), -1)


def _log_weights(model, params, x_tilde, missing, z, q):
  """log w = log p(x_obs|z) + log p(z) - log q(z), and the decoder at z."""
  dec = model.decoder(params, z)
  log_obs = masked_log_likelihood(dec, x_tilde, ~missing)
  log_w = log_obs + (model_lib.event_log_prob(model.prior(params), z) -
                     model_lib.event_log_prob(q, z))
  return log_w, log_obs, dec


def miwae_bounds(model: model_lib.Model, params: Params, x: Array,
                 missing: Array, key: PRNGKey, num_samples: int,
                 fill_value: float | Array = 0.0) -> Array:
  """MIWAE_K per data point, [B] (the module's equation).

    MIWAE_K(x_obs) = log (1/K) Σ_k p(x_obs|z_k) p(z_k) / q(z_k|x̃),
    z_k ~ q(z|x̃) (reparameterized where q is: its gradient is pathwise).

  K = 1 is the ELBO of x_obs; no mask (m = 0) gives IWAE_K.

  Args:
    model: the model (a factorized decoder).
    params: its parameters.
    x: [B, d]; x_miss is not read.
    missing: bool [B, d] (or [d]), True = missing.
    key: samples' key (`model.sample_per_example`).
    num_samples: K.
    fill_value: f, what the encoder sees in missing places.

  Returns:
    [B] bounds in nats.
  """
  missing = jnp.broadcast_to(missing, x.shape)
  x_tilde = fill(x, missing, fill_value)
  q = model.encoder(params, x_tilde)
  z = model_lib.sample_per_example(q, key, num_samples)  # [B, K, D].
  log_w, _, _ = _log_weights(model, params, x_tilde[:, None],
                             missing[:, None], z, model_lib.expand(q, 1))
  return jax.nn.logsumexp(log_w, -1) - math.log(num_samples)


def miwae_loss(model: model_lib.Model, num_samples: int,
               fill_value: float | Array = 0.0,
               dynamic_binarization: bool = False) -> optim.Loss:
  """(θ, (x, m), key, b) -> (-MIWAE̅_K, {'bound': MIWAE̅_K}) for `optim.make_step`.

  MIWAE̅_K = (1/B) Σ_b MIWAE_K(x_b, m_b) (`miwae_bounds`); with
  `dynamic_binarization` x ~ Bernoulli(x) first (the key's first half).
  """
  def loss(params, batch, key, baseline):
    del baseline
    x, missing = batch
    bin_key, sample_key = jax.random.split(key)
    if dynamic_binarization:
      x = data_lib.binarize(bin_key, x)
    bound = jnp.mean(miwae_bounds(model, params, x, missing, sample_key,
                                  num_samples, fill_value))
    return -bound, {'bound': bound}

  return loss


def make_miwae_epoch(model: model_lib.Model,
                     optimizer: optax.GradientTransformation,
                     num_samples: int, batch_size: int, seed: int,
                     fill_value: float | Array = 0.0,
                     dynamic_binarization: bool = False) -> Callable:
  """A jitted (state, images, masks, epoch) -> (state, mean bound): one pass.

  `optim.fit` of `miwae_loss` over the batches of `data.epoch_indices(N,
  B, seed, epoch)`; step t uses the trainer's key `train.step_key(seed, t)`
  and the batch's fixed masks m[indices].
  """
  loss = miwae_loss(model, num_samples, fill_value, dynamic_binarization)

  @jax.jit
  def epoch_fn(state, images, masks, epoch):
    order = data_lib.epoch_indices(images.shape[0], batch_size, seed, epoch)
    t = state.step + jnp.arange(order.shape[0])
    keys = jax.vmap(lambda s: train.step_key(seed, s))(t)

    def gathered(params, indices, key, baseline):
      return loss(params, (jnp.take(images, indices, 0),
                           jnp.take(masks, indices, 0)), key, baseline)

    state, aux = optim.fit(optim.make_step(gathered, optimizer), state,
                           order, keys)
    return state, jnp.mean(aux['bound'])

  return epoch_fn


def train_miwae(model: model_lib.Model, images: np.ndarray,
                masks: np.ndarray | Array | None,
                optimizer_config: optim.OptimizerConfig, *, num_samples: int,
                batch_size: int, epochs: int, seed: int,
                fill_value: float | Array = 0.0,
                dynamic_binarization: bool = False,
                params: Params | None = None,
                on_epoch: Callable[[dict], None] | None = None) -> Params:
  """θ maximizing (1/N) Σ_n MIWAE_K(x_n, m_n) by `epochs` passes of Adam.

  From θ₀ = `model.init(fold_in(PRNGKey(seed), 0), x̄)` (or `params`), one
  jitted `make_miwae_epoch` per pass; `on_epoch` gets {epoch, train_bound,
  epoch_wall_s}. A non-finite bound stops training (ValueError, one line).

  Args:
    model: the model.
    images: [N, d] training data (x_miss of each row is never read).
    masks: bool [N, d], the fixed missing pattern of each row; None: no
      mask (then MIWAE_K is IWAE_K, training on complete data).
    optimizer_config: the optimizer.
    num_samples: K.
    batch_size: B.
    epochs: passes.
    seed: seed of everything random.
    fill_value: f.
    dynamic_binarization: binarize each batch afresh.
    params: initial parameters (default: `model.init`).
    on_epoch: per-epoch rows.

  Returns:
    The trained parameters.
  """
  data = jnp.asarray(images, jnp.float32)
  if masks is None:
    masks = jnp.zeros(data.shape, bool)
  else:
    check_mask(masks, model.data_dim, allow_complete_rows=True)
    masks = jnp.asarray(masks)
  steps = data.shape[0] // batch_size
  if steps == 0:
    raise ValueError(f'batch_size: {batch_size} > {data.shape[0]} training '
                     'rows.')
  optimizer = optim.make_optimizer(optimizer_config, epochs * steps, steps)
  if params is None:
    params = model.init(jax.random.fold_in(jax.random.PRNGKey(seed), 0),
                        np.asarray(images).mean(0))
  state = optim.init_state(params, optimizer)
  epoch_fn = make_miwae_epoch(model, optimizer, num_samples, batch_size, seed,
                              fill_value, dynamic_binarization)
  for epoch in range(epochs):
    start = time.time()
    state, bound = epoch_fn(state, data, masks, jnp.int32(epoch))
    bound = float(bound)
    if not math.isfinite(bound):
      raise ValueError(f'train_miwae: the MIWAE bound became {bound} in '
                       f'epoch {epoch + 1}.')
    if on_epoch is not None:
      on_epoch({'epoch': epoch + 1, 'train_bound': bound,
                'epoch_wall_s': time.time() - start})
  return state.params


# Imputation.


def _evaluation_terms(dec, x, missing):
  """(log p(x_miss|z), E[x|z]) at the decoder `dec` (evaluation only)."""
  return masked_log_likelihood(dec, x, missing), dec.mean()


def _complete(x_tilde, missing, values):
  return jnp.where(missing, values, x_tilde)


@functools.partial(jax.jit, static_argnames=('model', 'num_samples',
                                             'num_draws'))
def importance_impute(model: model_lib.Model, params: Params, x: Array,
                      missing: Array, key: PRNGKey, *, num_samples: int,
                      num_draws: int = 1, fill_value: float | Array = 0.0
                      ) -> dict[str, Array]:
  """SIR imputation and log p̂(x_miss|x_obs) per row of x [B, d] (module).

    w_k = p(x_obs|z_k) p(z_k) / q(z_k|x̃),  z_k ~ q(z|x̃),  w̄ = w / Σ w,
    mean   = x_obs ∪ Σ_k w̄_k E[x_miss|z_k],
    draws  = x_obs ∪ x_miss,  x_miss ~ p(x_miss|z_k*),  k* ~ Cat(w̄),
    log p̂(x_obs)        = log (1/K) Σ_k w_k              (MIWAE_K),
    log p̂(x_miss|x_obs) = log Σ_k w̄_k p(x_miss|z_k)
                        = log p̂(x) - log p̂(x_obs)   (same samples),
    se² = (1/K)[v(a)/ā² + v(w)/w̄² - 2 c(a, w)/(ā w̄)],  a_k = w_k p(x_miss|z_k)
          (delta method for the ratio ā / w̄, v and c sample (co)variances),
    ESS = 1 / Σ_k w̄_k².

  Args:
    model: the model (a factorized decoder).
    params: its parameters.
    x: [B, d]; x_miss is read only for log p̂(x_miss|x_obs).
    missing: bool [B, d], True = missing.
    key: PRNG key.
    num_samples: K.
    num_draws: independent resampled completions per row (each from its own
      k*; with replacement among the same K samples).
    fill_value: f.

  Returns:
    {'mean' [B, d], 'draws' [B, n, d], 'log_p_obs', 'cond_ll', 'cond_ll_se',
     'ess' [B]}.
  """
  x_tilde = fill(x, missing, fill_value)
  q = model.encoder(params, x_tilde)
  k_z, k_pick, k_x = jax.random.split(key, 3)
  z = q.sample(k_z, (num_samples,))  # [K, B, D].
  log_w, _, dec = _log_weights(model, params, x_tilde, missing, z, q)
  log_miss, means = _evaluation_terms(dec, x, missing)  # [K, B], [K, B, d].
  w_bar = jax.nn.softmax(log_w, 0)
  picks = jax.random.categorical(k_pick, log_w.T,
                                 shape=(num_draws, x.shape[0]))  # [n, B].
  chosen = z[picks, jnp.arange(x.shape[0])]  # [n, B, D].
  values = model.decoder(params, chosen).sample(k_x)  # [n, B, d].
  k = float(num_samples)
  la, lw = log_w + log_miss, log_w
  a = jnp.exp(la - jnp.max(la, 0))
  w = jnp.exp(lw - jnp.max(lw, 0))
  a_bar, w_mean = jnp.mean(a, 0), jnp.mean(w, 0)
  cov = jnp.mean((a - a_bar) * (w - w_mean), 0)
  var_rel = (jnp.var(a, 0) / a_bar**2 + jnp.var(w, 0) / w_mean**2 -
             2 * cov / (a_bar * w_mean))
  return {
      'mean': _complete(x_tilde, missing, jnp.einsum('kb,kbd->bd', w_bar,
                                                     means)),
      'draws': jnp.swapaxes(_complete(x_tilde, missing, values), 0, 1),
      'log_p_obs': jax.nn.logsumexp(log_w, 0) - math.log(k),
      'cond_ll': jax.nn.logsumexp(log_w + log_miss, 0) -
                 jax.nn.logsumexp(log_w, 0),
      'cond_ll_se': jnp.sqrt(jnp.maximum(var_rel, 0.0) / k),
      'ess': 1.0 / jnp.sum(w_bar**2, 0)}


def _select(accept, new, old, d):
  """The decoder at z_t: `new` where accepted, else `old` (leaves broadcast
  to the batch shape [..., d])."""
  return jax.tree.map(lambda a, c: jnp.where(accept[..., None], a, c),
                      _full(new, accept.shape + (d,)),
                      _full(old, accept.shape + (d,)))


def _full(dist, shape):
  """The distribution with every leaf broadcast to `shape` (a scan carry)."""
  return jax.tree.map(lambda a: jnp.broadcast_to(a, shape), dist)


@functools.partial(jax.jit, static_argnames=(
    'model', 'num_chains', 'num_steps', 'burn_in', 'metropolis',
    'fixed_proposal'))
def _gibbs(model, params, x, missing, key, *, num_chains, num_steps, burn_in,
           metropolis, fill_value, fixed_proposal=False):
  b, d = x.shape
  x_tilde = fill(x, missing, fill_value)
  xt = jnp.broadcast_to(x_tilde[:, None], (b, num_chains, d))
  xs = jnp.broadcast_to(x[:, None], (b, num_chains, d))
  ms = jnp.broadcast_to(missing[:, None], (b, num_chains, d))
  prior = model.prior(params)
  k0, key = jax.random.split(key)
  z0 = model.encoder(params, xt).sample(k0)  # [B, S, D].
  dec0 = _full(model.decoder(params, z0), (b, num_chains, d))
  kept = num_steps - burn_in

  def step(carry, inputs):
    x_hat, z, dec, log_sum, mean_sum, accepted = carry
    t, k = inputs
    kz, ku, kx = jax.random.split(k, 3)
    q = model.encoder(params, xt if fixed_proposal else x_hat)
    z_new = q.sample(kz)
    dec_new = model.decoder(params, z_new)
    if metropolis:  # log ρ with the full likelihood of the completion x̂.
      log_target = lambda zz, dd: (
          model_lib.event_log_prob(dd, x_hat) +
          model_lib.event_log_prob(prior, zz) -
          model_lib.event_log_prob(q, zz))
      log_rho = log_target(z_new, dec_new) - log_target(z, dec)
      accept = jnp.log(jax.random.uniform(ku, log_rho.shape)) < log_rho
      z_new = jnp.where(accept[..., None], z_new, z)
      dec_new = _select(accept, dec_new, dec, d)
    else:
      accept = jnp.ones(z.shape[:-1], bool)
      dec_new = _full(dec_new, (b, num_chains, d))
    x_hat = _complete(x_tilde[:, None], ms, dec_new.sample(kx))
    log_miss, mean = _evaluation_terms(dec_new, xs, ms)
    on = t >= burn_in
    log_sum = jnp.where(on, jnp.logaddexp(log_sum, log_miss), log_sum)
    mean_sum = mean_sum + jnp.where(on, mean, 0.0)
    accepted = accepted + accept.astype(jnp.float32)
    trace = masked_log_likelihood(dec_new, xt, ~ms)  # log p(x_obs|z_t).
    return (x_hat, z_new, dec_new, log_sum, mean_sum, accepted), trace

  init = (xt, z0, dec0, jnp.full((b, num_chains), -jnp.inf),
          jnp.zeros((b, num_chains, d)), jnp.zeros((b, num_chains)))
  (x_hat, _, _, log_sum, mean_sum, accepted), trace = jax.lax.scan(
      step, init, (jnp.arange(num_steps), jax.random.split(key, num_steps)))
  total = kept * num_chains
  cond_ll = jax.nn.logsumexp(log_sum, 1) - math.log(total)
  mean = _complete(x_tilde, missing, jnp.sum(mean_sum, 1) / total)
  # ESS of the post-burn-in traces [T', B, S] -> per row [B].
  ess = jax.vmap(lambda tr: blackjax.diagnostics.effective_sample_size(
      tr, chain_axis=1, sample_axis=0), in_axes=1)(trace[burn_in:])
  return {'draws': x_hat, 'mean': mean, 'cond_ll': cond_ll, 'ess': ess,
          'acceptance': jnp.mean(accepted, 1) / num_steps}


def _check_chains(num_chains: int, num_steps: int, burn_in: int) -> None:
  if num_chains < 1 or not 0 <= burn_in < num_steps:
    raise ValueError(f'chains: need num_chains >= 1 and 0 <= burn_in < '
                     f'num_steps, got {num_chains}, {burn_in}, {num_steps}.')


def pseudo_gibbs(model: model_lib.Model, params: Params, x: Array,
                 missing: Array, key: PRNGKey, *, num_chains: int,
                 num_steps: int, burn_in: int,
                 fill_value: float | Array = 0.0) -> dict[str, Array]:
  """Pseudo-Gibbs imputation (Rezende et al. 2014), S chains per row of x.

    z_t ~ q(z|x̂_{t-1}),  x_miss,t ~ p(x_miss|z_t),  x̂_0 = x̃;
    mean    = x_obs ∪ (1/(S T')) Σ_{s, t > burn_in} E[x_miss|z_st],
    cond_ll = log (1/(S T')) Σ_{s, t > burn_in} p(x_miss|z_st),

  T' = num_steps - burn_in. Not exact unless q(z|x) = p(z|x).

  Args:
    model: the model (a factorized decoder).
    params: its parameters.
    x: [B, d]; x_miss is read only for cond_ll.
    missing: bool [B, d].
    key: PRNG key.
    num_chains: S.
    num_steps: T, steps per chain.
    burn_in: steps left out of the averages.
    fill_value: f (the chains' start x̃).

  Returns:
    {'draws': the final x̂ of each chain [B, S, d], 'mean' [B, d], 'cond_ll',
     'ess' (multi-chain ESS of log p(x_obs|z_t)), 'acceptance' (1) [B]}.
  """
  _check_chains(num_chains, num_steps, burn_in)
  return _gibbs(model, params, x, missing, key, num_chains=num_chains,
                num_steps=num_steps, burn_in=burn_in, metropolis=False,
                fill_value=fill_value)


def metropolis_gibbs(model: model_lib.Model, params: Params, x: Array,
                     missing: Array, key: PRNGKey, *, num_chains: int,
                     num_steps: int, burn_in: int,
                     fill_value: float | Array = 0.0,
                     proposal: str = 'completed') -> dict[str, Array]:
  """Metropolis-within-Gibbs imputation (Mattei & Frellsen 2018).

    z̃ ~ q(z|x̂_{t-1}), z_t = z̃ with probability min(1, ρ) (module), else
    z_{t-1};  x_miss,t ~ p(x_miss|z_t);  x̂_0 = x̃, z_0 ~ q(z|x̃);

  with proposal='masked' the proposal is q(z|x̃) at every step (and in ρ):
  a fixed independence proposal, as valid, and better where the encoder
  was trained on masked inputs (MIWAE). 'mean', 'cond_ll' and 'ess' as in
  `pseudo_gibbs`; 'acceptance' is the fraction of accepted proposals per
  row, over all steps and chains. Asymptotically exact: (z_t, x_miss,t) →
  p(z, x_miss|x_obs).
  """
  _check_chains(num_chains, num_steps, burn_in)
  if proposal not in ('completed', 'masked'):
    raise ValueError(f'proposal: {proposal!r} is not completed or masked.')
  return _gibbs(model, params, x, missing, key, num_chains=num_chains,
                num_steps=num_steps, burn_in=burn_in, metropolis=True,
                fill_value=fill_value, fixed_proposal=proposal == 'masked')
