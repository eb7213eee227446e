"""Why log p(x) is hard: prior Monte Carlo vs importance sampling with q(z|x).

As the number of samples and the latent dimension grow.

On the linear-Gaussian model (z ~ N(0, I_d), x|z ~ N(Wz + b, σ²I_D)) log p(x)
is known exactly, so each estimator

    log p̂_K(x) = log (1/K) Σ_k p(x|z_k) p(z_k)/q(z_k),  z_k ~ q

can be scored by its bias, standard deviation and RMSE against the truth.
Proposals: the prior (naive Monte Carlo, log (1/K) Σ p(x|z_k)), the exact
posterior (every weight equals p(x): zero error with K = 1), the best
diagonal Gaussian q* (what a perfect amortized mean-field encoder outputs;
its tails are too light when the posterior is correlated, and then χ² = ∞)
and a deliberately mismatched q (means off by one posterior sd, sds twice
the posterior marginal sds: wrong but overdispersed). The closed-form χ²
divergence ρ = χ²(p(z|x) ‖ q) predicts the delta-method error
(bias ≈ -ρ/2K, sd ≈ √(ρ/K)) and the number of samples needed for
RMSE < tolerance (K ≈ ρ/ε²): for the prior it grows exponentially with the
latent dimension. (No MNIST path: it would need a trained model.)
"""

import dataclasses
import functools
import math
import os
from typing import Any

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from vae.problems import amortization as am
from vae import cli
from vae import distributions as dists
from vae import importance_sampling as isl
from vae.problems import linear_gaussian as lg
from vae import results

_LATENT_DIMS = flags.DEFINE_list('latent_dims', ['1', '2', '4', '8'],
                                 'Latent dimensions d to sweep.')
_OBSERVED_DIM = flags.DEFINE_integer('observed_dim', 16,
                                     'Observed dimension D (> max d).')
_NOISE = flags.DEFINE_float('noise', 0.5, 'Observation noise σ.')
_POINTS = flags.DEFINE_integer('points', 2, 'Data points x per dimension.')
_REPEATS = flags.DEFINE_integer('repeats', 32,
                                'Independent estimates per (x, K).')
_MAX_LOG2_SAMPLES = flags.DEFINE_integer(
    'max_log2_samples', 14, 'Largest K is 2^this; K runs over powers of 2.')
_TOLERANCE = flags.DEFINE_float('tolerance', 0.1,
                                'Target RMSE in nats for "samples needed".')
_PROPOSALS = flags.DEFINE_list(
    'proposals', ['prior', 'posterior', 'mean_field', 'mismatched'],
    'Proposals q to compare.')
cli.define_common_flags()
FLAGS = flags.FLAGS

PROPOSALS = ('prior', 'posterior', 'mean_field', 'mismatched')


@dataclasses.dataclass(frozen=True)
class Settings:
  """What to run (defaults = the script's defaults)."""
  latent_dims: tuple[int, ...] = (1, 2, 4, 8)
  observed_dim: int = 16
  noise: float = 0.5
  points: int = 2
  repeats: int = 32
  max_log2_samples: int = 14
  tolerance: float = 0.1
  proposals: tuple[str, ...] = PROPOSALS
  seed: int = 0


def proposal(name: str, model: lg.LinearGaussianModel,
             x: jax.Array) -> isl.MultivariateNormal:
  """The proposal q(z) for one x."""
  d = model.latent_dim
  if name == 'prior':
    return isl.MultivariateNormal(jnp.zeros(d, x.dtype), jnp.eye(d,
                                                                 dtype=x.dtype))
  mean, cov = lg.posterior(model, x)
  if name == 'posterior':
    return isl.MultivariateNormal.from_covariance(mean, cov)
  q = am.optimal_diagonal_q(model, x)
  if name == 'mean_field':
    return isl.MultivariateNormal.diagonal(q.loc, q.scale)
  if name == 'mismatched':
    sd = jnp.sqrt(jnp.diagonal(cov))
    return isl.MultivariateNormal.diagonal(q.loc + sd, 2.0 * sd)
  raise ValueError(f'unknown proposal {name!r}; choose from {PROPOSALS}.')


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _setup(key, data_dim, latent_dim, noise, points):
  """Model (W, b ~ N(0, 1)) and `points` data points from one normal draw."""
  dtype = jnp.result_type(float)
  d, dd = latent_dim, data_dim
  draws = jax.random.normal(key, (dd * d + dd + points * (d + dd),), dtype)
  model = lg.LinearGaussianModel(draws[:dd * d].reshape(dd, d),
                                 draws[dd * d:dd * d + dd],
                                 jnp.log(jnp.asarray(noise, dtype)))
  zeta = draws[dd * d + dd:].reshape(points, d + dd)
  return model, zeta[:, :d] @ model.weight.T + model.bias + noise * zeta[:, d:]


