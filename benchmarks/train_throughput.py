r"""Training throughput (examples/s) of the Burda VAE: fused vs plain vs NumPyro.

Model 784-200-200-50 (tanh), Bernoulli pixels, ELBO with analytic KL and one
reparameterized sample per example, Adam(1e-3), batch 100. Cases, each timed
over whole passes of `steps` minibatches after a warm-up pass:

* `fused`: `steps` Adam steps in ONE jitted call, a `lax.scan` over the
  epoch's batches (`vae.sharding.multi_step_fn`; or `vae.training`'s fused
  epoch if --fused=training and that module provides one), the epoch's
  shuffle done on device (`data.epoch_batches`) in the timed region.
* `plain`: the same step, jitted, called once per minibatch from a Python
  loop that feeds numpy batches (`data.batch_iterator`); no host sync per
  step (JAX's asynchronous dispatch), one at the end.
* `numpyro`: NumPyro SVI with `Trace_ELBO` on the same networks
  (`numpyro.contrib.module.flax_module` wrapping the same Flax MLPs),
  `numpyro.optim.Adam`, `jit(svi.update)` called per minibatch from a Python
  loop, the usual NumPyro recipe. (`Trace_ELBO` estimates the KL by Monte
  Carlo; the matmuls are the same.)
* `numpyro_scan` (extra): NumPyro's `svi.update` inside the same `lax.scan`,
  to separate the gain of fusing from the gain of the model code.

Each line reports examples/s, GFLOP/s of the matmuls (forward + backward =
3 x forward per example: `common.train_flops_per_example()` = 2.54 MFLOP) and
that as a share of the matmul peak measured in the same run (2048x2048
float32). Usage:

  python -m benchmarks.train_throughput             # small, ~2 min on 2 cores
  python -m benchmarks.train_throughput --full      # 1 epoch of 50,000
"""

import argparse
import functools
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common
from vae import data as data_lib
from vae import sharding
from vae import vae_model

CASES = ('fused', 'plain', 'numpyro', 'numpyro_scan')


def burda_model(hidden=common.BURDA_HIDDEN, latent=common.BURDA_LATENT,
                data_dim=common.BURDA_DATA_DIM) -> vae_model.VAE:
  """The Burda et al. (2015) VAE (tanh MLPs)."""
  return vae_model.burda_vae(latent_dim=latent, hidden_sizes=tuple(hidden),
                             data_dim=data_dim)


# ----------------------------------------------------------------------------
# Our training loops.


def fused_epoch_fn(model: vae_model.VAE, optimizer: optax.GradientTransformation,
                   batch_size: int, mesh=None) -> Callable[..., Any]:
  """Jitted epoch(params, opt_state, images, seed, epoch, key).

  Shuffles and batches the device-resident images (`data.epoch_batches`)
  and runs all the epoch's steps in one `lax.scan` (sharded over `mesh` if
  given). Returns (params, opt_state, losses [steps]).
  """
  steps = sharding.multi_step_fn(sharding.train_step_fn(model, optimizer))

  def epoch(params, opt_state, images, seed, epoch_index, key):
    batches = data_lib.epoch_batches(images, batch_size, seed, epoch_index)
    if mesh is not None:
      batches = jax.lax.with_sharding_constraint(
          batches, sharding.data_sharding(mesh, 1))
    return steps(params, opt_state, batches, jax.random.fold_in(key,
                                                                epoch_index))

  return jax.jit(epoch, donate_argnums=(0, 1))


def plain_step_fn(model: vae_model.VAE,
                  optimizer: optax.GradientTransformation) -> Callable[..., Any]:
  """Jitted step(params, opt_state, batch, key, t): one Adam step."""
  step = sharding.train_step_fn(model, optimizer)

  def fn(params, opt_state, batch, key, t):
    return step(params, opt_state, batch, jax.random.fold_in(key, t))

  return jax.jit(fn, donate_argnums=(0, 1))


