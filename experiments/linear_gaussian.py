"""pPCA: log p(x) - ELBO = KL(q ‖ p(z|x)), IWAE_k → log p(x), ELBO vs MLE fits.

Model: z ~ N(0, I_d), x | z ~ N(Wz + b, σ² I_D), where everything is exact
(`vae.linear_gaussian`, `vae.amortization`). The experiment

1. checks log p(x) - ELBO(q) = KL(q ‖ p(z|x)) for random diagonal q, per
   data point (and on average), with all three terms in closed form;
2. shows ELBO(q*) = log p(x) at the best diagonal q* when WᵀW is diagonal
   (then q* is the exact posterior), and otherwise reports the gap
   ½(Σ_j log Λ_jj - log det Λ) of the best diagonal q;
3. estimates IWAE_k with q* for k = 1 ... 1000: it climbs toward log p(x);
4. fits the model to data by closed-form maximum likelihood (`fit_ppca`) and
   by maximizing the ELBO (optax Adam) with each gradient estimator and an
   amortized linear encoder or per-point q, and compares the exact
   log-likelihoods of the fitted models on training and held-out data.
"""

import dataclasses
import functools
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

_DATA_DIM = flags.DEFINE_integer('ppca_data_dim', 10,
                                 'Observed dimension D.')
_LATENT_DIM = flags.DEFINE_integer('ppca_latent_dim', 4,
                                   'Latent dimension d.')
_NOISE_SCALE = flags.DEFINE_float('noise_scale', 0.5, 'Observation noise σ.')
_TRAIN_SIZE = flags.DEFINE_integer('train_size', 500, 'Training points.')
_TEST_SIZE = flags.DEFINE_integer('test_size', 2000, 'Held-out points.')
_IDENTITY_PAIRS = flags.DEFINE_integer(
    'identity_pairs', 200, '(x, random q) pairs for the ELBO identity check.')
_IWAE_KS = flags.DEFINE_list('iwae_ks', ['1', '2', '5', '10', '50', '100',
                                         '500', '1000'],
                             'Numbers of importance samples k for IWAE_k.')
_IWAE_POINTS = flags.DEFINE_integer('iwae_points', 10,
                                    'Data points for the IWAE_k curve.')
_IWAE_REPEATS = flags.DEFINE_integer(
    'iwae_repeats', 100, 'Independent IWAE_k draws per data point.')
_AMORTIZED_ESTIMATORS = flags.DEFINE_list(
    'amortized_estimators', ['pathwise', 'score', 'score_rloo', 'stl'],
    'Estimators for ELBO fits with an amortized linear encoder.')
_PER_POINT_ESTIMATORS = flags.DEFINE_list(
    'per_point_estimators', ['pathwise', 'score'],
    'Estimators for ELBO fits with per-data-point q.')
_FIT_STEPS = flags.DEFINE_integer('fit_steps', 2000,
                                  'Full-batch Adam steps of each ELBO fit.')
_FIT_LEARNING_RATE = flags.DEFINE_float('fit_learning_rate', 1e-2,
                                        'Adam step size of the ELBO fits.')
_FIT_SAMPLES = flags.DEFINE_integer(
    'fit_samples', 2, 'z samples per data point per step in the ELBO fits.')
_X64 = flags.DEFINE_bool('x64', True, 'Compute in float64.')
cli.define_common_flags()
FLAGS = flags.FLAGS
Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Settings:
  """What to run (defaults = the script's defaults)."""
  data_dim: int = 10
  latent_dim: int = 4
  noise_scale: float = 0.5
  train_size: int = 500
  test_size: int = 2000
  identity_pairs: int = 200
  iwae_ks: tuple[int, ...] = (1, 2, 5, 10, 50, 100, 500, 1000)
  iwae_points: int = 10
  iwae_repeats: int = 100
  amortized_estimators: tuple[str, ...] = ('pathwise', 'score', 'score_rloo',
                                           'stl')
  per_point_estimators: tuple[str, ...] = ('pathwise', 'score')
  fit_steps: int = 2000
  fit_learning_rate: float = 1e-2
  fit_samples: int = 2
  seed: int = 0


