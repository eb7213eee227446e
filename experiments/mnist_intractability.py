"""Why log p(x) of an image VAE needs q(z|x): prior Monte Carlo vs importance
sampling, as the number of samples K grows.

For the first --num_eval test images of a train_vae run (--checkpoint_dir),
log p̂_K(x) = log (1/K) Σ_k p(x, z_k)/π(z_k) with z_k ~ π, for π the prior
(naive Monte Carlo: w = p(x|z)) and π = q_φ(z|x) (importance sampling), at
K = 1, 2, 4, ..., 2^--max_log2_k, in --streams independent streams of
nested samples (`vae.analysis.image_inference.log_likelihood_by_k`; chunks of the
largest power of 2 ≤ --eval_chunk_size), each against an independent
reference: importance sampling from q_φ with K_ref = --eval_k (the test
log-likelihood's estimator).

Checks (`image_inference.k_records`): E log p̂_K does not fall as K doubles;
with q_φ it stays below the reference for K ≤ K_ref and above it for
K ≥ K_ref; with the prior it stays below the reference plus the reference's
delta-method bias. error_vs_samples.png, timing.json.

  python launch.py --experiment=mnist_intractability \\
      --checkpoint_dir=runs/vae_mnist \\
      --tfds_data_dir=DATA_DIR
"""

import functools
import time

import jax
import numpy as np

from experiments import evaluate_vae
from experiments.common import outputs
from vae import config as cfg
from vae import evaluate as eval_lib
from vae import importance
from vae import stats
from vae.analysis import image_inference as ii

PROPOSALS = ('prior', 'encoder')


@cfg.settings
class Config:
  """The trained VAE and the reference (evaluate_vae's settings); the K grid."""
  trained: evaluate_vae.Config = evaluate_vae.Config(
      evaluation=eval_lib.EvalConfig(num_eval=100, eval_iwae_ks=(1,),
                                     pictures=False))
  max_log2_k: int = cfg.like(importance.KGrid, 'max_log2_k')
  streams: int = cfg.setting(2, 'Independent streams of samples per image '
                             'and proposal.', min=2, max=1000)


def load(config: evaluate_vae.Config, log):
  """(model, params, images) of a train_vae run folder's checkpoint."""
  run_dir, _, _, model, params, step, dataset = evaluate_vae.load(config,
                                                                 log)
  images = eval_lib.test_images(dataset, config.split)[
      :config.evaluation.num_eval]
  log(f'{run_dir} step {step}: {len(images)} {config.split} images')
  return model, params, images


def timed(timing: dict, name: str, fn, *args, **kwargs):
  """fn(*args, **kwargs); its wall and CPU seconds into timing[name]."""
  wall, cpu = time.time(), time.process_time()
  out = fn(*args, **kwargs)
  timing[name] = {'wall_s': time.time() - wall,
                  'cpu_s': time.process_time() - cpu}
  return out


def run(config: Config, seed: int, out: outputs.Run) -> list[dict]:
  """Per-K rows of both proposals, summary rows; the figure."""
  model, params, images = load(config.trained, out.log)
  ev, key = config.trained.evaluation, jax.random.PRNGKey(seed)
  timing: dict[str, dict[str, float]] = {}
  q = {'prior': ii.prior_q(len(images), model.latent_dim),
       'encoder': None}  # The model's own q_φ(z|x), any family.
  chunk = 2**(min(ev.eval_chunk_size, 2**config.max_log2_k).bit_length() - 1)
  reference = timed(
      timing, 'reference', ii.batched, functools.partial(
          ii.bounds, model, params, num_samples=ev.eval_k,
          chunk_size=ev.eval_chunk_size), ev.eval_batch_size,
      jax.random.fold_in(key, 0), images, q['encoder'])
  by_k = functools.partial(ii.log_likelihood_by_k, model, params,
                           max_log2_samples=config.max_log2_k,
                           chunk_size=chunk)
  estimates, rho = {}, {}
  for i, name in enumerate(PROPOSALS, 1):
    out.log(f'{name}: {config.streams} streams of 2^{config.max_log2_k} '
            f'samples for {len(images)} images')
    stream = lambda r, i=i, name=name: ii.batched(
        by_k, ev.eval_batch_size, jax.random.fold_in(jax.random.fold_in(
            key, i), r), images, q[name], out.log)
    streams = timed(timing, name, lambda: [stream(r) for r in
                                           range(config.streams)])
    estimates[name], rho[name] = (np.stack([s[j] for s in streams], 1)
                                  for j in (0, 1))
  records = stats.mark_disagreements(ii.k_records(estimates, reference,
                                                  ev.eval_k))
  for name in PROPOSALS:
    records.append({
        'kind': 'summary', 'proposal': name, 'K': 2**config.max_log2_k,
        'log_px_at_K': float(estimates[name][..., -1].mean()),
        'reference': float(reference['log_px'].mean()), 'K_reference':
        ev.eval_k, 'effective_samples': float(np.mean(
            2**config.max_log2_k / np.exp(rho[name]))),
        'log1p_chi2': float(np.mean(rho[name]))})
  out.write_json('timing.json', timing)
  out.table([r for r in records if r['kind'] == 'per_K' and
             r['K'] in (1, 16, 256, 4096, 2**config.max_log2_k)])
  out.table([r for r in records if r['kind'] == 'summary'])
  plot(records, out)
  return records


def plot(records: list[dict], out: outputs.Run) -> None:
  """log p̂_K - log p̂_ref against K: mean ± sd; |mean| and sd (log axes)."""
  fig, axes = outputs.pyplot().subplots(1, 2, figsize=(12, 4.5),
                                       layout='constrained')
  for i, name in enumerate(PROPOSALS):
    rows = [r for r in records if r.get('proposal') == name and
            r['kind'] == 'per_K']
    k = np.array([r['K'] for r in rows])
    mean = np.array([r['mean_minus_reference'] for r in rows])
    sd = np.array([r['sd'] for r in rows])
    label = {'prior': 'prior p(z) (naive MC)',
             'encoder': 'encoder q(z|x) (IS)'}[name]
    axes[0].plot(k, mean, 'o-', ms=3, color=f'C{i}', label=label)
    axes[0].fill_between(k, mean - sd, mean + sd, color=f'C{i}', alpha=0.2)
    axes[1].plot(k, np.abs(mean), 'o-', ms=3, color=f'C{i}',
                 label=f'{label}: |mean|')
    axes[1].plot(k, sd, ':', color=f'C{i}', label=f'{label}: sd')
  ref_k = next(r['K_reference'] for r in records if r['kind'] == 'summary')
  for ax in axes:
    ax.axvline(ref_k, color='k', lw=0.7, ls='--')
    ax.set_xscale('log', base=2)
    ax.set_xlabel('K (samples per estimate)')
  axes[0].set(ylabel='log p̂_K(x) - log p̂_ref(x) (nats; mean ± sd)',
              title=f'Estimates against IS with K_ref = {ref_k} (dashed)')
  axes[1].set(yscale='log', ylabel='nats',
              title='Size of the mean difference and its spread')
  axes[0].legend(fontsize=8)
  axes[1].legend(fontsize=7)
  out.save_figure(fig, 'error_vs_samples.png')
