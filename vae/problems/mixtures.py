"""Gaussian mixtures: log-density, sampling, closed-form Gaussian MLE and EM.

A mixture with K full-covariance components in D dimensions,

    p(x) = Σ_k π_k N(x; μ_k, Σ_k),   π = softmax(logits),

is a `GaussianMixture` pytree (N: `distributions.MultivariateNormal`).
`fit_em` runs expectation-maximization (Dempster et al. 1977) in pure JAX
under `lax.scan`, with responsibilities in
log space, and returns the log-likelihood after every iteration (which EM
never decreases). Also here: the decomposition of the expected negative
log-likelihood into entropy + KL, E_p[-log q] = H(p) + KL(p ‖ q), by Monte
Carlo over samples of p or by quadrature on a grid (D ≤ 2), which shows that
maximum likelihood minimizes KL(p_data ‖ p_model). `true_mixture` is the
known p_data of `experiments/mixture_of_gaussians`, `fit_models` its
closed-form and EM fits and `compare` its checked comparison of a model
with p_data.
"""

import functools
import math

import jax
import jax.numpy as jnp

from vae import distributions as dists
from vae import stats
from vae import types

Array = types.Array
PRNGKey = types.PRNGKey


@types.pytree_dataclass
class GaussianMixture:
  """p(x) = Σ_k softmax(logits)_k N(x; means_k, covariances_k).

  Attributes:
    logits: unnormalized log mixture weights, [K].
    means: component means μ_k, [K, D].
    covariances: component covariances Σ_k (positive definite), [K, D, D].
  """
  logits: Array
  means: Array
  covariances: Array

  @property
  def num_components(self) -> int:
    """K."""
    return len(self.logits)

  @property
  def dim(self) -> int:
    """D."""
    return self.means.shape[-1]

  @property
  def weights(self) -> Array:
    """π = softmax(logits)."""
    return jax.nn.softmax(self.logits)


def from_moments(weights: Array, means: Array,
                 covariances: Array) -> GaussianMixture:
  """A mixture from weights π [K], means [K, D], covariances [K, D, D]."""
  weights, means = jnp.asarray(weights), jnp.asarray(means)
  if means.ndim != 2:
    raise ValueError(f'means must be [K, D], got shape {means.shape}.')
  return GaussianMixture(logits=jnp.log(weights), means=means,
                         covariances=jnp.asarray(covariances))


def components(mixture: GaussianMixture) -> dists.MultivariateNormal:
  """The components N(μ_k, Σ_k) as one MultivariateNormal of batch shape [K]."""
  return dists.MultivariateNormal.from_covariance(mixture.means,
                                                  mixture.covariances)


def component_log_probs(mixture: GaussianMixture, x: Array) -> Array:
  """log π_k + log N(x_n; μ_k, Σ_k) for points x [N, D]: returns [N, K]."""
  log_n = components(mixture).log_prob(x[:, None, :])
  return jax.nn.log_softmax(mixture.logits) + log_n


@jax.jit
def log_prob(mixture: GaussianMixture, x: Array) -> Array:
  """log p(x_n) = logsumexp_k (log π_k + log N(x_n; μ_k, Σ_k)), for x [N, D]."""
  return jax.nn.logsumexp(component_log_probs(mixture, x), axis=-1)


@jax.jit
def log_responsibilities(mixture: GaussianMixture, x: Array) -> Array:
  """log r_nk = log π_k N(x_n; μ_k, Σ_k) - log p(x_n), [N, K] (E step)."""
  joint = component_log_probs(mixture, x)
  return joint - jax.nn.logsumexp(joint, axis=-1, keepdims=True)


@functools.partial(jax.jit, static_argnames='num')
def sample(mixture: GaussianMixture, key: PRNGKey,
           num: int) -> tuple[Array, Array]:
  """Draws k ~ Cat(π), x = μ_k + L_k ε (Σ_k = L_k L_kᵀ); returns (x, k).

  x [num, D], k [num].
  """
  k_comp, k_eps = jax.random.split(key)
  comp = jax.random.categorical(k_comp, mixture.logits, shape=(num,))
  chosen = jax.tree.map(lambda a: a[comp], components(mixture))  # Batch [num].
  return chosen.sample(k_eps), comp


@jax.jit
def mean_and_covariance(mixture: GaussianMixture) -> tuple[Array, Array]:
  """Moments of the mixture: m = Σ π_k μ_k, C = Σ π_k (Σ_k + μ_k μ_kᵀ) - m mᵀ.

  N(m, C) is the Gaussian closest to the mixture in KL(mixture ‖ Gaussian).
  """
  w = mixture.weights
  mean = w @ mixture.means
  second = jnp.einsum('k,kij->ij', w, mixture.covariances +
                      jnp.einsum('ki,kj->kij', mixture.means, mixture.means))
  return mean, second - jnp.outer(mean, mean)


