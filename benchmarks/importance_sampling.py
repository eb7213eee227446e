r"""Importance-sampled test log-likelihood: time vs the FLOP-bound time.

log p(x) ≈ log (1/K) Σ_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x), for every
test image, with the Burda VAE. The decoder runs once per sample and the
encoder once per image, so the matmul work is

    FLOPs = N · (encoder 433,600 + K · decoder 413,600)

(N = 10,000 and K = 5,000 in the issue: 2.07e13). The FLOP-bound time is
FLOPs / (the matmul peak measured in the same run, 2048² float32); issue 11
asks for the measured time to be within 1.5× of it. Cases:

* `chunked`: the one importance-sampling engine, `vae.importance.
  importance_batch` (jitted: a `lax.scan` over chunks of `--chunk` samples
  of every image with a running logsumexp, plus the SEs and the ELBO it
  always returns), called on batches of `--batch` images from a Python
  loop (asynchronous dispatch; one sync at the end).
* `evaluate`: the same engine as `vae.evaluate` runs it for `train_vae` and
  `evaluate_vae` (`vae.importance.importance_sampling`): log p(x), the ELBO
  and IWAE_k (k = 1, 5, 50) from the same samples, at `EvalConfig`'s
  defaults (`--eval_batch` = 100 images × `--eval_chunk` = 100 samples per
  scan step, decoded in blocks of about 10^3 rows on CPU).
* `plain` (peer): a per-batch jitted function that decodes all K samples
  of each image at once (no chunking: memory B · K · 784 floats), same loop.

The parameters are a fresh initialization (the speed does not depend on
them; the log-likelihoods printed are only a sanity check). Usage:

  python -m benchmarks.importance_sampling          # N = 500, K = 1000
  python -m benchmarks.importance_sampling --full   # N = 10,000, K = 5,000
"""

import functools
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from vae import evaluate
from vae import importance
from vae import model as model_lib
from vae.models import image_vae

CASES = ('chunked', 'evaluate', 'plain')
IWAE_KS = evaluate.EvalConfig().iwae_ks()  # (1, 5, 50): what runs report.
TARGET_RATIO = 1.5


@functools.partial(jax.jit, static_argnums=(0, 4))
def plain_log_likelihood(model: image_vae.VAE, params, batch, key,
                         num_samples: int):
  """log (1/K) Σ_k w_k per image, all K samples decoded in one go.

  With K ≤ the chunk size, the same keys as `importance.importance_batch`
  (one chunk), hence the same values.
  """
  q = model.encoder(params, batch)
  z = q.sample(jax.random.split(key, 1)[0], (num_samples,))  # [K, B, D].
  lw = model_lib.log_weights(model, params, batch, z, q)[0]
  return jax.nn.logsumexp(lw, 0) - jnp.log(float(num_samples))


def runner(case: str, model: image_vae.VAE, params, images: np.ndarray,
           num_samples: int, batch: int, chunk: int,
           seed: int = 0) -> tuple[Callable[[], Any], Callable[[], Any]]:
  """Closures computing log p(x) of all `images`, `batch` at a time.

  Returns:
    (run, warm_up): `run()` does all the images; `warm_up()` only the first
    batch (it compiles the function without doing the whole, possibly long,
    computation).
  """
  key = jax.random.PRNGKey(seed)
  if case == 'evaluate':  # Batches (padded) and keys of its own.
    ks = tuple(k for k in IWAE_KS if min(chunk, num_samples) % k == 0)
    run_on = lambda x: importance.importance_sampling(
        model, params, x, key, num_samples, iwae_ks=ks, batch_size=batch,
        chunk_size=chunk)['log_px']
    return lambda: run_on(images), lambda: run_on(images[:batch])
  if len(images) % batch:
    raise ValueError(f'batch={batch} must divide {len(images)} images.')
  batches = [jax.device_put(images[i:i + batch])
             for i in range(0, len(images), batch)]
  if case == 'chunked':
    fn = lambda *a: importance.importance_batch(
        *a, num_samples=num_samples, chunk_size=chunk)['log_px']
  elif case == 'plain':
    fn = functools.partial(plain_log_likelihood, num_samples=num_samples)
  else:
    raise ValueError(f'unknown case {case!r}; choose from {CASES}')

  keys = [jax.random.fold_in(key, i) for i in range(len(batches))]

  def run():
    return jnp.concatenate([fn(model, params, b, k)
                            for b, k in zip(batches, keys)])

  def warm_up():
    return fn(model, params, batches[0], keys[0])

  return run, warm_up


def _keeping_last(run: Callable[[], Any], store: dict[str, Any],
                  name: str) -> Callable[[], Any]:
  """`run`, also keeping its latest result in store[name] (not to redo it)."""
  def fn():
    store[name] = run()
    return store[name]
  return fn


def flops(num_images: int, num_samples: int, **arch: Any) -> float:
  """Matmul FLOPs of IS log p(x): encoder once per image, decoder per sample."""
  return float(num_images) * (common.encoder_flops(**arch) + num_samples *
                              common.decoder_flops(**arch))


