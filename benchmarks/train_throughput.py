r"""Training throughput (examples/s) of the Burda VAE: ours, plain, NumPyro.

Model 784-200-200-50 (tanh), Bernoulli pixels, ELBO with analytic KL and one
reparameterized sample per example, Adam(1e-3), batch 100. Cases, each timed
over whole passes of len(images) // B minibatches after a warm-up pass:

* `fused`: the project's epoch trainer, `vae.train.make_epoch`: one jitted
  call per epoch, `optim.fit` (a `lax.scan` of `optim.make_step`), each
  step gathering its shuffled batch on device (in the timed region), the
  epoch's pathwise noise drawn before the scan, with its finiteness checks
  and per-epoch statistics.
* `fit`: a bare scan: `optim.fit` of `optim.make_step` on
  -`model.batch_surrogate` (`surrogate_loss`: whole-batch arrays, the
  noise drawn in each step) over `data.epoch_batches` (a shuffled copy).
* `per_example`: `fit` with `per_example_loss`, the same estimator and
  random numbers as a vmap of `model.example_surrogate` over the batch
  (the library's general path, which the pathwise estimator used before).
* `plain`: `jax.jit(optim.make_step(surrogate_loss))` called once per numpy
  minibatch from a Python loop (asynchronous dispatch, one sync at the end).
* `numpyro`: NumPyro SVI with `Trace_ELBO` on the same Flax MLPs
  (`numpyro.contrib.module.flax_module`), `numpyro.optim.Adam`,
  `jit(svi.update)` per minibatch from a Python loop, the usual recipe.
* `numpyro_scan`: NumPyro's `svi.update` inside the same `lax.scan`.
* `plain_scan` (peer): `plain_scan_epoch`, a ~20-line jitted `lax.scan` of
  value_and_grad of the ELBO written out on the same Flax MLPs (no library
  code) and an optax Adam update, over `data.epoch_batches`: what a
  researcher writes by hand. Issue 17 asks `fused` ≥ 1.0× it.
* `matmuls` (reference): the step's matmuls alone at the batch's shapes
  (`step_matmuls`: every dense layer's forward product, weight gradient
  and input gradient, none for the data) in the same `lax.scan`: the time
  a step cannot go below at these shapes, whatever the peak of a 2048²
  matmul (`fused_vs_matmuls` = its epoch time / fused's).
* `fused_devices_N` (extra; N = 1, 2, 4, 8): `fused` data-parallel on a
  mesh of the first N devices, the trainer's own path (`vae.train.
  make_epoch(..., mesh)`, `train --devices=N`): state and images
  replicated, each step's batch split over the devices; `time_vs_one_device`
  = its epoch time / `fused`'s. On CPU, simulate devices with
  XLA_FLAGS=--xla_force_host_platform_device_count=4 (set before Python).

Each line reports examples/s, GFLOP/s of the matmuls (forward + backward:
`common.train_flops_per_example()` = 2.228 MFLOP per example)
and that as a share of the 2048² float32 matmul peak measured in the same
interleaved rounds. Issue 11's targets: `fused` ≥ 1.2× `numpyro_scan` and
≥ 0.65 of the matmul peak. Usage:

  python -m benchmarks.train_throughput             # 10,000 images
  python -m benchmarks.train_throughput --full      # 1 epoch of 50,000
  XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m \
    benchmarks.train_throughput --cases=fused,fused_devices_1,\
fused_devices_2,fused_devices_4 --peak_n=0     # the mesh's overhead
"""

import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common
from vae import data as data_lib
from vae import model as model_lib
from vae import moments
from vae import optim
from vae import train
from vae.models import image_vae

CASES = ('fused', 'fit', 'per_example', 'plain', 'plain_scan', 'numpyro',
         'numpyro_scan', 'matmuls')
