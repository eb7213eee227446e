"""Minibatch noise against Monte Carlo noise: the law of total variance.

Data x_1..x_n; ĝ_N(x; z) an unbiased estimate of g(x) = ∇ELBO(x) from N
samples z ~ q(z|x). The minibatch estimate on B examples drawn uniformly
WITH replacement, Ĝ = (1/B) Σ_b ĝ_N(x_{i_b}; z_b), has (traces: summed over
the coordinates of a parameter group)

    Var Ĝ = Var_I[E_z Ĝ] + E_I[Var_z Ĝ] = V_data/B + E_x[σ²_N(x)]/B,

    V_data   = (1/n) Σ_i ‖g(x_i) - ḡ‖²,   ḡ = (1/n) Σ_i g(x_i),
    σ²_N(x)  = tr Var_z ĝ_N(x; z).

Derivation: given the indices I, E_z Ĝ = (1/B) Σ_b g(x_{i_b}) is a mean of B
i.i.d. draws of g(x_i), i uniform, whose variance is V_data; and the z_b are
independent given I, so Var_z Ĝ = (1/B²) Σ_b σ²_N(x_{i_b}), whose mean over
I is E_x[σ²_N]/B. An estimator that averages N i.i.d. one-sample estimates
(pathwise; score function with a constant baseline b) has σ²_N = σ²_1/N, so
E_I[Var_z Ĝ] = E_x[σ²_1]/(B·N). The leave-one-out estimator (score_rloo) is
a U-statistic with kernel h = its N = 2 estimate, so (Hoeffding 1948)

    σ²_N = [4(N - 2) ζ₁ + 2 ζ₂] / (N (N - 1)),
    ζ₁ = tr Var_a E_b h(a, b),   ζ₂ = tr Var_{a,b} h(a, b);

a mean is the kernel h = (ĝ_1(a) + ĝ_1(b))/2, for which this is σ²_1/N.

`decompose` measures both parts from draws of two minibatches × two z-draws
each (pairs of i.i.d. estimates: E ½‖u - v‖² = tr Var u), averaged with
standard errors by `vae.moments.moments`. The minibatches of every B are
the first B of B_max i.i.d. indices (`prefix_gradients`), so one backward
pass over B_max examples serves all B.

On the linear-Gaussian model (`vae.problems.linear_gaussian`, a linear
encoder from `vae.problems.amortization`) every estimator here is a
polynomial of degree ≤ 4 in ε (z = μ + σε), so tensor Gauss–Hermite
quadrature with 5 nodes per dimension gives g(x), ζ₁ and ζ₂ exactly
(`exact_parts`), from explicit one-sample formulas written independently of
the registry's surrogates.
"""

import functools
import itertools
from typing import Any, Callable, Sequence

import jax
from jax import flatten_util
import jax.numpy as jnp
import numpy as np

from vae import comparison
from vae import config as cfg
from vae import distributions as dists
from vae import model as model_lib
from vae import moments
from vae import objectives
from vae import stats
from vae import types
from vae.analysis import vae_gradients as vg
from vae.estimators import registry
from vae.problems import amortization as am
from vae.problems import linear_gaussian as lg

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey
GROUPS = vg.GROUPS
OBJECTIVE = 'elbo'  # Analytic KL: the estimators differ in E_q[log p(x|z)].
# The estimators measured, with their kernels h(a, b) on the encoder (given
# f = log p(x|z), score s = ∇_φ log q(z|x), pathwise p = ∇_φ f(μ + σε) at two
# noises a, b, and a constant baseline c); the decoder's is (d_a + d_b)/2.
KERNELS = {
    'pathwise': lambda f, s, p, c: (p[0] + p[1]) / 2,
    'score': lambda f, s, p, c: (f[0] * s[0] + f[1] * s[1]) / 2,
    'score_moving_average': lambda f, s, p, c: ((f[0] - c) * s[0] +
                                                (f[1] - c) * s[1]) / 2,
    'score_rloo': lambda f, s, p, c: (f[0] - f[1]) * (s[0] - s[1]) / 2,
}
ESTIMATORS = tuple(KERNELS)
# Measured on the image VAE only (no kernel, no closed form): DReG of
# ∇IWAE_K, K = N. Its target depends on K, and so do its V_data and ‖G‖².
IWAE_ESTIMATORS = ('dreg',)
VAE_ESTIMATORS = ESTIMATORS + IWAE_ESTIMATORS