def identity_check(model: lg.LinearGaussianModel, x: Array,
                   key) -> list[dict[str, Any]]:
  """log p(x) - ELBO(q) vs KL(q ‖ p(z|x)) for random diagonal q, one per x."""
  n, d = x.shape[0], model.latent_dim

  @jax.jit
  def all_terms(model, x, key):
    k_loc, k_scale = jax.random.split(key)
    loc = 2.0 * jax.random.normal(k_loc, (n, d), x.dtype)
    log_scale = jax.random.uniform(k_scale, (n, d), x.dtype, -2.0, 1.0)

    def terms(xi, loc, log_scale):
      qi = dists.Normal(loc, log_scale)
      return (lg.log_marginal(model, xi), lg.elbo(model, xi, qi),
              lg.kl_to_posterior(model, xi, qi))

    return jax.vmap(terms)(x, loc, log_scale)

  log_px, elbo, kl = all_terms(model, x, key)
  residual = log_px - elbo - kl
  records = [{'section': 'identity', 'point': i, 'log_px': log_px[i],
              'elbo': elbo[i], 'kl_q_posterior': kl[i],
              'residual': residual[i]} for i in range(min(5, n))]
  records.append({
      'section': 'identity', 'point': f'mean over {n}',
      'log_px': jnp.mean(log_px), 'elbo': jnp.mean(elbo),
      'kl_q_posterior': jnp.mean(kl), 'residual': jnp.mean(residual),
      'max_abs_residual': jnp.max(jnp.abs(residual))})
  return records


def exact_posterior_check(model: lg.LinearGaussianModel, ortho_model,
                          x: Array, x_ortho: Array) -> list[dict[str, Any]]:
  """ELBO of the best diagonal q*, vs log p(x), for WᵀW diagonal or not."""
  records = []
  for name, m, data in (('orthogonal W (WᵀW diagonal)', ortho_model, x_ortho),
                        ('random W', model, x)):
    log_px = am.batch_log_marginal(m, data)
    elbo = am.batch_elbo(m, data, am.optimal_diagonal_q(m, data))
    records.append({
        'section': 'best_diagonal_q', 'model': name,
        'log_px': jnp.mean(log_px), 'elbo_best_diagonal_q': jnp.mean(elbo),
        'gap': jnp.mean(log_px - elbo),
        'max_abs_gap_minus_formula': jnp.max(jnp.abs(
            log_px - elbo - am.approximation_gap(m))),
        'gap_formula': am.approximation_gap(m)})
  return records


def iwae_curve(model: lg.LinearGaussianModel, x: Array, ks: tuple[int, ...],
               repeats: int, key) -> list[dict[str, Any]]:
  """IWAE_k - log p(x) with q = q*(z|x), averaged over points and repeats.

  IWAE_k = log (1/k) Σ_j p(x, z_j)/q(z_j), z_j ~ q; all k from nested
  prefixes of one draw of max(ks) samples per repeat.
  """
  k_max = max(ks)
  prior = dists.standard_normal((model.latent_dim,), x.dtype)

  def per_point(xi, key):
    q = am.optimal_diagonal_q(model, xi)
    proposal = isl.MultivariateNormal.diagonal(q.loc, q.scale)
    log_joint = lambda z: (lg.log_likelihood(model, xi, z) +
                           jnp.sum(prior.log_prob(z)))
    keys = jax.random.split(key, repeats)
    log_w = jax.vmap(lambda k: isl.log_weights(log_joint, proposal, k,
                                               k_max))(keys)
    return isl.running_log_mean_exp(log_w) - lg.log_marginal(model, xi)

  keys = jax.random.split(key, x.shape[0])
  gaps = jax.jit(jax.vmap(per_point))(x, keys)  # [P, R, k_max]
  elbo_gap = am.approximation_gap(model)
  records = []
  for k in ks:
    g = gaps[:, :, k - 1]
    records.append({
        'section': 'iwae', 'k': k, 'iwae_minus_log_px': jnp.mean(g),
        'stderr': jnp.std(jnp.mean(g, 0)) / np.sqrt(g.shape[1]),
        'std_per_draw': jnp.mean(jnp.std(g, 1)),
        'elbo_minus_log_px': -elbo_gap})
  return records