MESH_SIZES = (1, 2, 4, 8)
EXTRA_CASES = tuple(f'fused_devices_{n}' for n in MESH_SIZES)
PEERS = ('plain', 'plain_scan', 'numpyro', 'numpyro_scan')
TARGET_VS_NUMPYRO_SCAN, TARGET_PEAK_FRACTION = 1.2, 0.65
TARGET_VS_PLAIN_SCAN = 1.0


def surrogate_loss(model: image_vae.VAE) -> optim.Loss:
  """(θ, x, key, b) -> (-batch_surrogate(θ, x, key), {}): the ELBO step."""
  def loss(params, batch, key, baseline):
    del baseline
    return -model_lib.batch_surrogate(model, params, batch, key), {}
  return loss


def per_example_loss(model: image_vae.VAE) -> optim.Loss:
  """`surrogate_loss` as a vmap of per-example surrogates: the same value
  and gradient (up to float rounding) and the same random numbers."""
  def loss(params, batch, key, baseline):
    del baseline
    keys = jax.random.split(key, batch.shape[0])
    return -jnp.mean(jax.vmap(lambda x, k: model_lib.example_surrogate(
        model, params, x, k, 'elbo', 'pathwise', 1))(batch, keys)), {}
  return loss


def _epoch_inputs(images, batch_size: int, seed: int, epoch, key):
  """(batches [S, B, D], keys [S]): epoch `epoch`, step keys fold_in(key, t)."""
  batches = data_lib.epoch_batches(images, batch_size, seed, epoch)
  t = epoch * batches.shape[0] + jnp.arange(batches.shape[0])
  return batches, jax.vmap(lambda i: jax.random.fold_in(key, i))(t)


def fit_fn(model, optimizer, batch_size: int, seed: int,
           loss: str = 'surrogate'):
  """Jitted epoch(state, images, epoch, key) -> (state, aux): `optim.fit`."""
  make = {'surrogate': surrogate_loss, 'per_example': per_example_loss}[loss]
  step = optim.make_step(make(model), optimizer)

  def epoch_fn(state, images, epoch, key):
    batches, keys = _epoch_inputs(images, batch_size, seed, epoch, key)
    return optim.fit(step, state, batches, keys)

  return jax.jit(epoch_fn, donate_argnums=0)


def _runner(epoch_fn, state, images, key=None) -> Callable[[], Any]:
  """A closure running one more epoch of epoch_fn(state, images, e[, key])."""
  box = {'state': state, 'epoch': 0}

  def one_epoch():
    args = (box['state'], images, jnp.int32(box['epoch'])) + (
        (key,) if key is not None else ())
    box['state'], aux = epoch_fn(*args)
    box['epoch'] += 1
    return box['state'].params, aux  # Blocked on: the whole epoch ran.

  return one_epoch


def plain_runner(model, optimizer, images: np.ndarray, batch_size: int,
                 seed: int = 0) -> Callable[[], Any]:
  """A closure: one epoch of jit(make_step) calls on numpy minibatches."""
  step = jax.jit(optim.make_step(surrogate_loss(model), optimizer),
                 donate_argnums=0)
  key = jax.random.PRNGKey(seed + 1)
  box = {'state': optim.init_state(model.init(jax.random.PRNGKey(seed)),
                                   optimizer), 'epoch': 0}

  def one_epoch():
    batches = np.asarray(data_lib.epoch_batches(images, batch_size, seed,
                                                box['epoch']))
    aux = None
    for i, batch in enumerate(batches):
      box['state'], aux = step(box['state'], batch, jax.random.fold_in(
          key, box['epoch'] * len(batches) + i))
    box['epoch'] += 1
    return box['state'].params

  return one_epoch