def objective_of(estimator: str) -> str:
  """'elbo' (analytic KL) for the ∇ELBO estimators, 'iwae' for DReG."""
  return 'iwae' if estimator in IWAE_ESTIMATORS else OBJECTIVE
HERMITE_NODES = 5  # Exact for polynomials of degree ≤ 9 per dimension.


def prefix_gradients(surrogate: Callable[[Params, Array, PRNGKey], Array],
                     params: Params, batch: Array, key: PRNGKey,
                     batch_sizes: Sequence[int]) -> dict[int, dict]:
  """{B: {group: ĝ_B}}, ĝ_B = ∇_θ (1/B) Σ_{b<B} S(θ, x_b, k_b) for each B.

  The minibatch of size B is the first B rows of `batch`; example b has the
  key k_b whatever B. One gradient per block [B_{j-1}, B_j) of examples,
  summed cumulatively: the cost of the largest minibatch alone.
  """
  sizes = sorted(set(batch_sizes))
  keys = jax.random.split(key, sizes[-1])
  out, total, start = {}, None, 0
  for size in sizes:
    block = lambda p, x=batch[start:size], k=keys[start:size]: jnp.sum(
        jax.vmap(lambda xi, ki: surrogate(p, xi, ki))(x, k))
    grads = jax.grad(block)(params)
    total = grads if total is None else jax.tree.map(jnp.add, total, grads)
    out[size] = {g: flatten_util.ravel_pytree(total[g])[0] / size
                 for g in GROUPS}
    start = size
  return out


def seconds_per_estimate(
    surrogates: dict[str, Callable[[Params, Array, PRNGKey], Array]],
    params: Params, batch: Array, key: PRNGKey) -> dict[str, float]:
  """{name: seconds of one minibatch estimate Ĝ = ∇_θ (1/B) Σ_b S(θ, x_b,
  k_b) on `batch` [B, ...]} (`comparison.seconds_per_calls`: compiled,
  warm, median of repeats taken round the surrogates in turn)."""
  def estimator(surrogate):
    def estimate(p, x, k):
      keys = jax.random.split(k, x.shape[0])
      return jax.grad(lambda q: jnp.mean(jax.vmap(
          lambda xi, ki: surrogate(q, xi, ki))(x, keys)))(p)
    return estimate
  return comparison.seconds_per_calls({
      n: (estimator(s), (params, batch, key)) for n, s in surrogates.items()})


def with_seconds(records: list[dict], seconds: dict[str, float],
                 size: int) -> list[dict]:
  """Rows at minibatch size `size` get 'seconds' (per estimate of their
  estimator) and 'efficiency' = total × seconds; 'device' names where."""
  device = comparison.device_name()
  for r in records:
    if r['B'] == size:
      r.update(seconds=seconds[r['estimator']], device=device,
               efficiency=r['total'] * seconds[r['estimator']])
  return records