def fits(x_train: Array, x_test: Array, true_model, settings: Settings,
         key) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
  """True model, pPCA MLE and ELBO fits: exact train/held-out log p(x)."""
  d = settings.latent_dim
  records, curves = [], {}

  def record(method, model, final_elbo=None):
    records.append({
        'section': 'fit', 'method': method,
        'train_ll': jnp.mean(am.batch_log_marginal(model, x_train)),
        'test_ll': jnp.mean(am.batch_log_marginal(model, x_test)),
        'train_elbo': final_elbo,
        'approximation_gap_of_model': am.approximation_gap(model)})

  record('true model', true_model)
  record('pPCA maximum likelihood (closed form)', lg.fit_ppca(x_train, d))
  fit = jax.jit(am.fit_by_elbo, static_argnums=(1, 2, 4, 5, 7))
  runs = ([('amortized', e) for e in settings.amortized_estimators] +
          [('per_point', e) for e in settings.per_point_estimators])
  for i, (inference, estimator) in enumerate(runs):
    model, _, history = fit(x_train, d, estimator, jax.random.fold_in(key, i),
                            inference, settings.fit_steps,
                            settings.fit_learning_rate, settings.fit_samples)
    name = f'ELBO, {estimator}, {inference} q'
    curves[name] = np.asarray(history)
    record(name, model, history[-1])
  return records, curves


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5, 6))
def _setup(key, data_dim, latent_dim, noise_scale, train_size, test_size,
           pairs):
  """Models and data sets from ONE normal draw (one compiled RNG call).

  Model: W, b with N(0, 1) entries (as `linear_gaussian.random_model`);
  orthogonal model: W = U diag(1..d), U from the QR of a normal matrix;
  data: z ~ N(0, I), x = Wz + b + σ ε.
  """
  dtype = jnp.result_type(float)
  d, dd = latent_dim, data_dim
  sizes = [dd * d, dd, dd * d, dd] + [n * (d + dd) for n in (
      train_size, test_size, pairs, pairs)]
  draws = jax.random.normal(key, (sum(sizes),), dtype)
  parts = jnp.split(draws, np.cumsum(sizes)[:-1])
  log_noise = jnp.log(jnp.asarray(noise_scale, dtype))
  model = lg.LinearGaussianModel(parts[0].reshape(dd, d), parts[1], log_noise)
  u, _ = jnp.linalg.qr(parts[2].reshape(dd, d))
  ortho = lg.LinearGaussianModel(u * jnp.arange(1, d + 1, dtype=dtype),
                                 parts[3], log_noise)
  data = []
  for m, part in zip((model, model, model, ortho), parts[4:]):
    zeta = part.reshape(-1, d + dd)
    data.append(zeta[:, :d] @ m.weight.T + m.bias + noise_scale * zeta[:, d:])
  return model, ortho, data


def run(settings: Settings) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """Runs all four parts; returns (records, curves for the plots)."""
  key = jax.random.PRNGKey(settings.seed)
  keys = jax.random.split(key, 8)
  model, ortho, (x_train, x_test, x_pairs, x_ortho) = _setup(
      keys[0], settings.data_dim, settings.latent_dim, settings.noise_scale,
      settings.train_size, settings.test_size, settings.identity_pairs)
  records = identity_check(model, x_pairs, keys[6])
  records += exact_posterior_check(model, ortho, x_pairs, x_ortho)
  iwae = iwae_curve(model, x_test[:settings.iwae_points], settings.iwae_ks,
                    settings.iwae_repeats, keys[7])
  records += iwae
  fit_records, curves = fits(x_train, x_test, model, settings,
                             jax.random.fold_in(key, 100))
  records += fit_records
  records = [{k: results.to_jsonable(v) for k, v in r.items()}
             for r in records]
  return records, {'training': curves}