def benchmark(images: np.ndarray, *, num_samples: int = 1000,
              batch: int = 20, chunk: int = 50, plain_batch: int = 10,
              eval_batch: int = 100, eval_chunk: int = 100,
              rounds: int = 3, seed: int = 0, cases=CASES,
              model: image_vae.VAE | None = None, peak_n: int = 2048,
              reporter: common.Reporter | None = None,
              source: str = '') -> dict[str, dict[str, Any]]:
  """Times IS log p(x) over `images` against the FLOP-bound time.

  Args:
    images: test images [N, D].
    num_samples: K.
    batch: images per call of the chunked case.
    chunk: samples per scan step of the chunked case.
    plain_batch: images per call of the plain case (memory B · K · D).
    eval_batch: images per scan of the evaluate case.
    eval_chunk: samples per scan step of the evaluate case.
    rounds: timed rounds (interleaved with the peak matmul).
    seed: seed.
    cases: which of `CASES`.
    model: the VAE (default: Burda's).
    peak_n: peak matmul size (0: none, no bound reported).
    reporter: prints the lines.
    source: the data's name.

  Returns:
    {case: record} with seconds(_best), cpu_s, gflops, flop_bound_s and
    ratio_to_bound (median/median), ratio_to_bound_best (best/best) and
    ratio_to_bound_cpu (CPU-seconds against the peak per CPU-second),
    mean_log_likelihood; plus 'matmul_peak'.
  """
  model = model or common.burda_model()
  reporter = reporter or common.Reporter('importance_sampling')
  images = np.asarray(images, np.float32)
  params = model.init(jax.random.PRNGKey(seed))
  total = flops(len(images), num_samples, **common.arch(model))
  sizes = {'chunked': (batch, chunk), 'plain': (plain_batch, None),
           'evaluate': (eval_batch, eval_chunk)}
  common.check_cases(cases, CASES)
  fns, compile_s, last = {}, {}, {}
  for c in cases:
    run, warm_up = runner(c, model, params, images, num_samples, sizes[c][0],
                          sizes[c][1], seed)
    compile_s[c] = common.time_fn(warm_up, repeats=0, warmup=1).compile_s
    fns[c] = _keeping_last(run, last, c)
  # Warmed up above on one batch; the first timed round is not a compile.
  timings, peak = common.time_with_peak(fns, peak_n, rounds, reporter,
                                        warmup=0)
  out = {'matmul_peak': peak} if peak else {}
  for case in cases:
    t = timings[case]
    ll = np.asarray(last[case], np.float64)
    rec = dict(num_images=len(images), num_samples=num_samples,
               batch=sizes[case][0], chunk=sizes[case][1],
               seconds=t.median, seconds_best=t.min, cpu_s=t.cpu_median,
               flops=total, **common.ratios(t, total, peak),
               compile_s=compile_s[case],
               mean_log_likelihood=float(ll.mean()), data=source)
    out[case] = rec
    reporter.result(case, **rec)
  return out


def targets(out: dict[str, dict[str, Any]]) -> dict[str, Any]:
  """Issue 11: `chunked` and `evaluate` within 1.5× of the FLOP bound.

  Judged ('met_*') at the median wall times; the best-wall and CPU-time
  ratios are given too, and each case's speedup over the plain peer.
  """
  verdict = {}
  for case in ('chunked', 'evaluate'):
    if case not in out or 'ratio_to_bound' not in out[case]:
      continue
    suffix = '' if case == 'chunked' else '_' + case
    rec = out[case]
    verdict.update({k + suffix: rec[k] for k in rec
                    if k.startswith('ratio_to_')})
    verdict['met_within_1.5x_bound' + suffix] = (rec['ratio_to_bound'] <=
                                                 TARGET_RATIO)
    if 'plain' in out:
      verdict['vs_best_peer_plain' + suffix] = (out['plain']['seconds'] /
                                                rec['seconds'])
  return verdict


def main(argv=None) -> int:
  parser = common.make_parser(__doc__, CASES)
  parser.add_argument('--num_images', type=int, default=500,
                      help='Test images (--full: all 10,000).')
  parser.add_argument('--num_samples', type=int, default=1000,
                      help='K (--full: 5,000).')
  parser.add_argument('--batch', type=int, default=20,
                      help='Images per call, chunked case.')
  parser.add_argument('--chunk', type=int, default=50,
                      help='Samples per scan step, chunked case. batch×chunk '
                      '= 1000 decoded rows (3 MB of logits) per step was '
                      'fastest on CPU; 100 × 500 (157 MB) ran ~1.5-2× '
                      'slower. On a GPU use larger steps (e.g. 100 × 500).')
  parser.add_argument('--plain_batch', type=int, default=10,
                      help='Images per call, plain case.')
  parser.add_argument('--eval_batch', type=int, default=100,
                      help='Images per scan, evaluate case (EvalConfig).')
  parser.add_argument('--eval_chunk', type=int, default=100,
                      help='Samples per scan step, evaluate case.')
  args = parser.parse_args(argv)
  if args.full:
    args.num_images, args.num_samples = None, 5000
  images, source = common.load_images(args, 'test', args.num_images)
  reporter = common.Reporter('importance_sampling', args.output)
  reporter.info()
  rounds = 1 if args.full else args.repeats
  out = benchmark(images, num_samples=args.num_samples, batch=args.batch,
                  chunk=args.chunk, plain_batch=args.plain_batch,
                  eval_batch=args.eval_batch, eval_chunk=args.eval_chunk,
                  rounds=rounds, seed=args.seed,
                  model=common.model_from_args(args),
                  cases=args.cases.split(','), peak_n=args.peak_n,
                  reporter=reporter, source=source)
  verdict = targets(out)
  if verdict:
    reporter.result('targets', **verdict)
  reporter.save()
  return 0


if __name__ == '__main__':
  sys.exit(main())