def decompose(estimate: Callable[[Array, PRNGKey], Any], key: PRNGKey,
              num_examples: int, max_batch: int, num_draws: int,
              chunk: int = 1,
              mesh: jax.sharding.Mesh | None = None) -> dict[str, Any]:
  """Both parts of Var Ĝ for every leaf of `estimate`, with standard errors.

  A draw takes two minibatches I, J (i.i.d. indices) and two z-draws for
  each: Ĝ_1, Ĝ_2 on I, Ĝ_3, Ĝ_4 on J. Since E ½‖u - v‖² = tr Var u for
  u, v i.i.d., and d_jk = ½‖Ĝ_j - Ĝ_k‖²,

      within  = (d_12 + d_34)/2                      E = E_I[Var_z Ĝ]
      total   = (d_13 + d_14 + d_23 + d_24)/4        E = Var Ĝ
      between = total - within                       E = Var_I[E_z Ĝ]

  are unbiased; `vae.moments.moments` averages them over the draws, and a
  part's standard error is √(variance over draws / draws).

  Args:
    estimate: (indices [max_batch], key) -> pytree of flat gradients, one
      minibatch estimate per leaf (e.g. `prefix_gradients`).
    key: PRNG key.
    num_examples: n; indices are drawn uniformly from range(n).
    max_batch: indices per minibatch.
    num_draws: draws (each four minibatch estimates).
    chunk: draws per vmapped chunk (1: a scan over draws).
    mesh: split each chunk's draws over its devices (`vae.moments`; the
      chunk a multiple of its size): the same draws, so the same parts up
      to float rounding.

  Also the signal ‖G‖², G = E Ĝ (the full-data gradient), without bias
  from the two independent minibatches: since Ĝ_j, Ĝ_k are independent for
  j on I and k on J, E⟨Ĝ_j, Ĝ_k⟩ = ⟨G, G⟩, and

      signal  = (⟨Ĝ_1,Ĝ_3⟩ + ⟨Ĝ_1,Ĝ_4⟩ + ⟨Ĝ_2,Ĝ_3⟩ + ⟨Ĝ_2,Ĝ_4⟩)/4   E = ‖G‖²

  (‖Ĝ‖² itself is biased by Var Ĝ).

  Returns:
    {'within', 'between', 'total', 'signal'}: each {'estimate', 'se'},
    trees of scalars like `estimate`'s; 'cov_total_signal': the covariance
    over draws of total and signal (a tree of scalars).
  """
  def parts(g):
    half_sq = lambda a, b: jnp.sum((g[a] - g[b])**2) / 2
    within = (half_sq(0, 1) + half_sq(2, 3)) / 2
    total = sum(half_sq(a, b) for a in (0, 1) for b in (2, 3)) / 4
    signal = sum(jnp.vdot(g[a], g[b]) for a in (0, 1) for b in (2, 3)) / 4
    return {'within': within, 'between': total - within, 'total': total,
            'signal': signal, 'total_x_signal': total * signal}

  def draw(k):
    k_index, k_z = jax.random.split(k)
    index = jax.random.randint(k_index, (2, max_batch), 0, num_examples)
    grads = jax.vmap(estimate)(jnp.repeat(index, 2, axis=0),
                               jax.random.split(k_z, 4))
    return jax.tree.map(parts, grads)

  out = moments.moments(draw, key, num_draws, chunk=chunk, mesh=mesh)
  is_parts = lambda x: isinstance(x, dict) and 'within' in x
  pick = lambda tree, part: jax.tree.map(lambda p: p[part], tree,
                                         is_leaf=is_parts)
  result = {part: {'estimate': pick(out['mean'], part),
                   'se': jax.tree.map(lambda v: jnp.sqrt(v / num_draws),
                                      pick(out['variance'], part))}
            for part in ('within', 'between', 'total', 'signal')}
  # Cov(t, s) over draws, for the delta-method SE of a ratio (`noise_scale`).
  d = num_draws / (num_draws - 1)
  result['cov_total_signal'] = jax.tree.map(
      lambda ts, t, s: d * (ts - t * s), pick(out['mean'], 'total_x_signal'),
      result['total']['estimate'], result['signal']['estimate'])
  return result


def noise_scale(size: int, total: float, total_se: float, signal: float,
                signal_se: float, cov: float,
                num_draws: int) -> tuple[float, float]:
  """B_noise = B·Var Ĝ / ‖G‖² and its delta-method standard error.

  B·Var Ĝ = V_data + σ²_N is the noise per example (`decompose`'s total at
  minibatch size B), ‖G‖² the signal. With t, s the per-draw total and
  signal, means t̄, s̄ and R = t̄/s̄,

      SE(R) ≈ √(Var(t) - 2R Cov(t, s) + R² Var(s)) / (|s̄| √D),

  Var(t) = D·SE(t̄)², likewise s. Meaningful where s̄ is resolved (|s̄| ≫
  its SE); a negative B_noise means the signal is not.
  """
  ratio = total / signal
  var_t, var_s = num_draws * total_se**2, num_draws * signal_se**2
  spread = max(var_t - 2 * ratio * cov + ratio**2 * var_s, 0.0)
  se = np.sqrt(spread / num_draws) / abs(signal)
  return size * ratio, size * float(se)


