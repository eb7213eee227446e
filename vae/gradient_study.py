"""Measure gradient estimators on problems with exact answers.

`gaussian_cost_records` reproduces the set-up of Mohamed et al. (2020, sec. 3):
for a scalar cost f under N(μ, σ²), it draws `num_draws` independent gradient
estimates (each averaging `num_samples` samples) of ∂/∂μ and ∂/∂σ with each
estimator, in ONE jitted call per (cost, estimator, num_samples) that vmaps
over the draws and the (μ, σ) grid, and returns records with the measured mean
and variance beside the exact gradient and the exact variance.

`linear_gaussian_records` does the same for the ELBO gradient of a diagonal
Gaussian q in the linear-Gaussian model, whose exact gradient is known.
"""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vae import distributions as dists
from vae.problems import gaussian_costs
from vae.problems import linear_gaussian as lg
from vae.estimators import registry
from vae import types

Record = dict


def _scalar_builder(p):
  return dists.Normal.from_scale(p['mu'], p['sigma'])


@functools.lru_cache(maxsize=None)
def _draw_fn(cost_names: tuple[str, ...], estimator: str, num_samples: int,
             num_draws: int):
  """One jitted function for all costs: {cost: vmap over grid (vmap over draws)}.

  Fusing the costs into one program compiles once per (estimator, N).
  """
  fn = registry.get(estimator)

  def one_point(f, mu, sigma, key):
    keys = jax.random.split(key, num_draws)
    params = {'mu': mu, 'sigma': sigma}
    return jax.vmap(lambda k: fn(f, params, _scalar_builder, k, num_samples))(keys)

  def all_costs(mus, sigmas, keys):
    return {name: jax.vmap(functools.partial(one_point,
                                             gaussian_costs.COSTS[name].fn))(
                                                 mus, sigmas, keys[i])
            for i, name in enumerate(cost_names)}

  return jax.jit(all_costs)


def _z_score(mean: float, exact: float, std_error: float) -> float:
  """(mean - exact) / SE, with SE floored at float32 rounding of the mean."""
  floor = 1e-6 * (1.0 + abs(exact))
  return float((mean - exact) / max(std_error, floor))


def _summarize(draws: np.ndarray):
  """Mean, variance, SE of the mean and SE of the variance over the last axis.

  SE of the sample variance = sqrt((m4 - var²)/n), m4 the 4th central moment.
  """
  draws = np.asarray(draws, np.float64)
  n = draws.shape[-1]
  mean = draws.mean(-1)
  centered = draws - mean[..., None]
  var = (centered**2).sum(-1) / (n - 1)
  m4 = (centered**4).mean(-1)
  return mean, var, np.sqrt(var / n), np.sqrt(np.maximum(m4 - var**2, 0) / n)


def gaussian_cost_records(costs: Sequence[str], estimators: Sequence[str],
                          mus: Sequence[float], sigmas: Sequence[float],
                          num_samples: Sequence[int], num_draws: int,
                          seed: int) -> list[Record]:
  """Mean and variance of each estimator for each cost on a (μ, σ) grid.

  Args:
    costs: names in `gaussian_costs.COSTS`.
    estimators: names in `registry.ESTIMATORS` (continuous ones).
    mus: grid of μ values.
    sigmas: grid of σ values (> 0).
    num_samples: sample counts N; one record per N.
    num_draws: independent estimates per grid point (≥ 2).
    seed: PRNG seed; the key of each (cost, estimator, N) is derived from it
      deterministically, so results do not depend on the order of the loops.

  Returns:
    Records with fields cost, estimator, param, mu, sigma, num_samples,
    num_draws, mean, variance, std_error, variance_std_error (SE of the
    measured variance), exact_gradient, exact_variance,
    z_score ((mean - exact)/std_error), variance_ratio (variance /
    exact_variance), exact_source ('closed_form' or 'quadrature').
  """
  if num_draws < 2:
    raise ValueError(f'num_draws must be >= 2, got {num_draws}.')
  for s in sigmas:
    if not s > 0:
      raise ValueError(f'sigma values must be > 0, got {s}.')
  grid = [(float(m), float(s)) for s in sigmas for m in mus]
  mu_arr = jnp.asarray([g[0] for g in grid], jnp.float32)
  sigma_arr = jnp.asarray([g[1] for g in grid], jnp.float32)
  base = jax.random.PRNGKey(seed)
  records = []
  for est in estimators:
    info = registry.lookup(est)
    for n in num_samples:
      if n < info.min_samples:
        continue
      keys = jnp.stack([
          jax.random.split(jax.random.fold_in(jax.random.fold_in(
              jax.random.fold_in(base, gaussian_costs.cost_index(c)),
              registry.index(est)),
                                              int(n)), len(grid))
          for c in costs])
      draws = _draw_fn(tuple(costs), est, int(n), num_draws)(mu_arr, sigma_arr,
                                                             keys)
      for cost_name in costs:
        cost = gaussian_costs.COSTS[cost_name]
        g = draws[cost_name]
        for param in ('mu', 'sigma'):
          mean, var, se, var_se = _summarize(g[param])
          for i, (m, s) in enumerate(grid):
            exact = gaussian_costs.exact_gradient(cost, param, m, s)
            closed = cost.grad_mu if param == 'mu' else cost.grad_sigma
            moments = gaussian_costs.single_sample_moments(cost, est, param, m, s)
            exact_var = None if moments is None else moments[1] / n
            records.append({
                'problem': 'gaussian_cost',
                'cost': cost_name, 'estimator': est, 'param': param,
                'mu': m, 'sigma': s, 'num_samples': int(n),
                'num_draws': num_draws, 'mean': float(mean[i]),
                'variance': float(var[i]), 'std_error': float(se[i]),
                'variance_std_error': float(var_se[i]),
                'exact_gradient': exact, 'exact_variance': exact_var,
                'z_score': _z_score(mean[i], exact, se[i]),
                'variance_ratio': (float(var[i] / exact_var)
                                   if exact_var and exact_var > 1e-10 else None),
                'exact_source': 'closed_form' if closed else 'quadrature',
                'unbiased': info.unbiased,
            })
  records.sort(key=lambda r: (costs.index(r['cost']), r['param'],
                              estimators.index(r['estimator']),
                              r['num_samples'], r['sigma'], r['mu']))
  return records