def run_fused(model, optimizer, images: np.ndarray, batch_size: int,
              repeats: int, seed: int = 0) -> common.Timing:
  """Times epochs of the fused loop over `images` (already on device)."""
  epoch_fn = fused_epoch_fn(model, optimizer, batch_size)
  params = model.init(jax.random.PRNGKey(seed))
  state = {'params': params, 'opt': optimizer.init(params), 'epoch': 0}
  images = jnp.asarray(images)
  key = jax.random.PRNGKey(seed + 1)

  def one_epoch():
    state['params'], state['opt'], losses = epoch_fn(
        state['params'], state['opt'], images, seed, state['epoch'], key)
    state['epoch'] += 1
    return losses

  return common.time_fn(one_epoch, repeats=repeats)


def run_plain(model, optimizer, images: np.ndarray, batch_size: int,
              repeats: int, seed: int = 0) -> common.Timing:
  """Times epochs of the Python loop over a jitted step (numpy batches)."""
  step = plain_step_fn(model, optimizer)
  params = model.init(jax.random.PRNGKey(seed))
  state = {'params': params, 'opt': optimizer.init(params), 'epoch': 0}
  key = jax.random.PRNGKey(seed + 1)

  def one_epoch():
    t = state['epoch'] * (len(images) // batch_size)
    loss = None
    for batch in data_lib.batch_iterator(images, batch_size, seed,
                                         state['epoch']):
      state['params'], state['opt'], loss = step(state['params'], state['opt'],
                                                 batch, key, t)
      t += 1
    state['epoch'] += 1
    return loss

  return common.time_fn(one_epoch, repeats=repeats)


# ----------------------------------------------------------------------------
# NumPyro.


def numpyro_svi(model: vae_model.VAE, learning_rate: float = 1e-3):
  """NumPyro SVI (Trace_ELBO, Adam) on the same encoder/decoder modules."""
  import numpyro  # pylint: disable=g-import-not-at-top
  from numpyro import distributions as npd  # pylint: disable=g-import-not-at-top
  from numpyro.contrib.module import flax_module  # pylint: disable=g-import-not-at-top
  from numpyro.infer import SVI, Trace_ELBO  # pylint: disable=g-import-not-at-top

  latent, data_dim = model.latent_dim, model.data_dim

  def np_model(x):
    decoder = flax_module('decoder', model.decoder, input_shape=(1, latent))
    with numpyro.plate('data', x.shape[0]):
      z = numpyro.sample('z', npd.Normal(0.0, 1.0).expand([latent])
                         .to_event(1))
      numpyro.sample('x', npd.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

  def np_guide(x):
    encoder = flax_module('encoder', model.encoder,
                          input_shape=(1, data_dim))
    loc, log_scale = encoder(x)
    with numpyro.plate('data', x.shape[0]):
      numpyro.sample('z', npd.Normal(loc, jnp.exp(log_scale)).to_event(1))

  return SVI(np_model, np_guide, numpyro.optim.Adam(learning_rate),
             Trace_ELBO())


def run_numpyro(model, images: np.ndarray, batch_size: int, repeats: int,
                seed: int = 0, learning_rate: float = 1e-3,
                fused: bool = False) -> common.Timing:
  """Times epochs of NumPyro SVI: jit(svi.update) per batch, or scanned."""
  svi = numpyro_svi(model, learning_rate)
  svi_state = svi.init(jax.random.PRNGKey(seed), images[:batch_size])
  state = {'svi': svi_state, 'epoch': 0}
  if fused:
    def epoch_fn(svi_state, images, epoch_index):
      batches = data_lib.epoch_batches(images, batch_size, seed, epoch_index)
      return jax.lax.scan(svi.update, svi_state, batches)
    epoch_fn = jax.jit(epoch_fn)
    dev_images = jnp.asarray(images)

    def one_epoch():
      state['svi'], losses = epoch_fn(state['svi'], dev_images,
                                      state['epoch'])
      state['epoch'] += 1
      return losses
  else:
    update = jax.jit(svi.update)

    def one_epoch():
      loss = None
      for batch in data_lib.batch_iterator(images, batch_size, seed,
                                           state['epoch']):
        state['svi'], loss = update(state['svi'], batch)
      state['epoch'] += 1
      return loss

  return common.time_fn(one_epoch, repeats=repeats)


# ----------------------------------------------------------------------------


def benchmark(images: np.ndarray, *, batch_size: int = 100,
              cases=CASES, repeats: int = 3, seed: int = 0,
              model: vae_model.VAE | None = None,
              peak_n: int = 2048, reporter: common.Reporter | None = None,
              source: str = '') -> dict[str, dict[str, Any]]:
  """Runs the cases on `images`; one epoch = len(images) // batch_size steps.

  Args:
    images: training images [N, D].
    batch_size: minibatch size.
    cases: which of `CASES` to run.
    repeats: timed epochs per case (after one warm-up epoch).
    seed: seed.
    model: the VAE (default: Burda's).
    peak_n: matmul size for the peak measurement (0: skip).
    reporter: prints the result lines (default: a new one).
    source: the data's name, for the result lines.

  Returns:
    {case: result record}, records with examples_per_s, gflops,
    peak_fraction, and speedups of 'fused' over the other cases.
  """
  model = model or burda_model()
  reporter = reporter or common.Reporter('train_throughput')
  optimizer = optax.adam(1e-3)
  n = (len(images) // batch_size) * batch_size
  images = np.asarray(images[:n], np.float32)
  hidden = tuple(model.encoder.hidden_sizes)
  flops = common.train_flops_per_example(
      data_dim=model.data_dim, hidden=hidden, latent=model.latent_dim)
  peak = common.matmul_peak(peak_n) if peak_n else None
  if peak:
    reporter.result('matmul_peak', **peak)
  runners = {
      'fused': lambda: run_fused(model, optimizer, images, batch_size,
                                 repeats, seed),
      'plain': lambda: run_plain(model, optimizer, images, batch_size,
                                 repeats, seed),
      'numpyro': lambda: run_numpyro(model, images, batch_size, repeats, seed),
      'numpyro_scan': lambda: run_numpyro(model, images, batch_size, repeats,
                                          seed, fused=True),
  }
  out = {}
  for case in cases:
    timing = runners[case]()
    eps = n / timing.median
    gflops = eps * flops / 1e9
    out[case] = dict(examples_per_s=eps,
                     examples_per_s_best=n / timing.min,
                     gflops=gflops, steps=n // batch_size,
                     batch_size=batch_size, epoch_s=timing.median,
                     compile_s=timing.compile_s, data=source)
    if peak:
      out[case]['peak_fraction'] = gflops / peak['gflops']
    if case != 'fused' and 'fused' in out:
      out[case]['fused_speedup'] = (out['fused']['examples_per_s'] / eps)
    reporter.result(case, **out[case])
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  common.add_common_args(parser)
  parser.add_argument('--num_train', type=int, default=10_000,
                      help='Training images per epoch (--full: all 50,000).')
  parser.add_argument('--batch_size', type=int, default=100)
  parser.add_argument('--cases', default=','.join(CASES))
  parser.add_argument('--peak_n', type=int, default=2048)
  args = parser.parse_args(argv)
  num = None if args.full else args.num_train
  images, source = common.load_images(args, 'train', num)
  reporter = common.Reporter('train_throughput', args.output)
  reporter.info()
  out = benchmark(images, batch_size=args.batch_size,
                  cases=args.cases.split(','), repeats=args.repeats,
                  seed=args.seed, peak_n=args.peak_n, reporter=reporter,
                  source=source)
  if 'fused' in out:
    f = out['fused']
    verdict = {}
    if 'numpyro' in out:
      verdict['vs_numpyro'] = f['examples_per_s'] / out['numpyro'][
          'examples_per_s']
      verdict['target_1.5x_numpyro_met'] = verdict['vs_numpyro'] >= 1.5
    if 'peak_fraction' in f:
      verdict['peak_fraction'] = f['peak_fraction']
      verdict['target_50pct_peak_met'] = f['peak_fraction'] >= 0.5
    reporter.result('targets', **verdict)
  reporter.save()
  return 0


if __name__ == '__main__':
  sys.exit(main())
