r"""Training throughput (examples/s) of the Burda VAE: fused, plain, NumPyro.

Model 784-200-200-50 (tanh), Bernoulli pixels, ELBO with analytic KL and one
reparameterized sample per example, Adam(1e-3), batch 100. Cases, each timed
over whole passes of `steps` minibatches after a warm-up pass:

* `fused`: the project's fused training epoch,
  `vae.training.make_train_epoch`: all the epoch's Adam steps in ONE jitted
  call, a `lax.scan` over `data.epoch_batches` (shuffled on device, in the
  timed region) of steps on `image_vae.batch_surrogate`. (If `vae.training`
  cannot be imported, this module's `fused_epoch_fn`, the same scan over
  `vae.sharding.train_step_fn`; the line's `step_fn` says which ran.)
* `fused_batch_loss`: `fused_epoch_fn` with `batch_elbo_loss`: the library's
  estimator and random numbers written with whole-batch arrays instead of a
  per-example vmap (see its docstring), to see whether that formulation
  costs anything.
* `plain`: the same step as `fused` (`vae.training.make_train_step`, the
  scan's body), jitted alone and called once per minibatch from a Python
  loop that feeds numpy batches (`data.batch_iterator`); no host sync per
  step (asynchronous dispatch), one at the end.
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
float32). The cases and the peak matmul are timed in interleaved rounds
(`common.time_interleaved`): median and best per case. Usage:

  python -m benchmarks.train_throughput             # small, ~2 min on 2 cores
  python -m benchmarks.train_throughput --full      # 1 epoch of 50,000
  python -m benchmarks.train_throughput --cases=fused,fused_sharded  # GPUs
"""

import argparse
import functools
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common
from vae import data as data_lib
from vae import distributions as dists
from vae import kl as kl_lib
from vae import sharding
from vae.models import image_vae

CASES = ('fused', 'fused_batch_loss', 'plain', 'numpyro', 'numpyro_scan')
# Not run by default: `fused_epoch_fn` with each batch split over all devices
# (`vae.sharding`); the same as the unsharded scan on one device.
EXTRA_CASES = ('fused_sharded',)


def burda_model(hidden=common.BURDA_HIDDEN, latent=common.BURDA_LATENT,
                data_dim=common.BURDA_DATA_DIM) -> image_vae.VAE:
  """The Burda et al. (2015) VAE (tanh MLPs)."""
  return image_vae.burda_vae(latent_dim=latent, hidden_sizes=tuple(hidden),
                             data_dim=data_dim)


# ----------------------------------------------------------------------------
# Our training loops.


def batch_elbo_loss(model: image_vae.VAE, params, batch, key):
  """-batch_surrogate(model, params, batch, key, 'elbo', 'pathwise', 1).

  The same estimator, the same random numbers (ε_b ~ N(0, I) from the b-th
  key of `split(key, B)`, as the library draws them) and the same value up to
  float rounding, written with whole-batch arrays: [B, D] instead of the
  library's per-example vmap with a singleton sample axis ([B, 1, D]), whose
  backward pass XLA:CPU compiles with extra transposes and copies.
  """
  q = model.posterior(params, batch)
  keys = jax.random.split(key, batch.shape[0])
  eps = jax.vmap(lambda k: jax.random.normal(k, (1, model.latent_dim)))(
      keys)[:, 0]
  z = q.loc + q.scale * eps
  logits = model.decoder.apply(params['decoder'], z)
  log_lik = jnp.sum(dists.Bernoulli(logits).log_prob(batch), axis=-1)
  kl = jnp.sum(kl_lib.kl_divergence(q, model.prior()), axis=-1)
  return -jnp.mean(log_lik - kl)