def rows(parts: dict[str, Any], num_samples: int, num_draws: int,
         **labels) -> list[dict]:
  """One row per (estimator, B, group) of `decompose` over {e: {B: {g}}}.

  minibatch_share = between/total: the part of Var Ĝ from drawing the data;
  signal = ‖G‖²; b_noise = (V_data + σ²_N)/‖G‖² (`noise_scale`), the
  gradient noise scale of McCandlish et al. (2018) at N samples.
  """
  parts = jax.tree.map(float, jax.device_get(parts))
  out = []
  for est, per_b in parts['total']['estimate'].items():
    for size, per_group in per_b.items():
      for group in per_group:
        row = {**labels, 'estimator': est, 'group': group, 'B': size,
               'N': num_samples, 'budget': size * num_samples}
        for part in ('between', 'within', 'total', 'signal'):
          row[part] = parts[part]['estimate'][est][size][group]
          row[part + '_se'] = parts[part]['se'][est][size][group]
        row['minibatch_share'] = row['between'] / row['total']
        row['b_noise'], row['b_noise_se'] = noise_scale(
            size, row['total'], row['total_se'], row['signal'],
            row['signal_se'], parts['cov_total_signal'][est][size][group],
            num_draws)
        out.append(row)
  return out


def best_per_budget(records: Sequence[dict],
                    keys: Sequence[str] = ('estimator', 'group')) -> list[dict]:
  """Per `keys` and budget B·N: the (B, N) of least total variance.

  Only budgets reached by more than one (B, N) are listed; ratio_to_worst =
  least / largest total variance at that budget.
  """
  cells: dict[tuple, list[dict]] = {}
  for r in records:
    cells.setdefault(tuple(r[k] for k in keys) + (r['budget'],), []).append(r)
  out = []
  for label, rs in cells.items():
    if len(rs) > 1:
      best = min(rs, key=lambda r: r['total'])
      out.append({**dict(zip(keys, label[:-1])), 'budget': label[-1],
                  'best_B': best['B'], 'best_N': best['N'],
                  'total': best['total'], 'ratio_to_worst': best['total'] /
                  max(r['total'] for r in rs),
                  'candidates': ' '.join(f'{r["B"]}x{r["N"]}' for r in rs)})
  return out


def vae_surrogate(model: model_lib.Model, estimator: str, num_samples: int,
                  baseline: Array) -> Callable[[Params, Array, PRNGKey],
                                               Array]:
  """S(params, x, key): one example's surrogate (`objective_of`)."""
  def surrogate(params, x, key):
    return model_lib.example_surrogate(
        model, params, x, key, objective_of(estimator), estimator,
        num_samples, baseline=baseline if estimator in KERNELS else None)
  return surrogate


@functools.lru_cache(maxsize=None)
def vae_study(model: model_lib.Model, estimators: tuple[str, ...],
              num_samples: int, batch_sizes: tuple[int, ...],
              num_draws: int, mesh: jax.sharding.Mesh | None = None):
  """Jitted (params, images, key, baseline) -> `decompose` of the VAE's ELBO
  gradient (IWAE_N for DReG), {estimator: {B: {group}}} from
  `model.example_surrogate`, every estimator on the same z (common random
  numbers). With a `mesh`, chunks of its size of draws are split over its
  devices (else a scan over draws)."""
  def fn(params, images, key, baseline):
    def estimate(index, k):
      return {e: prefix_gradients(
          vae_surrogate(model, e, num_samples, baseline),
          params, images[index], k, batch_sizes) for e in estimators}
    return decompose(estimate, key, images.shape[0], max(batch_sizes),
                     num_draws, 1 if mesh is None else mesh.size, mesh)
  return jax.jit(fn)


def grid(estimators: Sequence[str], sample_counts: Sequence[int]
         ) -> list[tuple[int, tuple[str, ...]]]:
  """[(N, the estimators valid at N (registry min_samples))], N ascending."""
  return [(n, tuple(e for e in estimators
                    if n >= registry.lookup(e).min_samples))
          for n in sorted(set(sample_counts))]


def measure_vae(model: model_lib.Model, params: Params, images: Array,
                key: PRNGKey, estimators: Sequence[str],
                batch_sizes: Sequence[int], sample_counts: Sequence[int],
                num_draws: int, baseline_examples: int,
                mesh: jax.sharding.Mesh | None = None,
                **labels) -> list[dict]:
  """`rows` of `vae_study` at every N (score_moving_average's baseline
  from `vae_baseline` with its own key); the draws split over `mesh`'s
  devices if given (num_draws a multiple of their number)."""
  k_baseline, k_draws = jax.random.split(key)
  c = vae_baseline(model, params, images, k_baseline, baseline_examples)
  out, size = [], max(batch_sizes)
  for n, ests in grid(estimators, sample_counts):
    parts = vae_study(model, ests, n, tuple(sorted(set(batch_sizes))),
                      num_draws, mesh)(params, images,
                                 jax.random.fold_in(k_draws, n), c)
    seconds = seconds_per_estimate(
        {e: vae_surrogate(model, e, n, c) for e in ests}, params,
        images[:size], k_draws)
    out += with_seconds(rows(parts, n, num_draws, **labels), seconds, size)
  return out


