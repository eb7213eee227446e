"""Amortization and approximation gaps of a trained image VAE (Cremer et al.).

For the first --num_eval test images of a train_vae run (--checkpoint_dir),
each image's q is fitted to its own ELBO, decoder fixed (`vae.analysis.image_inference
.fit`), in each of --families in turn: the diagonal Gaussian from the
encoder's output, the full-covariance one from that fit. From --eval_k
samples of each q (`bounds`): log p̂(x) (importance sampling; the largest
over the q's), IWAE_k, the ELBO, and per family the approximation gap
log p̂(x) - ELBO(q*) and the amortization gap ELBO(q*) - ELBO(q_φ). Checks
(`gap_records`): IWAE_K ≥ ELBO for each q; every gap and the full family's
gain ≥ 0, up to Monte Carlo error. gaps.png, largest_gaps.png, timing.json.

With --ais_images=n (evaluate_vae's AIS settings), AIS from the encoder's q
on the first n images (`vae.evaluate.ais_summary`) is the reference log p(x)
instead: 'gap_ais' rows (`image_inference.ais_gap_records`) restate the gaps
against it, with SEs over images and Monte Carlo SEs, and AIS - IS. With
--bdmc_images=m, 'bdmc' rows give the BDMC bracket on m images simulated
from the model at each --bdmc_temperatures (`vae.evaluate.bdmc_records`,
checked: gap ≥ 0); the gap at T = --ais_temperatures, if run, is carried in
the 'gap_ais' rows as the uncertainty that remains in the AIS reference.

  python launch.py --experiment=mnist_gaps --checkpoint_dir=runs/vae_mnist \\
      --tfds_data_dir=DATA_DIR
"""

import functools

import jax
import numpy as np

from experiments import evaluate_vae
from experiments import mnist_intractability as mi
from experiments.common import outputs
from experiments.common import pictures
from vae import config as cfg
from vae import evaluate as eval_lib
from vae import stats
from vae import optim
from vae.analysis import image_inference as ii


@cfg.settings
class Config:
  """The trained VAE and its evaluation (evaluate_vae's settings); the fits."""
  trained: evaluate_vae.Config = evaluate_vae.Config(
      evaluation=eval_lib.EvalConfig(num_eval=1000, eval_iwae_ks=(1, 10, 100)))
  families: tuple[str, ...] = cfg.setting(
      ii.FAMILIES, 'Local q families, fitted in this order, each from the '
      'last fit (the first from the encoder).', choices=ii.FAMILIES)
  fit_steps: int = cfg.like(optim.FitConfig, 'fit_steps')  # Per image, family.
  fit_samples: int = cfg.like(optim.FitConfig, 'fit_samples')
  optimizer: optim.OptimizerConfig = optim.OptimizerConfig(
      learning_rate=3e-3, lr_schedule='cosine')

  def check(self):
    """families: each once, smaller first (a fit starts from the last)."""
    if list(self.families) != sorted(set(self.families),
                                     key=ii.FAMILIES.index):
      raise ValueError(f'families: give each once, in the order '
                       f'{",".join(ii.FAMILIES)}.')


def run(config: Config, seed: int, out: outputs.Run) -> list[dict]:
  """Gap and per-q rows, optimization curves; the figures."""
  model, params, images = mi.load(config.trained, out.log)
  ev, key = config.trained.evaluation, jax.random.PRNGKey(seed)
  timing: dict[str, dict[str, float]] = {}
  bounds = functools.partial(
      ii.bounds, model, params, num_samples=ev.eval_k,
      chunk_size=ev.eval_chunk_size, iwae_ks=ev.eval_iwae_ks)
  fit = functools.partial(ii.fit, model, params, num_steps=config.fit_steps,
                          num_samples=config.fit_samples,
                          optimizer=config.optimizer)
  # The amortized row evaluates q_φ itself (q=None: any family); the first
  # fit starts from its diagonal Gaussian (moment-matched if q_φ is not one).
  start = ii.encoder_q(model, params, images, jax.random.fold_in(key, 1000))
  q, per_q, fitted, curves = None, {}, {}, {}
  for i, name in enumerate(('amortized',) + config.families):
    if i:
      q = start if q is None else q
      out.log(f'fitting {name} q: {config.fit_steps} steps x '
              f'{config.fit_samples} samples per image')
      q, elbo = mi.timed(timing, f'fit_{name}', ii.batched, fit,
                         ev.eval_batch_size, jax.random.fold_in(key, 2 * i),
                         images, ii.in_family(q, name), out.log)
      fitted[name], curves[name] = q, elbo.mean(0)
    per_q[name] = mi.timed(timing, f'bounds_{name}', ii.batched, bounds,
                           ev.eval_batch_size,
                           jax.random.fold_in(key, 2 * i + 1), images, q,
                           out.log)
    out.log(f'{name}: ELBO {per_q[name]["elbo"].mean():.3f}, log p̂ (K='
            f'{ev.eval_k}) {per_q[name]["log_px"].mean():.3f}')
  family = ii.encoder_family(model, params, images)
  encoder_in = tuple(f for f in config.families if family is not None and
                     ii.FAMILIES.index(f) >= ii.FAMILIES.index(family))
  records = ii.gap_records(per_q, config.families, encoder_in) + _brackets(
      model, params, images, per_q, config, key, timing, out)
  records = stats.mark_disagreements(records)
  steps = sorted({int(s) for s in np.geomspace(1, config.fit_steps, 20)})
  records += [{'kind': 'curve', 'family': f, 'step': s,
               'mean_elbo_estimate': float(c[s - 1])}
              for f, c in curves.items() for s in steps]
  out.write_json('timing.json', timing)
  for kind in ('q', 'gap', 'gap_ais', 'bdmc'):
    rows = [r for r in records if r['kind'] == kind]
    if rows:
      out.table(rows, GAP_AIS_COLUMNS if kind == 'gap_ais' else None)
  plot(records, curves, per_q, out)
  if ev.pictures:
    _largest_gaps(model, params, images, per_q, fitted, out)
  return records