@functools.partial(jax.jit, static_argnums=2)
def _proposals(model, x, names):
  """{name: q batched over the rows of x [P, D]} in one compiled call."""
  return {n: jax.vmap(lambda xi, n=n: proposal(n, model, xi))(x)
          for n in names}


@functools.partial(jax.jit, static_argnums=(4, 5, 6))
def _errors(model, x, q, key, repeats, max_k, ks):
  """log p̂_K(x_p) - log p(x_p) [P, repeats, len(ks)] and log(1+ρ_p) [P].

  One compilation serves every proposal of the same latent dimension (they
  are all `MultivariateNormal`s with the same shapes).
  """
  prior = dists.standard_normal((model.latent_dim,), x.dtype)

  def one(xi, qi, ki):
    log_joint = lambda z: (lg.log_likelihood(model, xi, z) +
                           jnp.sum(prior.log_prob(z)))
    keys = jax.random.split(ki, repeats)
    log_w = jax.vmap(lambda k: isl.log_weights(log_joint, qi, k, max_k))(keys)
    running = isl.running_log_mean_exp(log_w)[:, jnp.asarray(ks) - 1]
    mean, cov = lg.posterior(model, xi)
    log_rho1 = isl.log_chi2_plus_one(
        isl.MultivariateNormal.from_covariance(mean, cov), qi)
    return running - lg.log_marginal(model, xi), log_rho1

  return jax.vmap(one)(x, q, jax.random.split(key, x.shape[0]))


def run(settings: Settings) -> list[dict[str, Any]]:
  """Sweeps latent dims × proposals × K; returns per-K and summary records."""
  ks = tuple(2**i for i in range(settings.max_log2_samples + 1))
  key = jax.random.PRNGKey(settings.seed)
  records = []
  for d in settings.latent_dims:
    k_model, k_est = jax.random.split(jax.random.fold_in(key, d))
    model, x = _setup(k_model, settings.observed_dim, d, settings.noise,
                      settings.points)
    proposals = _proposals(model, x, tuple(settings.proposals))
    for i, name in enumerate(settings.proposals):
      errors, log_rho1 = _errors(model, x, proposals[name],
                                 jax.random.fold_in(k_est, i),
                                 settings.repeats, ks[-1], ks)
      errors = np.asarray(errors).reshape(-1, len(ks))  # [P * repeats, K's]
      # Pooled over points: E_x[ρ_x] sets the pooled mean squared error.
      rho = float(np.mean(np.expm1(np.asarray(log_rho1, np.float64))))
      log_rho1_pooled = math.log1p(rho) if math.isfinite(rho) else math.inf
      summary = isl.error_summary(errors, 0.0)
      rmse = np.asarray(summary['rmse'])
      below = [k for k, r in zip(ks, rmse) if r < settings.tolerance]
      for j, k in enumerate(ks):
        bias_pred, std_pred = isl.predicted_bias_and_std(log_rho1_pooled, k)
        records.append({
            'kind': 'per_K', 'latent_dim': d, 'proposal': name, 'K': k,
            'bias': float(summary['bias'][j]),
            'std': float(summary['std'][j]), 'rmse': float(rmse[j]),
            'predicted_bias': float(bias_pred),
            'predicted_std': float(std_pred)})
      records.append({
          'kind': 'summary', 'latent_dim': d, 'proposal': name,
          'log1p_chi2': log_rho1_pooled,
          'bias_at_K=1': float(summary['bias'][0]),
          'bias_at_K_max': float(summary['bias'][-1]),
          'rmse_at_K_max': float(rmse[-1]),
          'K_needed_predicted': max(1.0, float(isl.samples_needed(
              log_rho1_pooled, settings.tolerance))),
          'K_needed_measured': below[0] if below else None,
          'K_max': ks[-1]})
  return records