def plot(records: list[dict[str, Any]], curves: dict[str, Any],
         out_dir: str) -> list[str]:
  """Identity scatter, IWAE_k curve, training curves, fitted log-likelihoods."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  iw = [r for r in records if r['section'] == 'iwae']
  ks = [r['k'] for r in iw]
  axes[0].errorbar(ks, [r['iwae_minus_log_px'] for r in iw],
                   yerr=[2 * r['stderr'] for r in iw], marker='o',
                   label='E[IWAE_k] - log p(x)  (q = best diagonal q*)')
  axes[0].axhline(iw[0]['elbo_minus_log_px'], color='tab:red', ls=':',
                  label='ELBO(q*) - log p(x)')
  axes[0].axhline(0.0, color='k', lw=0.8)
  axes[0].set_xscale('log')
  axes[0].set_xlabel('k (importance samples)')
  axes[0].set_ylabel('nats')
  axes[0].set_title('IWAE_k climbs toward log p(x)')
  axes[0].legend(fontsize=8)
  fit = [r for r in records if r['section'] == 'fit']
  y = np.arange(len(fit))
  axes[1].plot([r['train_ll'] for r in fit], y, 'o', label='train')
  axes[1].plot([r['test_ll'] for r in fit], y, 's', label='held-out')
  axes[1].set_yticks(y)
  axes[1].set_yticklabels([r['method'] for r in fit], fontsize=8)
  axes[1].invert_yaxis()
  axes[1].grid(alpha=0.3)
  axes[1].set_xlabel('mean exact log p(x) under the fitted model')
  axes[1].legend(fontsize=8)
  axes[1].set_title('Fitted models (exact log-likelihood)')
  paths = [results.save_figure(fig, os.path.join(out_dir, 'iwae_and_fits.png'))]

  fig, ax = plt.subplots(figsize=(8, 4.5))
  for name, hist in curves['training'].items():
    ax.plot(np.arange(1, len(hist) + 1), hist, label=name, lw=1.2)
  mle = next(r for r in fit if r['method'].startswith('pPCA'))
  ax.axhline(mle['train_ll'], color='k', ls='--',
             label='max log-likelihood (pPCA MLE)')
  top = mle['train_ll']
  ax.set_ylim(top - 1.5, top + 0.2)
  ax.set_xlabel('Adam step')
  ax.set_ylabel('exact mean train ELBO')
  ax.set_title('Learning the model by maximizing the ELBO')
  ax.legend(fontsize=7)
  paths.append(results.save_figure(fig, os.path.join(out_dir,
                                                     'elbo_training.png')))
  return paths


def print_tables(records: list[dict[str, Any]]) -> None:
  sections = {
      'identity': ('point', 'log_px', 'elbo', 'kl_q_posterior', 'residual',
                   'max_abs_residual'),
      'best_diagonal_q': ('model', 'log_px', 'elbo_best_diagonal_q', 'gap',
                          'gap_formula', 'max_abs_gap_minus_formula'),
      'iwae': ('k', 'iwae_minus_log_px', 'stderr', 'std_per_draw',
               'elbo_minus_log_px'),
      'fit': ('method', 'train_ll', 'test_ll', 'train_elbo',
              'approximation_gap_of_model'),
  }
  titles = {
      'identity': 'log p(x) - ELBO(q) = KL(q ‖ p(z|x)) for random diagonal q',
      'best_diagonal_q': 'Best diagonal q*: ELBO(q*) = log p(x) iff WᵀW '
                         'diagonal',
      'iwae': 'IWAE_k - log p(x) (q = q*)',
      'fit': 'Fitted models: exact mean log p(x)',
  }
  for section, columns in sections.items():
    rows = [r for r in records if r['section'] == section]
    print(f'\n== {titles[section]}')
    print(results.format_table(rows, columns, float_fmt='.6g'))


def main(argv):
  del argv
  with jax.enable_x64(_X64.value):  # Scoped: no global config change.
    _main()


def _main():
  out_dir = cli.output_dir('linear_gaussian')
  results.write_config(out_dir, FLAGS, FLAGS.seed)
  settings = Settings(
      data_dim=_DATA_DIM.value, latent_dim=_LATENT_DIM.value,
      noise_scale=_NOISE_SCALE.value, train_size=_TRAIN_SIZE.value,
      test_size=_TEST_SIZE.value, identity_pairs=_IDENTITY_PAIRS.value,
      iwae_ks=tuple(int(k) for k in _IWAE_KS.value),
      iwae_points=_IWAE_POINTS.value, iwae_repeats=_IWAE_REPEATS.value,
      amortized_estimators=tuple(_AMORTIZED_ESTIMATORS.value),
      per_point_estimators=tuple(_PER_POINT_ESTIMATORS.value),
      fit_steps=_FIT_STEPS.value, fit_learning_rate=_FIT_LEARNING_RATE.value,
      fit_samples=_FIT_SAMPLES.value, seed=FLAGS.seed)
  records, curves = run(settings)
  plot(records, curves, out_dir)
  results.write_results(out_dir, records)
  print_tables(records)
  print(f'\nOutputs in {out_dir}')


if __name__ == '__main__':
  app.run(main)