def plain_scan_epoch(model, optimizer: optax.GradientTransformation,
                     batch_size: int, seed: int):
  """Jitted (params, opt_state, images, epoch, key) -> (params, opt_state):
  one epoch of the ELBO step written by hand (the peer, no library code).

      ELBO(x) = Σ_j x_j l_j - softplus(l_j) - ½ Σ_i (σ_i² + μ_i² - 1 - 2 log σ_i),
      l = D(μ + σ ε), (μ, log σ) = E(x), ε ~ N(0, I).
  """
  def loss(params, x, key):
    loc, log_scale = model.encoder_net.apply(params['encoder'], x)
    z = loc + jnp.exp(log_scale) * jax.random.normal(key, loc.shape)
    logits = model.decoder_net.apply(params['decoder'], z)
    rec = jnp.sum(x * logits - jax.nn.softplus(logits), -1)
    kl = 0.5 * jnp.sum(jnp.exp(2 * log_scale) + loc**2 - 1 - 2 * log_scale, -1)
    return -jnp.mean(rec - kl)

  def step(carry, inputs):
    params, opt_state = carry
    grads = jax.grad(loss)(params, *inputs)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  @jax.jit
  def epoch(params, opt_state, images, epoch_index, key):
    batches = data_lib.epoch_batches(images, batch_size, seed, epoch_index)
    keys = jax.random.split(jax.random.fold_in(key, epoch_index),
                            batches.shape[0])
    return jax.lax.scan(step, (params, opt_state), (batches, keys))[0]

  return epoch


def step_matmuls(model, batch_size: int, num_steps: int):
  """Jitted () -> scalar: `num_steps` steps of a training step's matmuls.

  Per dense layer (i -> o) of the encoder [d, *hidden, 2D] and decoder
  [D, *hidden, d]: x W ([B, i] × [i, o]), xᵀ g (weight gradient) and g Wᵀ
  (input gradient; none for the data layer), `common.train_flops_per_
  example`'s count. Each step perturbs the weights by its carry so that
  nothing is hoisted out of the scan.
  """
  h = tuple(model.decoder_net.hidden_sizes)
  d, latent = model.data_dim, model.latent_dim
  layers = [*zip((d,) + h, h + (2 * latent,)), *zip((latent,) + h, h + (d,))]
  ws = [jnp.full((i, o), 1e-3) for i, o in layers]
  xs = [jnp.ones((batch_size, i)) for i, _ in layers]
  gs = [jnp.ones((batch_size, o)) for _, o in layers]

  def body(carry, _):
    total = carry
    for k, (w, x, g) in enumerate(zip(ws, xs, gs)):
      w = w + carry * 1e-9
      total = total + (x @ w)[0, 0] + (x.T @ g)[0, 0]
      if k:  # Not the data layer.
        total = total + (g @ w.T)[0, 0]
    return total * 1e-9, None

  return jax.jit(lambda: jax.lax.scan(body, jnp.float32(0.0), None,
                                      length=num_steps)[0])


def plain_scan_runner(model, optimizer, images: np.ndarray, batch_size: int,
                      seed: int = 0) -> Callable[[], Any]:
  """A closure: one more epoch of `plain_scan_epoch` (images on device)."""
  epoch = plain_scan_epoch(model, optimizer, batch_size, seed)
  params = model.init(jax.random.PRNGKey(seed))
  box = {'state': (params, optimizer.init(params)), 'epoch': 0}
  dev, key = jnp.asarray(images), jax.random.PRNGKey(seed + 1)

  def one_epoch():
    box['state'] = epoch(*box['state'], dev, jnp.int32(box['epoch']), key)
    box['epoch'] += 1
    return box['state'][0]

  return one_epoch


