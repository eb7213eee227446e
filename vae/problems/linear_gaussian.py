"""The linear-Gaussian latent model (probabilistic PCA / factor analysis).

    z ~ N(0, I_d),   x | z ~ N(W z + b, σ² I_D).

Everything is exact here: the marginal x ~ N(b, W Wᵀ + σ² I), the posterior
p(z|x) = N(m, S) with S = (I + WᵀW/σ²)⁻¹ and m = S Wᵀ(x - b)/σ², the ELBO of a
diagonal Gaussian q in closed form, and KL(q ‖ p(z|x)), so that
log p(x) - ELBO(q) = KL(q ‖ p(z|x)) can be checked to rounding error.
Also the closed-form maximum-likelihood fit (Tipping & Bishop 1999),
`draw_problem`: a random model and its data sets from one normal draw, and
for missing data (`vae.missing`) the conditional p(x_miss | x_obs), the model
as a `vae.model.Model` with a linear Gaussian encoder (`LinearGaussianVAE`),
and the stationary law of pseudo-Gibbs with that encoder.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy import linalg

from vae import distributions as dists
from vae import kl
from vae import stats
from vae import types

Array = types.Array
PRNGKey = types.PRNGKey

_LOG_2PI = math.log(2 * math.pi)


@types.pytree_dataclass
class LinearGaussianModel:
  """Parameters of the model.

  Attributes:
    weight: W, shape [D, d].
    bias: b, shape [D].
    log_noise_scale: log σ (scalar).
  """
  weight: Array
  bias: Array
  log_noise_scale: Array

  @property
  def noise_variance(self) -> Array:
    return jnp.exp(2.0 * self.log_noise_scale)

  @property
  def data_dim(self) -> int:
    return self.weight.shape[0]

  @property
  def latent_dim(self) -> int:
    return self.weight.shape[1]


def random_model(key: PRNGKey, data_dim: int, latent_dim: int,
                 noise_scale: float = 0.5) -> LinearGaussianModel:
  """A model with W, b ~ N(0, 1) entries."""
  k1, k2 = jax.random.split(key)
  return LinearGaussianModel(
      weight=jax.random.normal(k1, (data_dim, latent_dim)),
      bias=jax.random.normal(k2, (data_dim,)),
      log_noise_scale=jnp.log(jnp.asarray(noise_scale)))


def sample_data(model: LinearGaussianModel, key: PRNGKey,
                num: int) -> tuple[Array, Array]:
  """Draws (x, z) pairs: x [num, D], z [num, d]."""
  k1, k2 = jax.random.split(key)
  z = jax.random.normal(k1, (num, model.latent_dim))
  noise = jax.random.normal(k2, (num, model.data_dim))
  x = z @ model.weight.T + model.bias + jnp.exp(model.log_noise_scale) * noise
  return x, z


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def draw_problem(key: PRNGKey, data_dim: int, latent_dim: int,
                 noise_scale: float, sizes: tuple[int, ...],
                 orthogonal_sizes: tuple[int, ...] = ()):
  """A random model and data sets drawn from it, all from ONE normal draw.

  The model has W, b with N(0, 1) entries (as `random_model`); each data
  set holds x = W z + b + σ ε with z, ε ~ N(0, I). With `orthogonal_sizes`
  there is also a model W = U diag(1, ..., d) (U from the QR of a normal
  matrix, so WᵀW is diagonal) with its own b and data sets. The draw is
  split in the order W, b, [U, b_orthogonal], data sets, orthogonal ones.

  Args:
    key: PRNG key.
    data_dim: D.
    latent_dim: d.
    noise_scale: σ.
    sizes: points in each data set of the model.
    orthogonal_sizes: points in each data set of the orthogonal model.

  Returns:
    (model, data sets [n, D], orthogonal model or None, its data sets).
  """
  dtype = jnp.result_type(float)
  d, dd = latent_dim, data_dim
  models = 2 if orthogonal_sizes else 1
  lengths = [dd * d, dd] * models + [n * (d + dd) for n in (
      *sizes, *orthogonal_sizes)]
  draws = jax.random.normal(key, (sum(lengths),), dtype)
  parts = jnp.split(draws, [sum(lengths[:i + 1])
                            for i in range(len(lengths) - 1)])
  log_noise = jnp.log(jnp.asarray(noise_scale, dtype))
  model = LinearGaussianModel(parts[0].reshape(dd, d), parts[1], log_noise)
  owners = [model] * len(sizes)
  ortho = None
  if orthogonal_sizes:
    u, _ = jnp.linalg.qr(parts[2].reshape(dd, d))
    ortho = LinearGaussianModel(u * jnp.arange(1, d + 1, dtype=dtype),
                                parts[3], log_noise)
    owners += [ortho] * len(orthogonal_sizes)
  data = []
  for m, part in zip(owners, parts[2 * models:]):
    zeta = part.reshape(-1, d + dd)
    data.append(zeta[:, :d] @ m.weight.T + m.bias + noise_scale * zeta[:, d:])
  return (model, tuple(data[:len(sizes)]), ortho,
          tuple(data[len(sizes):]))


def marginal_covariance(model: LinearGaussianModel) -> Array:
  """C = W Wᵀ + σ² I."""
  return (model.weight @ model.weight.T +
          model.noise_variance * jnp.eye(model.data_dim))


def marginal(model: LinearGaussianModel) -> dists.MultivariateNormal:
  """p(x) = N(b, WWᵀ + σ²I)."""
  return dists.MultivariateNormal.from_covariance(model.bias,
                                                  marginal_covariance(model))


def log_marginal(model: LinearGaussianModel, x: Array) -> Array:
  """log p(x) = log N(x; b, WWᵀ + σ²I), for x [D] (or a batch [N, D])."""
  return marginal(model).log_prob(x)


def posterior(model: LinearGaussianModel,
              x: Array) -> dists.MultivariateNormal:
  """p(z|x) = N(m, S), S = (I + WᵀW/σ²)⁻¹, m = S Wᵀ(x - b)/σ², for one x."""
  w, s2 = model.weight, model.noise_variance
  precision = jnp.eye(model.latent_dim) + w.T @ w / s2
  cov = jnp.linalg.inv(precision)
  mean = cov @ w.T @ (x - model.bias) / s2
  return dists.MultivariateNormal.from_covariance(mean, cov)


def log_likelihood(model: LinearGaussianModel, x: Array, z: Array) -> Array:
  """log p(x|z) = log N(x; Wz + b, σ²I)."""
  return jnp.sum(dists.Normal(model.weight @ z + model.bias,
                             model.log_noise_scale).log_prob(x))


def log_joint(model: LinearGaussianModel, x: Array, z: Array) -> Array:
  """log p(x, z) = log p(x|z) + log N(z; 0, I), for one x [D] and z [d]."""
  prior = dists.standard_normal(z.shape, x.dtype)
  return log_likelihood(model, x, z) + jnp.sum(prior.log_prob(z))


def elbo(model: LinearGaussianModel, x: Array, q: dists.Normal) -> Array:
  """ELBO(q) in closed form for a diagonal Gaussian q = N(μ, diag(s²)).

  E_q[log p(x|z)] = -D/2 log(2πσ²) - (‖x - b - Wμ‖² + Σ_j s_j² ‖W_:j‖²)/(2σ²),
  KL(q ‖ N(0, I)) = ½ Σ_j (s_j² + μ_j² - 1 - log s_j²).
  """
  mu, var = q.mean(), q.variance()
  r = x - model.bias - model.weight @ mu
  expected_sq = r @ r + jnp.sum(var * jnp.sum(model.weight**2, axis=0))
  log_norm = model.data_dim * (_LOG_2PI + 2.0 * model.log_noise_scale)
  expected_ll = -0.5 * (log_norm + expected_sq / model.noise_variance)
  kl = 0.5 * jnp.sum(var + mu**2 - 1.0 - 2.0 * q.log_scale)
  return expected_ll - kl


def kl_to_posterior(model: LinearGaussianModel, x: Array,
                    q: dists.Normal) -> Array:
  """KL(q ‖ p(z|x)) for diagonal q against the full-covariance posterior.

  KL = ½ [tr(S⁻¹Σq) + (m - μ)ᵀ S⁻¹ (m - μ) - d + log det S - log det Σq]
  (`kl.kl_divergence` of q, read as one vector, and `posterior`).
  """
  return kl.kl_divergence(q, posterior(model, x))


@jax.jit
def identity_terms(model: LinearGaussianModel, x: Array,
                   key: PRNGKey) -> tuple[Array, Array, Array]:
  """log p(x_n), ELBO(q_n) and KL(q_n ‖ p(z|x_n)) for a random q_n per row.

  q_n = N(μ_n, diag e^{2 s_n}) with μ_n ~ N(0, 4 I), s_n ~ U(-2, 1)^d; each
  term in closed form, so log p(x) - ELBO(q) - KL(q ‖ p(z|x)) is rounding.

  Args:
    model: the model.
    x: data [N, D].
    key: PRNG key (the q_n).

  Returns:
    (log p(x_n), ELBO(q_n), KL(q_n ‖ p(z|x_n))), each [N].
  """
  n, d = x.shape[0], model.latent_dim
  k_loc, k_scale = jax.random.split(key)
  loc = 2.0 * jax.random.normal(k_loc, (n, d), x.dtype)
  log_scale = jax.random.uniform(k_scale, (n, d), x.dtype, -2.0, 1.0)

  def terms(xi, loc, log_scale):
    qi = dists.Normal(loc, log_scale)
    return (log_marginal(model, xi), elbo(model, xi, qi),
            kl_to_posterior(model, xi, qi))

  return jax.vmap(terms)(x, loc, log_scale)


def identity_check(model: LinearGaussianModel, x: Array,
                   key: PRNGKey) -> dict[str, np.ndarray]:
  """`identity_terms` with residual = log p(x) - ELBO(q) - KL(q ‖ p(z|x)).

  disagrees[n]: |residual_n| beyond `stats.rounding_tolerance` of |log p| +
  |ELBO| + |KL|, or not finite (a deterministic identity: no Bonferroni).
  Returns numpy arrays [N]: log_px, elbo, kl_q_posterior, residual,
  disagrees.
  """
  terms = [np.asarray(t, np.float64) for t in identity_terms(model, x, key)]
  out: dict[str, np.ndarray] = dict(zip(
      ('log_px', 'elbo', 'kl_q_posterior'), terms))
  out['residual'] = terms[0] - terms[1] - terms[2]
  out['disagrees'] = ~(np.abs(out['residual']) <= stats.rounding_tolerance(
      np.abs(terms).sum(0), x.dtype))
  return out


def fit_ppca(x: Array, latent_dim: int) -> LinearGaussianModel:
  """Closed-form maximum likelihood pPCA (Tipping & Bishop 1999).

  b = mean(x); with the sample covariance's eigenvalues λ₁ ≥ … ≥ λ_D and
  eigenvectors U: σ² = mean(λ_{d+1..D}), W = U_d (Λ_d - σ² I)^{1/2}.

  Args:
    x: data [N, D] with D > latent_dim.
    latent_dim: d.

  Returns:
    The maximum-likelihood model.
  """
  n, data_dim = x.shape
  if not 0 < latent_dim < data_dim:
    raise ValueError(f'need 0 < latent_dim < data_dim, got {latent_dim} and '
                     f'{data_dim}.')
  mean = jnp.mean(x, axis=0)
  cov = (x - mean).T @ (x - mean) / n
  eigvals, eigvecs = jnp.linalg.eigh(cov)  # ascending
  eigvals, eigvecs = eigvals[::-1], eigvecs[:, ::-1]
  noise_var = jnp.mean(eigvals[latent_dim:])
  scales = jnp.sqrt(jnp.maximum(eigvals[:latent_dim] - noise_var, 0.0))
  return LinearGaussianModel(weight=eigvecs[:, :latent_dim] * scales,
                             bias=mean,
                             log_noise_scale=0.5 * jnp.log(noise_var))


# Missing data (`vae.missing`).


def conditional(model: LinearGaussianModel, x: np.ndarray,
                missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """p(x_m | x_o) = N(μ, Σ) for one x [D] and a boolean mask [D] (True = m).

    μ = b_m + C_mo C_oo⁻¹ (x_o - b_o),   Σ = C_mm - C_mo C_oo⁻¹ C_om,
    C = W Wᵀ + σ² I (the marginal covariance); float64 numpy arrays.
  """
  c = np.asarray(marginal_covariance(model), np.float64)
  b, x = np.asarray(model.bias, np.float64), np.asarray(x, np.float64)
  m, o = np.asarray(missing, bool), ~np.asarray(missing, bool)
  gain = np.linalg.solve(c[np.ix_(o, o)], c[np.ix_(o, m)]).T  # C_mo C_oo⁻¹.
  return (b[m] + gain @ (x[o] - b[o]),
          c[np.ix_(m, m)] - gain @ c[np.ix_(o, m)])


def log_conditional(model: LinearGaussianModel, x: np.ndarray,
                    missing: np.ndarray) -> float:
  """log p(x_m | x_o) = log N(x_m; μ, Σ) (`conditional`)
  = log p(x) - log p(x_o)."""
  mean, cov = conditional(model, x, missing)
  r = np.asarray(x, np.float64)[np.asarray(missing, bool)] - mean
  _, logdet = np.linalg.slogdet(cov)
  return float(-0.5 * (r @ np.linalg.solve(cov, r) + logdet +
                       len(r) * _LOG_2PI))


@dataclasses.dataclass(frozen=True)
class LinearGaussianVAE:
  """The linear-Gaussian model as a `vae.model.Model`:

    p(z) = N(0, I_d),  p(x|z) = N(W z + b, σ² I_D),  q(z|x) = N(A x + c, diag s²),

  params {'weight' W, 'bias' b, 'log_noise_scale' log σ, 'enc_weight' A
  [d, D], 'enc_bias' c, 'enc_log_scale' log s [d]} (`vae_params`).
  """
  data_dim: int
  latent_dim: int

  def init(self, key: PRNGKey, data_mean: Array | None = None) -> dict:
    """W, A ~ N(0, 1/D) entries, b = x̄ (or 0), σ = s = 1."""
    k1, k2 = jax.random.split(key)
    dd, d = self.data_dim, self.latent_dim
    return {'weight': jax.random.normal(k1, (dd, d)) / math.sqrt(dd),
            'bias': (jnp.zeros(dd) if data_mean is None else
                     jnp.asarray(data_mean, jnp.float32)),
            'log_noise_scale': jnp.zeros(()),
            'enc_weight': jax.random.normal(k2, (d, dd)) / math.sqrt(dd),
            'enc_bias': jnp.zeros(d), 'enc_log_scale': jnp.zeros(d)}

  def prior(self, params: dict) -> dists.Normal:
    """p(z) = N(0, I)."""
    del params
    return dists.standard_normal((self.latent_dim,))

  def encoder(self, params: dict, x: Array) -> dists.Normal:
    """q(z|x) = N(A x + c, diag s²)."""
    loc = x @ params['enc_weight'].T + params['enc_bias']
    return dists.Normal(loc, jnp.broadcast_to(params['enc_log_scale'],
                                              loc.shape))

  def decoder(self, params: dict, z: Array) -> dists.Normal:
    """p(x|z) = N(W z + b, σ² I)."""
    loc = z @ params['weight'].T + params['bias']
    return dists.Normal(loc, jnp.broadcast_to(params['log_noise_scale'],
                                              loc.shape))


def vae_params(model: LinearGaussianModel, scale: float = 1.0) -> dict:
  """`LinearGaussianVAE` params of `model` with the posterior's encoder:

    A = S Wᵀ/σ², c = -A b, s = scale·√diag S,  S = (I + WᵀW/σ²)⁻¹,

  so q(z|x) = p(z|x) exactly when WᵀW is diagonal and scale = 1 (else q
  has the posterior mean and wider or narrower marginals).
  """
  w, s2 = model.weight, model.noise_variance
  cov = jnp.linalg.inv(jnp.eye(model.latent_dim) + w.T @ w / s2)
  enc = cov @ w.T / s2
  return {'weight': w, 'bias': model.bias,
          'log_noise_scale': model.log_noise_scale, 'enc_weight': enc,
          'enc_bias': -enc @ model.bias,
          'enc_log_scale': jnp.log(scale * jnp.sqrt(jnp.diag(cov)))}


def pseudo_gibbs_stationary(params: dict, x: np.ndarray,
                            missing: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray]:
  """The stationary N(μ, Σ) of pseudo-Gibbs's x_m with a linear encoder.

  z = A_o x_o + A_m x_m + c + s ε,  x_m' = W_m z + b_m + σ η  is the AR(1)
  chain x_m' = F x_m + g + noise with F = W_m A_m, g = W_m (A_o x_o + c) +
  b_m, Q = W_m diag(s²) W_mᵀ + σ² I; if its spectral radius is < 1,

    μ = (I - F)⁻¹ g,   Σ = F Σ Fᵀ + Q   (a discrete Lyapunov equation).

  Equal to `conditional` when q(z|x) = p(z|x); not in general.
  """
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  m, o = np.asarray(missing, bool), ~np.asarray(missing, bool)
  x = np.asarray(x, np.float64)
  w_m, a = p['weight'][m], p['enc_weight']
  f = w_m @ a[:, m]
  radius = np.max(np.abs(np.linalg.eigvals(f)))
  if radius >= 1:
    raise ValueError(f'pseudo-Gibbs: the chain has no stationary law here '
                     f'(spectral radius {radius:.3g} >= 1).')
  g = w_m @ (a[:, o] @ x[o] + p['enc_bias']) + p['bias'][m]
  q = (w_m * np.exp(2 * p['enc_log_scale'])) @ w_m.T + np.exp(
      2 * p['log_noise_scale']) * np.eye(len(g))
  return (np.linalg.solve(np.eye(len(g)) - f, g),
          linalg.solve_discrete_lyapunov(f, q))


def gaussian_moment_z(draws: np.ndarray, mean: np.ndarray,
                      cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """z-scores of n independent draws [n, m] against N(μ, Σ).

    z_i  = (x̄_i - μ_i) / √(Σ_ii / n),
    z_ij = (S_ij - Σ_ij) / √((Σ_ii Σ_jj + Σ_ij²) / n),  i ≤ j,

  S the sample covariance (the Gaussian SE of a covariance entry); floored
  at float32 rounding (`stats.mean_z`).
  """
  x = np.asarray(draws, np.float64)
  n = len(x)
  mean_z = stats.mean_z(x.mean(0), mean, np.sqrt(np.diag(cov)), n)
  s = np.cov(x, rowvar=False).reshape(cov.shape)
  i, j = np.triu_indices(len(mean))
  se = np.sqrt((np.diag(cov)[i] * np.diag(cov)[j] + cov[i, j]**2) / n)
  floor = stats.FLOAT_RTOL * (1.0 + np.abs(cov[i, j]))
  return mean_z, (s[i, j] - cov[i, j]) / np.maximum(se, floor)