@jax.jit
def fit_gaussian(x: Array) -> GaussianMixture:
  """Closed-form maximum-likelihood Gaussian, as a one-component mixture.

  μ̂ = (1/N) Σ_n x_n,  Σ̂ = (1/N) Σ_n (x_n - μ̂)(x_n - μ̂)ᵀ.
  """
  mean = jnp.mean(x, axis=0)
  diff = x - mean
  cov = diff.T @ diff / x.shape[0]
  return GaussianMixture(logits=jnp.zeros((1,), x.dtype), means=mean[None],
                         covariances=cov[None])


@jax.jit
def gaussian_cross_entropy(mean: Array, covariance: Array, data_mean: Array,
                           data_covariance: Array) -> Array:
  """E_{x~p}[-log N(x; μ, Σ)] for any p with mean m and covariance C.

  = ½ [D log 2π + log det Σ + tr(Σ⁻¹ C) + (m - μ)ᵀ Σ⁻¹ (m - μ)];
  it depends on p only through (m, C) and is minimized at μ = m, Σ = C.

  Args:
    mean: μ [D].
    covariance: Σ [D, D].
    data_mean: m [D].
    data_covariance: C [D, D].

  Returns:
    The cross-entropy (a scalar, in nats).
  """
  q = dists.MultivariateNormal.from_covariance(mean, covariance)
  # -log N(m; μ, Σ) holds all but the trace term.
  return 0.5 * jnp.trace(jax.scipy.linalg.cho_solve(
      (q.scale_tril, True), data_covariance)) - q.log_prob(data_mean)


@jax.jit
def em_step(mixture: GaussianMixture, x: Array,
            min_variance: float = 0.0) -> tuple[GaussianMixture, Array]:
  """One EM iteration; returns (new mixture, mean log-likelihood of the old).

  E step: r_nk = π_k N(x_n; μ_k, Σ_k) / Σ_j π_j N(x_n; μ_j, Σ_j) (log space).
  M step: N_k = Σ_n r_nk, π_k = N_k / N, μ_k = Σ_n r_nk x_n / N_k,
          Σ_k = Σ_n r_nk (x_n - μ_k)(x_n - μ_k)ᵀ / N_k + min_variance·I.
  With min_variance = 0 the log-likelihood never decreases.

  Args:
    mixture: the current parameters.
    x: data [N, D].
    min_variance: added to each Σ_k's diagonal (guards against collapse).

  Returns:
    (updated mixture, (1/N) Σ_n log p(x_n) under `mixture`).
  """
  joint = component_log_probs(mixture, x)
  log_px = jax.nn.logsumexp(joint, axis=-1, keepdims=True)
  log_r = joint - log_px
  log_nk = jax.nn.logsumexp(log_r, axis=0)  # [K]
  r = jnp.exp(log_r - log_nk)  # r_nk / N_k: columns sum to one.
  means = r.T @ x  # [K, D]
  diff = x[None, :, :] - means[:, None, :]  # [K, N, D]
  covs = jnp.einsum('nk,kni,knj->kij', r, diff, diff)
  covs = covs + min_variance * jnp.eye(x.shape[1], dtype=x.dtype)
  new = GaussianMixture(logits=log_nk - jnp.log(x.shape[0]), means=means,
                        covariances=covs)
  return new, jnp.mean(log_px)


@functools.partial(jax.jit, static_argnames='num_components')
def init_from_data(x: Array, num_components: int,
                   key: PRNGKey) -> GaussianMixture:
  """Initial mixture: equal weights, means at k-means++-style seeds, Σ_k = Σ̂.

  The first mean is a uniformly chosen data point; each next one is a data
  point drawn with probability ∝ squared distance to the nearest chosen mean.
  """
  n, dim = x.shape
  keys = jax.random.split(key, num_components)
  first = x[jax.random.randint(keys[0], (), 0, n)]
  means = jnp.zeros((num_components, dim), x.dtype).at[0].set(first)
  for k in range(1, num_components):
    d2 = jnp.min(jnp.sum((x[:, None, :] - means[None, :k, :])**2, -1), -1)
    idx = jax.random.categorical(keys[k], jnp.log(d2 + 1e-30))
    means = means.at[k].set(x[idx])
  cov = fit_gaussian(x).covariances[0]
  return GaussianMixture(
      logits=jnp.zeros((num_components,), x.dtype), means=means,
      covariances=jnp.broadcast_to(cov, (num_components, dim, dim)))