def train_step_fn(model: image_vae.VAE,
                  optimizer: optax.GradientTransformation,
                  loss: str = 'library') -> sharding.TrainStep:
  """The Adam step on the ELBO: 'library' (`batch_surrogate`) or 'batch'."""
  if loss == 'library':
    return sharding.train_step_fn(model, optimizer)
  if loss != 'batch':
    raise ValueError(f"loss must be 'library' or 'batch', got {loss!r}")

  def step(params, opt_state, batch, key):
    value, grads = jax.value_and_grad(
        functools.partial(batch_elbo_loss, model))(params, batch, key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value

  return step


def fused_epoch_fn(model: image_vae.VAE,
                   optimizer: optax.GradientTransformation, batch_size: int,
                   loss: str = 'library', mesh=None) -> Callable[..., Any]:
  """Jitted epoch(params, opt_state, images, seed, epoch, key).

  Shuffles and batches the device-resident images (`data.epoch_batches`)
  and runs all the epoch's steps in one `lax.scan` (sharded over `mesh` if
  given). Returns (params, opt_state, losses [steps]).
  """
  steps = sharding.multi_step_fn(train_step_fn(model, optimizer, loss))

  def epoch(params, opt_state, images, seed, epoch_index, key):
    batches = data_lib.epoch_batches(images, batch_size, seed, epoch_index)
    if mesh is not None:
      batches = jax.lax.with_sharding_constraint(
          batches, sharding.data_sharding(mesh, 1))
    return steps(params, opt_state, batches, jax.random.fold_in(key,
                                                                epoch_index))

  return jax.jit(epoch, donate_argnums=(0, 1))


def plain_step_fn(model: image_vae.VAE,
                  optimizer: optax.GradientTransformation,
                  loss: str = 'library') -> Callable[..., Any]:
  """Jitted step(params, opt_state, batch, key, t): one Adam step."""
  step = train_step_fn(model, optimizer, loss)

  def fn(params, opt_state, batch, key, t):
    return step(params, opt_state, batch, jax.random.fold_in(key, t))

  return jax.jit(fn, donate_argnums=(0, 1))


def fused_runner(model, optimizer, images: np.ndarray, batch_size: int,
                 seed: int = 0, loss: str = 'library',
                 mesh=None) -> Callable[[], Any]:
  """A closure: one epoch of `fused_epoch_fn` (our scan; images on device).

  With a mesh, params, optimizer state and images are replicated on every
  device and each step's batch is split over them.
  """
  epoch_fn = fused_epoch_fn(model, optimizer, batch_size, loss, mesh)
  params = model.init(jax.random.PRNGKey(seed))
  state = {'params': params, 'opt': optimizer.init(params), 'epoch': 0}
  images = jnp.asarray(images)
  if mesh is not None:
    state['params'], state['opt'], images = sharding.replicate(
        (state['params'], state['opt'], images), mesh)
  key = jax.random.PRNGKey(seed + 1)

  def one_epoch():
    state['params'], state['opt'], losses = epoch_fn(
        state['params'], state['opt'], images, seed, state['epoch'], key)
    state['epoch'] += 1
    return losses

  return one_epoch


def _training_module():
  try:
    from vae import training  # pylint: disable=g-import-not-at-top
    return training
  except ImportError:
    return None


def _training_setup(training, model, num_images: int, batch_size: int,
                    seed: int):
  config = training.TrainConfig(
      dataset='binarized_mnist', hidden_sizes=tuple(model.encoder.hidden_sizes),
      latent_dim=model.latent_dim, batch_size=batch_size, learning_rate=1e-3,
      seed=seed)
  optimizer = training.make_optimizer(config, num_images // batch_size)
  return config, optimizer


def training_runner(model, images: np.ndarray, batch_size: int,
                    seed: int = 0) -> tuple[Callable[[], Any], str]:
  """A closure: one epoch of `vae.training.make_train_epoch` (the project's).

  Falls back to this module's `fused_epoch_fn` (the same scan over
  `sharding.train_step_fn`) if `vae.training` cannot be imported.

  Returns:
    (closure, the name of the fused epoch measured).
  """
  training = _training_module()
  if training is None:
    return (fused_runner(model, optax.adam(1e-3), images, batch_size, seed),
            'benchmarks.train_throughput.fused_epoch_fn')
  config, optimizer = _training_setup(training, model, len(images), batch_size,
                                      seed)
  epoch_fn = training.make_train_epoch(model, optimizer, config,
                                       dynamic_binarization=False)
  state = {'train': training.init_state(model, optimizer, seed), 'epoch': 0}
  images = jnp.asarray(images)

  def one_epoch():
    state['train'], metrics = epoch_fn(state['train'], images,
                                       jnp.int32(state['epoch']))
    state['epoch'] += 1
    return metrics

  return one_epoch, 'vae.training.make_train_epoch'


def training_plain_runner(model, images: np.ndarray, batch_size: int,
                          seed: int = 0) -> tuple[Callable[[], Any], str]:
  """A closure: one epoch of Python-loop calls of the jitted project step.

  The step is `vae.training.make_train_step` (the body of the fused epoch's
  scan), jitted alone and called once per numpy minibatch; fallback:
  `plain_runner`.

  Returns:
    (closure, the name of the step measured).
  """
  training = _training_module()
  if training is None:
    return (plain_runner(model, optax.adam(1e-3), images, batch_size, seed),
            'benchmarks.train_throughput.plain_step_fn')
  config, optimizer = _training_setup(training, model, len(images), batch_size,
                                      seed)
  step = jax.jit(training.make_train_step(model, optimizer, config,
                                          dynamic_binarization=False),
                 donate_argnums=0)
  state = {'train': training.init_state(model, optimizer, seed), 'epoch': 0}

  def one_epoch():
    bound = None
    for batch in data_lib.batch_iterator(images, batch_size, seed,
                                         state['epoch']):
      state['train'], bound = step(state['train'], batch)
    state['epoch'] += 1
    return bound

  return one_epoch, 'jit(vae.training.make_train_step)'


# ----------------------------------------------------------------------------
# NumPyro.


def numpyro_svi(model: image_vae.VAE, learning_rate: float = 1e-3):
  """NumPyro SVI (Trace_ELBO, Adam) on the same encoder/decoder modules."""
  # pylint: disable=g-import-not-at-top
  import numpyro
  from numpyro import distributions as npd
  from numpyro.contrib.module import flax_module
  from numpyro.infer import SVI
  from numpyro.infer import Trace_ELBO
  # pylint: enable=g-import-not-at-top

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


def numpyro_runner(model, images: np.ndarray, batch_size: int, seed: int = 0,
                   learning_rate: float = 1e-3,
                   fused: bool = False) -> Callable[[], Any]:
  """A closure: one epoch of NumPyro SVI: jit(svi.update) per batch, or scan."""
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

  return one_epoch


# ----------------------------------------------------------------------------


def benchmark(images: np.ndarray, *, batch_size: int = 100,
              cases=CASES, rounds: int = 3, seed: int = 0,
              model: image_vae.VAE | None = None,
              peak_n: int = 2048, reporter: common.Reporter | None = None,
              source: str = '') -> dict[str, dict[str, Any]]:
  """Runs the cases on `images`; one epoch = len(images) // batch_size steps.

  All cases (and the peak matmul) are compiled and warmed up, then timed in
  `rounds` interleaved rounds (`common.time_interleaved`), one epoch per case
  per round, so they see the same machine load.

  Args:
    images: training images [N, D].
    batch_size: minibatch size.
    cases: which of `CASES` to run.
    rounds: timed epochs per case.
    seed: seed.
    model: the VAE (default: Burda's).
    peak_n: matmul size for the peak measurement (0: skip).
    reporter: prints the result lines (default: a new one).
    source: the data's name, for the result lines.

  Returns:
    {case: record} with examples_per_s (at the median epoch time),
    examples_per_s_best (at the fastest), gflops, gflops_best,
    gflops_per_cpu_s, peak_fraction (median/median), peak_fraction_best
    (best/best), peak_fraction_cpu (per CPU-second, both) and, for the other
    cases, fused_speedup(_best, _cpu) ('fused' over it); plus 'matmul_peak'
    if measured.
  """
  unknown = set(cases) - set(CASES) - set(EXTRA_CASES)
  if unknown:
    raise ValueError(f'unknown cases {sorted(unknown)}; choose from {CASES}')
  model = model or burda_model()
  reporter = reporter or common.Reporter('train_throughput')
  optimizer = optax.adam(1e-3)
  n = (len(images) // batch_size) * batch_size
  images = np.asarray(images[:n], np.float32)
  flops = common.train_flops_per_example(
      data_dim=model.data_dim, hidden=tuple(model.encoder.hidden_sizes),
      latent=model.latent_dim)
  step_fns = {'fused_batch_loss': 'batch_elbo_loss in fused_epoch_fn',
              'numpyro': 'jit(SVI.update)', 'numpyro_scan': 'scan(SVI.update)',
              'fused_sharded': f'fused_epoch_fn on {jax.device_count()} '
                               'devices'}
  makers = {
      'fused': lambda: training_runner(model, images, batch_size, seed),
      'fused_batch_loss': lambda: (fused_runner(
          model, optimizer, images, batch_size, seed, 'batch'), None),
      'plain': lambda: training_plain_runner(model, images, batch_size, seed),
      'numpyro': lambda: (numpyro_runner(model, images, batch_size, seed),
                          None),
      'numpyro_scan': lambda: (numpyro_runner(model, images, batch_size,
                                              seed, fused=True), None),
      'fused_sharded': lambda: (fused_runner(
          model, optimizer, images, batch_size, seed,
          mesh=sharding.make_mesh()), None),
  }
  fns = {}
  for case in cases:
    fns[case], name = makers[case]()
    step_fns[case] = name or step_fns[case]
  if peak_n:
    fns['matmul_peak'] = common.matmul_fn(peak_n)
  timings = common.time_interleaved(fns, rounds=rounds)
  out = {}
  peak = None
  if peak_n:
    peak = out['matmul_peak'] = common.peak_record(peak_n,
                                                   timings['matmul_peak'])
    reporter.result('matmul_peak', **peak)
  for case in cases:
    t = timings[case]
    rec = dict(examples_per_s=n / t.median, examples_per_s_best=n / t.min,
               gflops=n * flops / t.median / 1e9,
               gflops_best=n * flops / t.min / 1e9, steps=n // batch_size,
               batch_size=batch_size, epoch_s=t.median,
               epoch_cpu_s=t.cpu_median,
               compile_s=t.compile_s, data=source)
    rec['gflops_per_cpu_s'] = n * flops / max(t.cpu_median, 1e-9) / 1e9
    if peak:
      rec['peak_fraction'] = rec['gflops'] / peak['gflops']
      rec['peak_fraction_best'] = rec['gflops_best'] / peak['gflops_best']
      rec['peak_fraction_cpu'] = (rec['gflops_per_cpu_s'] /
                                  peak['gflops_per_cpu_s'])
    rec['step_fn'] = step_fns[case]
    if case != 'fused' and 'fused' in timings:
      rec['fused_speedup'] = t.median / timings['fused'].median
      rec['fused_speedup_best'] = t.min / timings['fused'].min
      rec['fused_speedup_cpu'] = t.cpu_median / max(
          timings['fused'].cpu_median, 1e-9)
    out[case] = rec
    reporter.result(case, **rec)
  return out


def targets(out: dict[str, dict[str, Any]], case: str) -> dict[str, Any]:
  """The issue's targets for `case`: ≥ 1.5× NumPyro, ≥ 50% of matmul peak.

  Judged ('met_*') at the median wall times; the ratios at the best wall
  times and at the median CPU times (the least load-sensitive) are given too.
  """
  rec = out[case]
  verdict = {}
  if 'numpyro' in out:
    for suffix in ('', '_best'):
      ratio = (rec['examples_per_s' + suffix] /
               out['numpyro']['examples_per_s' + suffix])
      verdict['vs_numpyro' + suffix] = ratio
    verdict['vs_numpyro_cpu'] = (out['numpyro']['epoch_cpu_s'] /
                                 max(rec['epoch_cpu_s'], 1e-9))
    verdict['met_1.5x_numpyro'] = verdict['vs_numpyro'] >= 1.5
  if 'peak_fraction' in rec:
    for suffix in ('', '_best', '_cpu'):
      verdict['peak_fraction' + suffix] = rec['peak_fraction' + suffix]
    verdict['met_50pct_peak'] = rec['peak_fraction'] >= 0.5
  return verdict


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  common.add_common_args(parser)
  parser.add_argument('--num_train', type=int, default=10_000,
                      help='Training images per epoch (--full: all 50,000).')
  parser.add_argument('--batch_size', type=int, default=100)
  parser.add_argument('--cases', default=','.join(CASES),
                      help=f'Of {CASES + EXTRA_CASES}.')
  parser.add_argument('--peak_n', type=int, default=2048)
  args = parser.parse_args(argv)
  args.cases = args.cases.split(',')
  num = None if args.full else args.num_train
  images, source = common.load_images(args, 'train', num)
  reporter = common.Reporter('train_throughput', args.output)
  reporter.info()
  out = benchmark(images, batch_size=args.batch_size,
                  cases=args.cases, rounds=args.repeats,
                  seed=args.seed, peak_n=args.peak_n, reporter=reporter,
                  model=common.model_from_args(args),
                  source=source)
  for case in ('fused', 'fused_batch_loss'):
    if case in out:
      reporter.result(f'targets[{case}]', **targets(out, case))
  reporter.save()
  return 0


if __name__ == '__main__':
  sys.exit(main())