def vae_baseline(model: model_lib.Model, params: Params, images: Array,
                 key: PRNGKey, num_examples: int) -> Array:
  """c = (1/M) Σ_m log p(x_m|z_m), M random training images, one z each.

  The constant baseline of score_moving_average: independent of the draws
  it is used with, so the estimator stays unbiased.
  """
  k_index, k_z = jax.random.split(key)
  index = jax.random.randint(k_index, (num_examples,), 0, images.shape[0])
  return vg.score_cost(model, params, images[index], k_z, OBJECTIVE)


# The linear-Gaussian check.


def linear_gaussian_problem(key: PRNGKey, data_dim: int, latent_dim: int,
                            num_examples: int, noise_scale: float = 1.0
                            ) -> tuple[Params, Array, Array]:
  """(params, data [n, D], baseline c) of an exactly solvable VAE.

  Decoder: x|z ~ N(Wz + b, σ² I), W, b ~ N(0, 1); the linear encoder of
  `amortization.init_encoder`, q(z|x) = N(xA, diag e^{2xC}), A, C ~
  N(0, 0.01/D): near the prior, far from the posterior; data drawn from the
  decoder; c = (1/n) Σ_i E_q[log p(x_i|z)] = mean of ELBO + KL(q ‖ p(z)).
  """
  k_model, k_data, k_encoder = jax.random.split(key, 3)
  decoder = lg.random_model(k_model, data_dim, latent_dim, noise_scale)
  data, _ = lg.sample_data(decoder, k_data, num_examples)
  encoder = am.init_encoder(k_encoder, 'linear', data_dim, latent_dim)
  q = am.encode(encoder, data)
  kl = 0.5 * jnp.sum(q.variance() + q.loc**2 - 1.0 - 2.0 * q.log_scale, -1)
  baseline = jnp.mean(am.batch_elbo(decoder, data, q) + kl)
  return {'encoder': encoder, 'decoder': decoder}, data, baseline


def linear_gaussian_surrogate(estimator: str, num_samples: int,
                              baseline: Array):
  """S(params, x, key): `objectives.surrogate_objective` of the ELBO."""
  def surrogate(params, x, key):
    q = am.encode(params['encoder'], x)
    return objectives.surrogate_objective(
        OBJECTIVE, estimator, lambda z: lg.log_likelihood(
            params['decoder'], x, z), q,
        dists.standard_normal(q.loc.shape, x.dtype), key, num_samples,
        baseline=baseline)
  return surrogate


@functools.lru_cache(maxsize=None)
def linear_gaussian_study(estimators: tuple[str, ...], num_samples: int,
                          batch_sizes: tuple[int, ...], num_draws: int,
                          chunk: int = 1):
  """Jitted (params, data, key, baseline) -> `decompose` on the
  linear-Gaussian VAE, {estimator: {B: {group}}}."""
  def fn(params, data, key, baseline):
    def estimate(index, k):
      return {e: prefix_gradients(
          linear_gaussian_surrogate(e, num_samples, baseline), params,
          data[index], k, batch_sizes) for e in estimators}
    return decompose(estimate, key, data.shape[0], max(batch_sizes),
                     num_draws, chunk)
  return jax.jit(fn)


def _one_sample(params: Params, x: Array, eps: Array):
  """f, ∇_θ f, ∇_φ f(μ + σε), ∇_φ log q(z|x) (z fixed) and ∇_φ KL at ε."""
  enc, dec = params['encoder'], params['decoder']
  z_of = lambda e: am.encode(e, x).loc + am.encode(e, x).scale * eps
  z = z_of(enc)
  flat = lambda t: flatten_util.ravel_pytree(t)[0]
  kl = lambda e: 0.5 * jnp.sum(am.encode(e, x).variance() + am.encode(
      e, x).loc**2 - 1.0 - 2.0 * am.encode(e, x).log_scale)
  return (lg.log_likelihood(dec, x, z),
          flat(jax.grad(lambda m: lg.log_likelihood(m, x, z))(dec)),
          flat(jax.grad(lambda e: lg.log_likelihood(dec, x, z_of(e)))(enc)),
          flat(jax.grad(lambda e: jnp.sum(am.encode(e, x).log_prob(z)))(enc)),
          flat(jax.grad(kl)(enc)))