GAP_AIS_COLUMNS = ('family', 'images', 'log_px_ais', 'log_px_ais_se_mc',
                   'log_px_is', 'ais_minus_is', 'ais_minus_is_se',
                   'elbo_optimal_q', 'approximation_gap',
                   'approximation_gap_se', 'amortization_gap',
                   'inference_gap', 'bdmc_gap', 'bdmc_gap_se', 'disagrees')


def _brackets(model, params, images, per_q, config: Config, key, timing,
              out: outputs.Run) -> list[dict]:
  """The BDMC rows (key fold_in(key, 101)) and the gaps against AIS (key
  fold_in(key, 100)), as the AIS settings ask; none by default."""
  settings = config.trained.evaluation.ais
  rows: list[dict] = []
  if settings.bdmc_images:
    rows = mi.timed(timing, 'bdmc', eval_lib.bdmc_records, model, params,
                    settings, jax.random.fold_in(key, 101), out.log)
  if not settings.ais_images:
    return rows
  enc = per_q['amortized']
  _, ais = mi.timed(timing, 'ais', eval_lib.ais_summary, model, params,
                    images, enc['log_px'], enc['log_px_se'], settings,
                    jax.random.fold_in(key, 100), out.log)
  same_t = [r for r in rows if r['T'] == settings.ais_temperatures]
  gap = (same_t[0]['gap'], same_t[0]['gap_se']) if same_t else (None, None)
  return ii.ais_gap_records(per_q, config.families, ais, *gap) + rows


def plot(records: list[dict], curves: dict, per_q: dict,
         out: outputs.Run) -> None:
  """The fits' ELBO against step; histograms of the gaps per image."""
  fig, axes = outputs.pyplot().subplots(1, 2, figsize=(12, 4.5),
                                       layout='constrained')
  gaps = [r for r in records if r['kind'] == 'gap']
  for i, (f, c) in enumerate(curves.items()):
    axes[0].plot(np.arange(1, len(c) + 1), c, color=f'C{i}', lw=0.8,
                 label=f'{f} q (fit from the last)')
  axes[0].axhline(gaps[0]['elbo_amortized'], color='k', ls=':',
                  label='ELBO of the encoder q_φ')
  axes[0].axhline(gaps[0]['log_px'], color='k', ls='--',
                  label=f'log p̂(x) (IS, q = {gaps[0]["log_px_from"]})')
  axes[0].set(xscale='log', xlabel='optimizer step',
              ylabel='mean ELBO estimate (nats)',
              title='Per-image optimization of q, decoder fixed')
  axes[0].legend(fontsize=8)
  px = per_q[gaps[0]['log_px_from']]['log_px']
  for i, f in enumerate(curves):  # Per-image gaps: solid and dashed.
    e = per_q[f]['elbo']
    for gap, ls, v in (('approximation', '-', px - e),
                       ('amortization', '--', e - per_q['amortized']['elbo'])):
      axes[1].hist(v, 40, histtype='step', ls=ls, color=f'C{i}',
                   label=f'{gap} gap, {f} q* (mean {v.mean():.2f})')
  axes[1].set(xlabel='nats', ylabel='images', title='Gaps per image')
  axes[1].legend(fontsize=8)
  out.save_figure(fig, 'gaps.png')


def _largest_gaps(model, params, images, per_q, fitted, out, n=8) -> None:
  """The n images of largest amortization gap; σ(D(m)) of each q's mean."""
  first = next(iter(fitted))
  worst = np.argsort(per_q['amortized']['elbo'] - per_q[first]['elbo'])[:n]
  means = [ii.encoder_q(model, params, images[worst], jax.random.PRNGKey(
      0))['loc']] + [
      q['loc'][worst] for q in fitted.values()]
  decoded = [model.decoder(params, m).mean() for m in means]
  grid = pictures.image_grid(np.stack([images[worst]] + decoded, 1).reshape(
      -1, images.shape[-1]), len(worst), 1 + len(means))
  fig, ax = outputs.pyplot().subplots(figsize=(4, 7))
  ax.imshow(grid, cmap='gray', vmin=0, vmax=1, interpolation='nearest')
  ax.set_xticks([14.5 + 29 * i for i in range(1 + len(means))],
                ['x', 'q_φ'] + list(fitted), fontsize=6, rotation=90)
  ax.set(yticks=[], title='largest amortization gaps: σ(D(mean of q))')
  out.save_figure(fig, 'largest_gaps.png')