def plot(records: list[dict[str, Any]], out_dir: str) -> list[str]:
  """Error vs K per latent dim, and samples needed vs latent dim."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  per_k = [r for r in records if r['kind'] == 'per_K']
  dims = sorted({r['latent_dim'] for r in per_k})
  names = list(dict.fromkeys(r['proposal'] for r in per_k))
  fig, axes = plt.subplots(1, len(dims), figsize=(4 * len(dims), 4),
                           squeeze=False, sharey=True)
  for ax, d in zip(axes[0], dims):
    for i, name in enumerate(names):
      rows = [r for r in per_k if r['latent_dim'] == d and
              r['proposal'] == name]
      ks = [r['K'] for r in rows]
      color = f'C{i}'
      ax.plot(ks, [max(r['rmse'], 1e-6) for r in rows], 'o-', color=color,
              ms=3, label=f'{name} RMSE')
      ax.plot(ks, [max(abs(r['bias']), 1e-6) for r in rows], ':',
              color=color, label=f'{name} |bias|')
    ax.axhline(0.1, color='k', lw=0.7, ls='--')
    ax.set_xscale('log', base=2)
    ax.set_yscale('log')
    ax.set_xlabel('K (samples)')
    ax.set_title(f'latent dim d = {d}')
  axes[0][0].set_ylabel('error of log p̂_K(x) (nats)')
  axes[0][0].legend(fontsize=6)
  paths = [results.save_figure(fig, os.path.join(out_dir,
                                                 'error_vs_samples.png'))]

  summary = [r for r in records if r['kind'] == 'summary']
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for i, name in enumerate(names):
    rows = [r for r in summary if r['proposal'] == name]
    pred = [(r['latent_dim'], r['K_needed_predicted']) for r in rows
            if r['K_needed_predicted'] is not None and
            0 < r['K_needed_predicted'] < 1e300]
    if pred:
      ax.plot(*zip(*pred), 'o-', color=f'C{i}',
              label=f'{name}: predicted (χ²)')
    meas = [(r['latent_dim'], r['K_needed_measured']) for r in rows
            if r['K_needed_measured'] is not None]
    if meas:
      ax.plot(*zip(*meas), 'x', ms=10, color=f'C{i}',
              label=f'{name}: measured')
  k_max = summary[0]['K_max']
  ax.axhline(k_max, color='k', lw=0.7, ls='--', label='largest K tried')
  ax.set_yscale('log')
  ax.set_xlabel('latent dimension d')
  ax.set_ylabel('samples K for RMSE < tolerance')
  ax.set_title('Samples needed to estimate log p(x)')
  ax.legend(fontsize=7)
  paths.append(results.save_figure(fig, os.path.join(out_dir,
                                                     'samples_needed.png')))
  return paths


def main(argv):
  del argv
  with jax.enable_x64(True):  # Scoped: no global config change.
    _main()


def _main():
  out_dir = cli.output_dir('intractability')
  results.write_config(out_dir, FLAGS, FLAGS.seed)
  settings = Settings(
      latent_dims=tuple(int(d) for d in _LATENT_DIMS.value),
      observed_dim=_OBSERVED_DIM.value, noise=_NOISE.value,
      points=_POINTS.value, repeats=_REPEATS.value,
      max_log2_samples=_MAX_LOG2_SAMPLES.value, tolerance=_TOLERANCE.value,
      proposals=tuple(_PROPOSALS.value), seed=FLAGS.seed)
  records = run(settings)
  plot(records, out_dir)
  results.write_results(out_dir, records)
  shown = [r for r in records if r['kind'] == 'per_K' and
           r['K'] in (1, 16, 256, 4096, 2**settings.max_log2_samples)]
  print(results.format_table(shown, ('latent_dim', 'proposal', 'K', 'bias',
                                     'std', 'rmse', 'predicted_bias',
                                     'predicted_std')))
  print()
  print(results.format_table(
      [r for r in records if r['kind'] == 'summary'],
      ('latent_dim', 'proposal', 'log1p_chi2', 'bias_at_K=1',
       'bias_at_K_max', 'rmse_at_K_max', 'K_needed_predicted',
       'K_needed_measured')))
  print(f'\nOutputs in {out_dir}')


if __name__ == '__main__':
  app.run(main)