def hermite_grid(dim: int) -> tuple[np.ndarray, np.ndarray]:
  """Nodes [5^dim, dim] and weights (sum 1) of tensor Gauss–Hermite
  quadrature for E_{ε~N(0,I)}: exact for degree ≤ 9 in each coordinate."""
  x, w = np.polynomial.hermite_e.hermegauss(HERMITE_NODES)
  nodes = np.array(list(itertools.product(x, repeat=dim)))
  weights = np.prod(np.array(list(itertools.product(w, repeat=dim))), -1)
  return nodes, weights / weights.sum()


@functools.partial(jax.jit, static_argnums=0)
def example_moments(estimator: str, params: Params, x: Array,
                    baseline: Array) -> dict[str, Array]:
  """Exact g(x) = E h, ζ₁ and ζ₂ per coordinate (encoder ++ decoder).

  E h = Σ_ij w_i w_j h_ij, ζ₁ = Σ_i w_i (Σ_j w_j h_ij - E h)²,
  ζ₂ = Σ_ij w_i w_j (h_ij - E h)², h_ij = h(ε_i, ε_j) on `hermite_grid`.
  """
  nodes, w = (jnp.asarray(a, x.dtype) for a in hermite_grid(
      params['decoder'].latent_dim))
  f, dec, path, score, kl = jax.vmap(lambda e: _one_sample(params, x, e))(
      nodes)
  pair = lambda a: (a[:, None], a[None, :])
  enc = KERNELS[estimator](pair(f[:, None]), pair(score), pair(path),
                           baseline) - kl[0]
  h = jnp.concatenate([enc, (dec[:, None] + dec[None, :]) / 2], -1)
  ww = w[:, None, None] * w[None, :, None]
  mean = jnp.sum(ww * h, (0, 1))
  zeta1 = jnp.sum(w[:, None] * (jnp.sum(w[None, :, None] * h, 1) - mean)**2,
                  0)
  zeta2 = jnp.sum(ww * (h - mean)**2, (0, 1))
  return {'mean': mean, 'zeta1': zeta1, 'zeta2': zeta2}


def sample_variance(zeta1: Array, zeta2: Array, num_samples: int) -> Array:
  """σ²_N = [4(N-2)ζ₁ + 2ζ₂]/(N(N-1)) (N ≥ 2); 4ζ₁ = σ²_1 for a mean."""
  n = num_samples
  if n == 1:
    return 4 * zeta1
  return (4 * (n - 2) * zeta1 + 2 * zeta2) / (n * (n - 1))


def exact_parts(estimator: str, params: Params, data: Array,
                baseline: Array, batch_sizes: Sequence[int],
                sample_counts: Sequence[int]) -> dict[tuple, dict]:
  """{(B, N, group): {'between': V_data/B, 'within': E_x[σ²_N]/B,
  'signal': ‖ḡ‖², 'b_noise': (V_data + E_x[σ²_N])/‖ḡ‖²}}."""
  per = jax.vmap(lambda x: example_moments(estimator, params, x, baseline))(
      data)
  per = jax.tree.map(lambda a: np.asarray(a, np.float64), per)
  size_enc = flatten_util.ravel_pytree(params['encoder'])[0].size
  out = {}
  for group, sl in (('encoder', np.s_[:size_enc]),
                    ('decoder', np.s_[size_enc:])):
    g = per['mean'][:, sl]
    v_data = np.mean(np.sum((g - g.mean(0))**2, -1))
    signal = float(np.sum(g.mean(0)**2))
    for b, n in itertools.product(batch_sizes, sample_counts):
      within = np.mean(np.sum(sample_variance(
          per['zeta1'][:, sl], per['zeta2'][:, sl], n), -1))
      out[b, n, group] = {'between': v_data / b, 'within': within / b,
                          'signal': signal,
                          'b_noise': (v_data + within) / signal}
  return out