def runner(case: str, model, images: np.ndarray, batch_size: int,
           seed: int = 0) -> Callable[[], Any]:
  """A closure that trains one more epoch of `case` (images on device)."""
  optimizer = optax.adam(1e-3)
  state = optim.init_state(model.init(jax.random.PRNGKey(seed)), optimizer)
  dev = jnp.asarray(images)
  key = jax.random.PRNGKey(seed + 1)
  if case == 'fused' or case.startswith('fused_devices_'):
    mesh = None
    if case != 'fused':  # The trainer's data-parallel path.
      count = moments.device_count(int(case.rsplit('_', 1)[1]))
      mesh = moments.make_mesh(jax.devices()[:count])
      state, dev = train.replicate((state, dev), mesh)
    epoch_fn = train.make_epoch(model, optimizer, train.TrainConfig(
        batch_size=batch_size), seed, dynamic_binarization=False, mesh=mesh)
    return _runner(epoch_fn, state, dev)
  if case in ('fit', 'per_example'):
    return _runner(fit_fn(model, optimizer, batch_size, seed,
                          'surrogate' if case == 'fit' else case),
                   state, dev, key)
  if case == 'plain':
    return plain_runner(model, optimizer, images, batch_size, seed)
  if case == 'plain_scan':
    return plain_scan_runner(model, optimizer, images, batch_size, seed)
  if case == 'matmuls':
    return step_matmuls(model, batch_size, len(images) // batch_size)
  if case in ('numpyro', 'numpyro_scan'):
    return numpyro_runner(model, images, batch_size, seed,
                          fused=case == 'numpyro_scan')
  raise ValueError(f'unknown case {case!r}; choose from {CASES}')


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
    decoder = flax_module('decoder', model.decoder_net, input_shape=(1, latent))
    with numpyro.plate('data', x.shape[0]):
      z = numpyro.sample('z', npd.Normal(0.0, 1.0).expand([latent])
                         .to_event(1))
      numpyro.sample('x', npd.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

  def np_guide(x):
    encoder = flax_module('encoder', model.encoder_net,
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
      for batch in np.asarray(data_lib.epoch_batches(images, batch_size, seed,
                                                     state['epoch'])):
        state['svi'], loss = update(state['svi'], batch)
      state['epoch'] += 1
      return loss

  return one_epoch


def benchmark(images: np.ndarray, *, batch_size: int = 100,
              cases=CASES, rounds: int = 3, seed: int = 0,
              model: image_vae.VAE | None = None,
              peak_n: int = 2048, reporter: common.Reporter | None = None,
              source: str = '') -> dict[str, dict[str, Any]]:
  """Runs the cases on `images`; one epoch = len(images) // batch_size steps.

  All cases (and the peak matmul) are compiled and warmed up, then timed in
  `rounds` interleaved rounds (`common.time_interleaved`), one epoch per
  case per round, so they see the same machine load.

  Returns:
    {case: record} with examples_per_s (at the median epoch time),
    examples_per_s_best, gflops, gflops_per_cpu_s, peak_fraction
    (median/median), peak_fraction_best, peak_fraction_cpu and, for the
    other cases, fused_speedup(_best, _cpu) ('fused' over it); plus
    'matmul_peak' if measured.
  """
  common.check_cases(cases, CASES + EXTRA_CASES)
  model = model or common.burda_model()
  reporter = reporter or common.Reporter('train_throughput')
  n = (len(images) // batch_size) * batch_size
  images = np.asarray(images[:n], np.float32)
  flops = n * common.train_flops_per_example(**common.arch(model))
  fns = {case: runner(case, model, images, batch_size, seed)
         for case in cases}
  timings, peak = common.time_with_peak(fns, peak_n, rounds, reporter)
  out = {'matmul_peak': peak} if peak else {}
  for case in cases:
    t = timings[case]
    rec = dict(examples_per_s=n / t.median, examples_per_s_best=n / t.min,
               gflops=flops / t.median / 1e9,
               gflops_best=flops / t.min / 1e9, steps=n // batch_size,
               batch_size=batch_size, epoch_s=t.median,
               epoch_cpu_s=t.cpu_median, compile_s=t.compile_s, data=source,
               gflops_per_cpu_s=flops / max(t.cpu_median, 1e-9) / 1e9)
    if peak:
      rec['peak_fraction'] = rec['gflops'] / peak['gflops']
      rec['peak_fraction_best'] = rec['gflops_best'] / peak['gflops_best']
      rec['peak_fraction_cpu'] = (rec['gflops_per_cpu_s'] /
                                  peak['gflops_per_cpu_s'])
    if case.startswith('fused_devices_'):
      rec['devices'] = int(case.rsplit('_', 1)[1])
    if case != 'fused' and 'fused' in timings:
      if case.startswith('fused_devices_'):
        rec['time_vs_one_device'] = t.median / timings['fused'].median
      rec['fused_speedup'] = t.median / timings['fused'].median
      rec['fused_speedup_best'] = t.min / timings['fused'].min
      rec['fused_speedup_cpu'] = t.cpu_median / max(
          timings['fused'].cpu_median, 1e-9)
    out[case] = rec
    reporter.result(case, **rec)
  return out


def targets(out: dict[str, dict[str, Any]]) -> dict[str, Any]:
  """Issue 11: fused ≥ 1.2× numpyro_scan, ≥ 0.65 of the matmul peak;
  issue 17: fused ≥ 1.0× plain_scan.

  Judged ('met_*') at the median wall times; the best-wall and CPU-time
  ratios are given too, and the ratio to the best peer (the fastest of
  plain, numpyro, numpyro_scan).
  """
  rec, verdict = out['fused'], {}
  if 'numpyro_scan' in out:
    verdict['vs_numpyro_scan'] = out['numpyro_scan']['epoch_s'] / rec[
        'epoch_s']
    verdict['vs_numpyro_scan_cpu'] = (out['numpyro_scan']['epoch_cpu_s'] /
                                      max(rec['epoch_cpu_s'], 1e-9))
    verdict['met_1.2x_numpyro_scan'] = (verdict['vs_numpyro_scan'] >=
                                        TARGET_VS_NUMPYRO_SCAN)
  if 'matmuls' in out:
    verdict['fused_vs_matmuls'] = out['matmuls']['epoch_s'] / rec['epoch_s']
  if 'plain_scan' in out:
    verdict['vs_plain_scan'] = out['plain_scan']['epoch_s'] / rec['epoch_s']
    verdict['vs_plain_scan_best'] = (rec['examples_per_s_best'] /
                                     out['plain_scan']['examples_per_s_best'])
    verdict['vs_plain_scan_cpu'] = (out['plain_scan']['epoch_cpu_s'] /
                                    max(rec['epoch_cpu_s'], 1e-9))
    verdict['met_1.0x_plain_scan'] = (verdict['vs_plain_scan'] >=
                                      TARGET_VS_PLAIN_SCAN)
  peers = [p for p in PEERS if p in out]
  if peers:
    best = min(peers, key=lambda p: out[p]['epoch_s'])
    verdict['best_peer'] = best
    verdict['vs_best_peer'] = out[best]['epoch_s'] / rec['epoch_s']
  if 'peak_fraction' in rec:
    for suffix in ('', '_best', '_cpu'):
      verdict['peak_fraction' + suffix] = rec['peak_fraction' + suffix]
    verdict['met_0.65_peak'] = rec['peak_fraction'] >= TARGET_PEAK_FRACTION
  return verdict


def main(argv=None) -> int:
  parser = common.make_parser(__doc__, CASES, EXTRA_CASES)
  parser.add_argument('--num_train', type=int, default=10_000,
                      help='Training images per epoch (--full: all 50,000).')
  parser.add_argument('--batch_size', type=int, default=100)
  args = parser.parse_args(argv)
  images, source = common.load_images(args, 'train',
                                      None if args.full else args.num_train)
  reporter = common.Reporter('train_throughput', args.output)
  reporter.info()
  out = benchmark(images, batch_size=args.batch_size,
                  cases=args.cases.split(','), rounds=args.repeats,
                  seed=args.seed, peak_n=args.peak_n, reporter=reporter,
                  model=common.model_from_args(args), source=source)
  if 'fused' in out:
    reporter.result('targets', **targets(out))
  reporter.save()
  return 0


if __name__ == '__main__':
  sys.exit(main())
