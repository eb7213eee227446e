r"""Burda et al.'s training schedule for as long as a time budget allows.

The one-stochastic-layer model (784-200-200-50, tanh) trained with the
pathwise estimator on the ELBO (k = 1: the VAE) or on IWAE_k (k = 50: the
IWAE), Adam (ε = 1e-4) with Burda et al. (2015)'s schedule: 3,280 passes,
the i-th stage of 3^i passes at lr = 1e-3·10^(-i/7), i = 0..7
(`--lr_schedule=burda`). Training runs through `vae.train.train` (the
fused epoch, checkpoints, resume) in calls of as many passes as the
remaining budget allows, measured on the passes before; then the test NLL
-(1/N) Σ_n log (1/K) Σ_k w_k is estimated with K = 5000
(`vae.evaluate.evaluate`, in float32 matmul precision: JAX's default on a
recent GPU is TF32). Prints one `burda_training/<name>: k=v ...` line
with the passes done, examples/s and the time the whole schedule would take
at that speed (`full_schedule_s`).

The data come from the numpy cache (`--data_cache_dir` or env
VAE_DATA_CACHE, `<dir>/binarized_mnist.npz`), so no TensorFlow is needed;
the line says whether tensorflow was imported (`tensorflow_imported`).
Usage:

  python -m benchmarks.burda_training --k=50 --budget_s=120
"""

import argparse
import statistics
import sys
import tempfile
import time

import jax

from benchmarks import common
from vae import data as data_lib
from vae import evaluate
from vae import optim
from vae import train
from vae.models import image_vae

PASSES = 3280  # Σ_{i<8} 3^i.


def train_for(budget_s: float, model: image_vae.VAE, dataset: data_lib.Dataset,
              config: train.TrainConfig, optimizer: optim.OptimizerConfig,
              seed: int, checkpoint_dir: str) -> dict:
  """Trains `config.epochs` passes or until `budget_s` (wall) is spent.

  Each `train.train` call resumes the last one; its number of passes is
  the rest of the budget over the median pass time so far (one pass
  first, which also compiles).

  Returns:
    {'state', 'passes', 'train_wall_s' (passes only), 'compile_s',
    'pass_s' (median), 'wall_s' (all calls, checkpoints included)}.
  """
  start, done, times, compile_s, state = time.time(), 0, [], None, None
  while done < config.epochs:
    left = budget_s - (time.time() - start)
    if times and left < 1.2 * statistics.median(times):
      break
    more = 1 if not times else int(0.9 * left / statistics.median(times))
    result = train.train(model, dataset, optimizer, config, seed,
                         checkpoint_dir, log=lambda _: None,
                         stop_after_epochs=min(config.epochs,
                                               done + max(1, more)))
    compile_s = result.compile_s if compile_s is None else compile_s
    times += [r['epoch_wall_s'] for r in result.history]
    state = result.state
    done = int(state.step) // (len(dataset.train) // config.batch_size)
  return {'state': state, 'passes': done, 'train_wall_s': sum(times),
          'compile_s': compile_s, 'pass_s': statistics.median(times),
          'wall_s': time.time() - start}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--k', type=int, default=1,
                      help='Samples per example: 1 trains the ELBO (VAE), '
                      'k > 1 IWAE_k.')
  parser.add_argument('--budget_s', type=float, default=120.0,
                      help='Wall seconds of training (then the evaluation).')
  parser.add_argument('--batch_size', type=int, default=100,
                      help='Examples per step (Burda et al. used 20).')
  parser.add_argument('--num_train', type=int, default=None,
                      help='Training images (default: all 50,000).')
  parser.add_argument('--num_eval', type=int, default=None,
                      help='Test images evaluated (default: all 10,000).')
  parser.add_argument('--eval_k', type=int, default=5000)
  parser.add_argument('--eval_batch', type=int, default=None,
                      help='Images per evaluation scan (default: 100).')
  parser.add_argument('--eval_chunk', type=int, default=None,
                      help='Samples per scan step (default: 100 on CPU, '
                      '1000 elsewhere).')
  parser.add_argument('--hidden_sizes', default='200,200')
  parser.add_argument('--latent_dim', type=int, default=50)
  parser.add_argument('--data_cache_dir', default=None,
                      help='Folder of binarized_mnist.npz (default: env '
                      'VAE_DATA_CACHE).')
  parser.add_argument('--dataset', default='binarized_mnist')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--output', default=None, help='Also save as JSON.')
  args = parser.parse_args(argv)
  name = f'vae_k{args.k}' if args.k == 1 else f'iwae_k{args.k}'
  reporter = common.Reporter('burda_training', args.output)
  reporter.info()
  dataset = data_lib.load_dataset(args.dataset,
                                  cache_dir=args.data_cache_dir,
                                  num_train=args.num_train, seed=args.seed)
  model = common.model_from_args(args)
  config = train.TrainConfig(
      objective='elbo' if args.k == 1 else 'iwae', estimator='pathwise',
      num_samples=args.k, batch_size=args.batch_size, epochs=PASSES,
      checkpoint_every=PASSES, test_every=0)
  optimizer = optim.OptimizerConfig(learning_rate=1e-3, adam_eps=1e-4,
                                    lr_schedule='burda')
  with tempfile.TemporaryDirectory() as checkpoints:
    out = train_for(args.budget_s, model, dataset, config, optimizer,
                    args.seed, checkpoints)
  chunk = args.eval_chunk or (100 if jax.default_backend() == 'cpu' else
                              1000)
  eval_config = evaluate.EvalConfig(
      eval_k=args.eval_k, eval_batch_size=args.eval_batch or 100,
      eval_chunk_size=chunk, num_eval=args.num_eval, pictures=False,
      eval_iwae_ks=tuple(k for k in (1, 5, 50) if chunk % k == 0))
  with jax.default_matmul_precision('highest'):  # Not TF32 on a GPU.
    ev = evaluate.evaluate(model, out['state'].params, dataset, eval_config,
                           args.seed, train_k=args.k)
  steps = out['passes'] * (len(dataset.train) // args.batch_size)
  reporter.result(
      name, objective=config.objective, k=args.k,
      batch_size=args.batch_size, num_train=len(dataset.train),
      passes=out['passes'], passes_total=PASSES, steps=steps,
      learning_rate_now=float(optim.learning_rate_schedule(
          optimizer, 0, len(dataset.train) // args.batch_size)(steps - 1)),
      train_wall_s=out['train_wall_s'], compile_s=out['compile_s'],
      calls_wall_s=out['wall_s'], pass_s=out['pass_s'],
      steps_per_s=steps / out['train_wall_s'],
      examples_per_s=steps * args.batch_size / out['train_wall_s'],
      full_schedule_s=out['pass_s'] * PASSES,
      **{k: v for k, v in ev.summary.items() if k != 'split'},
      eval_wall_s=ev.timing['eval_wall_s'],
      tensorflow_imported='tensorflow' in sys.modules)
  reporter.save()
  return 0


if __name__ == '__main__':
  sys.exit(main())