@cfg.settings
class CheckConfig:
  """The linear-Gaussian problem of `check_linear_gaussian`."""
  check_data_dim: int = cfg.setting(4, 'Linear-Gaussian check: data '
                                    'dimension.', min=1, max=100)
  check_latent_dim: int = cfg.setting(
      2, 'Linear-Gaussian check: latent dimension d (quadrature on 5^(2d) '
      'nodes).', min=1, max=3)
  check_examples: int = cfg.setting(32, 'Linear-Gaussian check: examples.',
                                    min=1, max=10**4)
  check_draws: int = cfg.setting(20000, 'Linear-Gaussian check: draws per N.',
                                 min=2, max=10**7)


def check_linear_gaussian(key: PRNGKey, config: CheckConfig,
                          estimators: Sequence[str],
                          batch_sizes: Sequence[int],
                          sample_counts: Sequence[int]) -> list[dict]:
  """Measured parts (`linear_gaussian_study`) against `exact_parts`, with
  their checks (`compare_exact`); float64 where the caller enables it."""
  sizes, out = tuple(sorted(set(batch_sizes))), []
  estimators = [e for e in estimators if e in KERNELS]  # Closed forms.
  params, x, c = linear_gaussian_problem(
      key, config.check_data_dim, config.check_latent_dim,
      config.check_examples)
  cells = grid(estimators, sample_counts)
  for n, ests in cells:
    parts = linear_gaussian_study(ests, n, sizes, config.check_draws)(
        params, x, jax.random.fold_in(key, n), c)
    batch = x[jnp.arange(sizes[-1]) % x.shape[0]]
    seconds = seconds_per_estimate(
        {e: linear_gaussian_surrogate(e, n, c) for e in ests}, params, batch,
        key)
    out += with_seconds(rows(parts, n, config.check_draws,
                             section='linear_gaussian'), seconds, sizes[-1])
  exact = {e: exact_parts(e, params, x, c, sizes, [
      n for n, ests in cells if e in ests]) for e in estimators}
  return compare_exact(out, exact)


def compare_exact(records: Sequence[dict],
                  exact: dict[str, dict[tuple, dict]]) -> list[dict]:
  """Rows with exact_*, *_z = (estimate - exact)/SE and their checks.

  The between, within, signal (‖G‖²) and b_noise z are two-sided checks (`stats.CHECKS`) for
  `stats.mark_disagreements`. The SEs come from the spread of the draws:
  score-function draws are heavy-tailed, and a few thousand draws of them
  understate it (at 2,000 draws 3 of 30 correct checks of `CheckConfig`'s
  size were flagged, at 20,000 none).
  """
  out = []
  for r in records:
    e = exact[r['estimator']][r['B'], r['N'], r['group']]
    row = dict(r)
    for part in ('between', 'within', 'signal', 'b_noise'):
      row['exact_' + part] = e[part]
      row[part + '_z'] = float(stats.mean_z(r[part], e[part],
                                            r[part + '_se'], 1))
    row[stats.CHECKS] = [(row[part + '_z'], 'two-sided') for part in (
        'between', 'within', 'signal', 'b_noise')]
    out.append(row)
  return out


def dominance(records: Sequence[dict]) -> list[dict]:
  """Per (epoch, estimator, group, N): which part dominates Var Ĝ.

  Both parts scale as 1/B, so minibatch_share = V_data/(V_data + E_x σ²_N)
  does not depend on B; it is read at the largest B (the smallest relative
  standard errors). dominant: 'minibatch' if the share exceeds ½, else 'z'.
  """
  largest: dict[tuple, dict] = {}
  for r in records:
    key = (r.get('epoch'), r['estimator'], r['group'], r['N'])
    if key not in largest or r['B'] > largest[key]['B']:
      largest[key] = r
  return [{'epoch': r.get('epoch'), 'estimator': r['estimator'],
           'group': r['group'], 'N': r['N'], 'B': r['B'],
           'between': r['between'], 'between_se': r['between_se'],
           'within': r['within'], 'within_se': r['within_se'],
           'minibatch_share': r['minibatch_share'],
           'dominant': 'minibatch' if r['minibatch_share'] > 0.5 else 'z',
           **{k: r[k] for k in ('signal', 'signal_se', 'b_noise',
                                'b_noise_se', 'total', 'seconds',
                                'efficiency') if k in r}}
          for r in largest.values()]