def linear_gaussian_problem(seed: int, data_dim: int = 4, latent_dim: int = 2):
  """A fixed linear-Gaussian model, one data point, and a mismatched q."""
  model = lg.random_model(jax.random.PRNGKey(seed), data_dim, latent_dim,
                          noise_scale=0.7)
  x = lg.sample_data(model, jax.random.PRNGKey(seed + 1), 1)[0][0]
  mean, cov = lg.posterior(model, x)
  q = dists.Normal(mean + 0.5, 0.5 * jnp.log(jnp.diag(cov)) + 0.3)
  return model, x, q


def linear_gaussian_records(estimators: Sequence[str],
                            num_samples: Sequence[int], num_draws: int,
                            seed: int) -> list[Record]:
  """Per-coordinate ELBO-gradient statistics for q in the linear-Gaussian model.

  ELBO(q) = E_q[log p(x, z)] + H(q): the estimators estimate the gradient of
  the first term (f(z) = log p(x, z)), the entropy gradient is exact, and the
  exact total comes from the closed-form ELBO (`linear_gaussian.elbo`).

  Args:
    estimators: names in `registry.ESTIMATORS`.
    num_samples: sample counts N.
    num_draws: independent estimates.
    seed: PRNG seed (also picks the model and the data point).

  Returns:
    Records like `gaussian_cost_records`, with cost 'linear_gaussian_elbo',
    param 'loc[i]' or 'log_scale[i]', mu/sigma the coordinate's q parameters,
    and exact_variance None.
  """
  model, x, q = linear_gaussian_problem(seed)
  exact = jax.grad(lambda q: lg.elbo(model, x, q))(q)
  log_joint = lambda z: (lg.log_likelihood(model, x, z) - 0.5 * z @ z -
                         0.5 * z.shape[0] * jnp.log(2 * jnp.pi))
  entropy_grad = jax.grad(lambda q: jnp.sum(q.entropy()))(q)
  identity = lambda p: p
  records = []
  for est in estimators:
    info = registry.lookup(est)
    fn = registry.get(est)
    for n in num_samples:
      if n < info.min_samples:
        continue
      keys = jax.random.split(jax.random.fold_in(
          jax.random.PRNGKey(seed + 7), registry.index(est) * 1000 + int(n)),
                             num_draws)
      g = jax.jit(jax.vmap(lambda k: fn(log_joint, q, identity, k, int(n))))(keys)
      for field in ('loc', 'log_scale'):
        draws = np.asarray(getattr(g, field)) + np.asarray(
            getattr(entropy_grad, field))
        mean, var, se, var_se = _summarize(draws.T)
        want = np.asarray(getattr(exact, field))
        for i in range(draws.shape[1]):
          records.append({
              'problem': 'linear_gaussian',
              'cost': 'linear_gaussian_elbo', 'estimator': est,
              'param': f'{field}[{i}]', 'mu': float(q.loc[i]),
              'sigma': float(q.scale[i]), 'num_samples': int(n),
              'num_draws': num_draws, 'mean': float(mean[i]),
              'variance': float(var[i]), 'std_error': float(se[i]),
              'variance_std_error': float(var_se[i]),
              'exact_gradient': float(want[i]), 'exact_variance': None,
              'z_score': _z_score(mean[i], want[i], se[i]),
              'variance_ratio': None, 'exact_source': 'closed_form',
              'unbiased': info.unbiased,
          })
  return records


def summary_rows(records: Sequence[Record]) -> list[Record]:
  """One row per (problem, cost, param, estimator, N) for the terminal.

  Columns: the largest |z| of the mean against the exact gradient over the
  grid (unbiased estimators should stay below ~4), the geometric mean of the
  variance over the grid, and the worst relative error of the variance
  against its closed form (where known).
  """
  groups: dict[tuple, list[Record]] = {}
  for r in records:
    param = r['param'].split('[')[0]
    key = (r['problem'], r['cost'], param, r['estimator'], r['num_samples'])
    groups.setdefault(key, []).append(r)
  rows = []
  for (problem, cost, param, est, n), rs in groups.items():
    var = np.array([r['variance'] for r in rs])
    ratios = [abs(r['variance_ratio'] - 1) for r in rs
              if r['variance_ratio'] is not None]
    rows.append({
        'cost': cost, 'param': param, 'estimator': est, 'N': n,
        'max|z|': max(abs(r['z_score']) for r in rs),
        'geomean_var': float(np.exp(np.mean(np.log(np.maximum(var, 1e-300))))),
        'max|var/exact-1|': max(ratios) if ratios else None,
    })
  return rows