@functools.partial(jax.jit, static_argnames=('num_components', 'num_iters'))
def fit_em(x: Array, num_components: int, key: PRNGKey, num_iters: int = 100,
           min_variance: float = 0.0,
           init: GaussianMixture | None = None
           ) -> tuple[GaussianMixture, Array]:
  """Maximum-likelihood mixture by EM, `num_iters` steps under `lax.scan`.

  Args:
    x: data [N, D].
    num_components: K.
    key: PRNG key for the initialization (unused when `init` is given).
    num_iters: EM iterations.
    min_variance: see `em_step`.
    init: optional initial mixture (default `init_from_data`).

  Returns:
    (fitted mixture, history [num_iters + 1]) where history[t] is the mean
    log-likelihood (1/N) Σ_n log p(x_n) after t iterations.
  """
  if init is None:
    init = init_from_data(x, num_components, key)

  def body(mixture, _):
    return em_step(mixture, x, min_variance)

  final, history = jax.lax.scan(body, init, None, length=num_iters)
  last = jnp.mean(log_prob(final, x))
  return final, jnp.concatenate([history, last[None]])


@jax.jit
def kl_decomposition_mc(log_p_data: Array,
                        log_p_model: Array) -> dict[str, Array]:
  """Monte Carlo estimates over samples x_n ~ p_data of

    cross_entropy = -(1/N) Σ log p_model(x_n)          (≈ E_p[-log q]),
    entropy       = -(1/N) Σ log p_data(x_n)           (≈ H(p_data)),
    kl            = (1/N) Σ [log p_data - log p_model] (≈ KL(p_data ‖ p_model)),

  so cross_entropy = entropy + kl holds exactly, sample by sample. Also the
  standard error of the KL estimate.

  Args:
    log_p_data: log p_data(x_n), [N].
    log_p_model: log p_model(x_n) at the same points, [N].

  Returns:
    Dict with cross_entropy, entropy, kl, kl_stderr.
  """
  diff = log_p_data - log_p_model
  n = diff.shape[0]
  return {
      'cross_entropy': -jnp.mean(log_p_model),
      'entropy': -jnp.mean(log_p_data),
      'kl': jnp.mean(diff),
      'kl_stderr': jnp.std(diff) / jnp.sqrt(n),
  }


@functools.partial(jax.jit, static_argnames='num')
def grid(lo: Array, hi: Array, num: int) -> tuple[Array, Array]:
  """Cell midpoints of a regular grid on the box [lo, hi] (D = len(lo) ≤ 2).

  Returns:
    (points [num**D, D], cell volume Π_d (hi_d - lo_d)/num).
  """
  lo, hi = jnp.atleast_1d(jnp.asarray(lo)), jnp.atleast_1d(jnp.asarray(hi))
  if lo.shape[0] > 2:
    raise ValueError('grid quadrature is for D <= 2.')
  step = (hi - lo) / num
  axes = [lo[d] + step[d] * (jnp.arange(num) + 0.5) for d in range(lo.shape[0])]
  mesh = jnp.meshgrid(*axes, indexing='ij')
  points = jnp.stack([m.ravel() for m in mesh], axis=-1)
  return points, jnp.prod(step)


@jax.jit
def kl_decomposition_quadrature(log_p_data: Array, log_p_model: Array,
                                cell_volume: Array) -> dict[str, Array]:
  """Midpoint-rule integrals of E_p[-log q] = H(p) + KL(p ‖ q) on a grid.

    mass          = Σ_g p(x_g) Δ                       (≈ 1),
    cross_entropy = -Σ_g p(x_g) log q(x_g) Δ,
    entropy       = -Σ_g p(x_g) log p(x_g) Δ,
    kl            =  Σ_g p(x_g) (log p(x_g) - log q(x_g)) Δ.

  Each is computed from its own integrand; KL ≥ 0 up to quadrature error.

  Args:
    log_p_data: log p(x_g) at the grid points.
    log_p_model: log q(x_g) at the same points.
    cell_volume: Δ.

  Returns:
    Dict with mass, cross_entropy, entropy, kl.
  """
  p = jnp.exp(log_p_data)
  return {
      'mass': jnp.sum(p) * cell_volume,
      'cross_entropy': -jnp.sum(p * log_p_model) * cell_volume,
      'entropy': -jnp.sum(p * log_p_data) * cell_volume,
      'kl': jnp.sum(p * (log_p_data - log_p_model)) * cell_volume,
  }


# --------------------------------------------------------------------------
# The known p_data, reference fits and a checked comparison with p_data.

def true_mixture(dim: int) -> GaussianMixture:
  """The known p_data: 3 components, well separated but overlapping.

  π = (0.3, 0.5, 0.2); 1-D: μ = (-2, 1, 3), σ² = (0.2, 0.5, 0.1); 2-D: μ =
  (-2, 0), (1, 1), (2, -1.5) with a round, a correlated and an
  anti-correlated covariance.
  """
  weights = jnp.array([0.3, 0.5, 0.2])
  if dim == 1:
    return from_moments(weights, jnp.array([[-2.0], [1.0], [3.0]]),
                        jnp.array([[[0.2]], [[0.5]], [[0.1]]]))
  if dim == 2:
    covs = jnp.array([[[0.3, 0.0], [0.0, 0.3]], [[0.5, 0.3], [0.3, 0.4]],
                      [[0.2, -0.1], [-0.1, 0.15]]])
    return from_moments(
        weights, jnp.array([[-2.0, 0.0], [1.0, 1.0], [2.0, -1.5]]), covs)
  raise ValueError(f'dims must be 1 or 2, got {dim}.')


@functools.partial(jax.jit, static_argnames='num')
def quadrature_grid(mixture: GaussianMixture, num: int) -> tuple[Array,
                                                                 Array]:
  """`grid` of num**D points on min_k μ_k - 6s ... max_k μ_k + 6s per axis.

  s = max_k √Σ_k,ii (per axis): the box holds all but ~1e-9 of the mass.
  """
  sd = jnp.sqrt(jnp.max(jnp.diagonal(mixture.covariances, axis1=1, axis2=2),
                        0))
  return grid(jnp.min(mixture.means, 0) - 6.0 * sd,
              jnp.max(mixture.means, 0) + 6.0 * sd, num)


def num_params(mixture: GaussianMixture) -> int:
  """Free parameters of K components in D dims: (K - 1) + K D + K D(D+1)/2."""
  k, dim = mixture.num_components, mixture.dim
  return (k - 1) + k * dim + k * dim * (dim + 1) // 2


def fit_models(true: GaussianMixture, x: Array,
               em_components: tuple[int, ...], em_iters: int, key: PRNGKey
               ) -> tuple[dict[str, GaussianMixture], dict[int, Array]]:
  """p_data, the Gaussians of least KL (moments of p_data) and of maximum
  likelihood (`fit_gaussian`), and EM fits (`fit_em`, key fold_in(key, K))
  with K components to x [N, D].

  Returns:
    ({name: mixture}, {K: EM log-likelihood history}).
  """
  m, c = mean_and_covariance(true)
  models = {'true p_data': true,
            'gaussian (min KL, population)': from_moments(
                jnp.ones(1), m[None], c[None]),
            'gaussian MLE': fit_gaussian(x)}
  histories = {}
  for k in em_components:
    models[f'mixture EM K={k}'], histories[k] = fit_em(
        x, k, jax.random.fold_in(key, k), em_iters)
  return models, histories


def compare(log_p: tuple[Array, Array], log_q: tuple[Array, Array, Array],
            cell_volume: Array) -> dict[str, float]:
  """A model q against p_data: likelihoods and KL(p_data ‖ q) two ways.

  With held-out x_n ~ p_data and grid points x_g (`quadrature_grid`),
  kl_mc = (1/N) Σ_n [log p - log q](x_n) (`kl_decomposition_mc`, standard
  error kl_mc_stderr) estimates the quadrature kl_quadrature
  (`kl_decomposition_quadrature`) without bias when log q is exact, so
  z = (kl_mc - kl_quadrature) / kl_mc_stderr is a self-check;
  -test_ll - kl_mc = -(1/N) Σ_n log p(x_n) for every q, by construction.

  Args:
    log_p: log p_data at the (held-out, grid) points.
    log_q: log q at the (train, held-out, grid) points.
    cell_volume: the grid's cell volume.

  Returns:
    train_ll, test_ll, kl_quadrature, kl_mc, kl_mc_stderr,
    minus_test_ll_minus_kl_quad, minus_test_ll_minus_kl_mc,
    entropy_quadrature, model_mass_on_grid, z.
  """
  mc = kl_decomposition_mc(log_p[0], log_q[1])
  quad = kl_decomposition_quadrature(log_p[1], log_q[2], cell_volume)
  test_ll, kl_q, kl_mc = (float(jnp.mean(log_q[1])), float(quad['kl']),
                          float(mc['kl']))
  stderr, n = float(mc['kl_stderr']), log_p[0].shape[0]
  return {'train_ll': float(jnp.mean(log_q[0])), 'test_ll': test_ll,
          'kl_quadrature': kl_q, 'kl_mc': kl_mc, 'kl_mc_stderr': stderr,
          'minus_test_ll_minus_kl_quad': -test_ll - kl_q,
          'minus_test_ll_minus_kl_mc': -test_ll - kl_mc,
          'entropy_quadrature': float(quad['entropy']),
          'model_mass_on_grid': float(jnp.sum(jnp.exp(log_q[2])) *
                                      cell_volume),
          'z': float(stats.mean_z(kl_mc, kl_q, stderr * math.sqrt(n), n))}
