r"""The IAF + VampPrior training step: early-stopped vs D-pass flow inversion.

With an inverse autoregressive flow q and the VampPrior p(z) = (1/K) Σ_k
q(z|u_k), the Monte Carlo KL needs log q(z|u_k) at every sample z of every
image: each of the T flow steps inverted for each (image, pseudo-input)
pair. One training step of the Burda-size model (784-200-200-50, T = 2
steps of width 100, K = 10 pseudo-inputs, batch B = 20, one sample), the
gradient of

    mean_b [log q(z_b|x_b) - log (1/K) Σ_k q(z_b|u_k)],  z_b ~ q(z|x_b),

is timed with two inversions (everything else identical):

* `early` (the library's `InverseAutoregressiveFlow.inverse`): fixed-point
  passes x ← (y - (1 - s(x)) m(x)) / s(x) that stop once a pass changes
  nothing beyond rounding (at most D), gradients by the implicit function
  theorem (`vae.distributions._invert_step`).
* `fixed` (peer: what the library did before): D = 50 passes in a
  `fori_loop`, differentiated through the loop.

The inversion's matmul work per pass is B·K·(2·D·H + 2·2·H·D) FLOPs; the
`fixed` case's forward passes alone are T·D of them, its backward about twice
that (`fixed_flop_bound_s`: their FLOP-bound time at the matmul peak measured
in the same run). The gradients of the two cases are compared
(`max_rel_grad_diff`, per parameter leaf, to the leaf's largest entry).
Parameters: a fresh initialization, or with --checkpoint_dir the encoder,
flow and decoder of a trained `train_vae --posterior=iaf` run (the
pseudo-inputs stay at their initialization): a trained flow takes more
passes to converge than a fresh one.

  python -m benchmarks.iaf_inversion
  python -m benchmarks.iaf_inversion --checkpoint_dir=runs/flex/iaf_s1
"""

import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from experiments import evaluate_vae
from vae import distributions as dists
from vae.models import flexible_vae

CASES = ('early', 'fixed')


def fixed_inverse(flow: dists.InverseAutoregressiveFlow, z: Any):
  """(z_0, log det) by D passes per step in a fori_loop (the peer)."""
  dim, log_det = z.shape[-1], jnp.zeros(())
  z = jnp.broadcast_to(z, jnp.broadcast_shapes(z.shape, flow.shape))
  for t in reversed(range(flow.num_steps)):
    y = z[..., ::-1]

    def body(_, x, t=t, y=y):
      shift, gate = flow._shift_gate(t, x)  # pylint: disable=protected-access
      s = jax.nn.sigmoid(gate)
      return (y - (1.0 - s) * shift) / s

    z = jax.lax.fori_loop(0, dim, body, y)
    log_det = log_det + dists._affine_log_det(  # pylint: disable=protected-access
        flow._shift_gate(t, z)[1])  # pylint: disable=protected-access
  return z, log_det


def make_step(model: flexible_vae.FlexibleVAE, x: np.ndarray, inverse):
  """The jitted value and gradient of the MC-KL part of the loss, with the
  VampPrior's components inverted by `inverse(flow, z)`."""
  def component_log_prob(flow, z):
    z0, log_det = inverse(flow, z)
    return flow.base().event_log_prob(z0) - log_det

  def loss(params, key):
    q = model.encoder(params, x)
    z, log_q = q.sample_and_log_prob(key)
    u = jax.nn.sigmoid(params['prior']['pseudo_inputs'])
    comps = component_log_prob(model.encoder(params, u), z[:, None, :])
    log_p = jax.nn.logsumexp(comps, -1) - jnp.log(float(comps.shape[-1]))
    return jnp.mean(log_q - log_p)

  return jax.jit(jax.value_and_grad(loss))


def load_trained(model: flexible_vae.FlexibleVAE, params: Any,
                 directory: str) -> Any:
  """`params` with encoder, flow and decoder from a trained IAF run (its
  newest checkpoint, read by `evaluate_vae.load_run`)."""
  _, _, trained, trained_params, _ = evaluate_vae.load_run(directory, None)
  same = ('hidden_sizes', 'latent_dim', 'flow_steps', 'flow_hidden')
  if not (isinstance(trained, flexible_vae.FlexibleVAE) and
          trained.posterior_type == 'iaf' and
          all(getattr(trained, a) == getattr(model, a) for a in same)):
    raise SystemExit(f'iaf_inversion: {directory} is not a run of the '
                     'Burda-size IAF (2 steps of width 100).')
  return {**params, **trained_params}


def benchmark(images: np.ndarray, batch: int, components: int, rounds: int,
              peak_n: int, reporter: common.Reporter, cases=CASES,
              checkpoint_dir: str | None = None) -> dict[str, Any]:
  """Times one training step per case; reports and returns the records."""
  common.check_cases(cases, CASES)
  model = flexible_vae.FlexibleVAE(posterior_type='iaf', prior_type='vamp',
                                   num_components=components,
                                   data_dim=images.shape[1])
  params = model.init(jax.random.PRNGKey(0), images.mean(0))
  if checkpoint_dir:
    params = load_trained(model, params, checkpoint_dir)
  x = jnp.asarray(images[:batch])
  inverses = {'early': lambda flow, z: flow.inverse(z),
              'fixed': fixed_inverse}
  steps = {c: make_step(model, x, inverses[c]) for c in cases}
  key = jax.random.PRNGKey(1)
  fns = {c: (lambda f=f: f(params, key)) for c, f in steps.items()}
  timings, peak = common.time_with_peak(fns, peak_n, rounds, reporter)
  d, h, t = model.latent_dim, model.flow_hidden, model.flow_steps
  pass_flops = batch * components * (2 * d * h + 4 * h * d)
  fixed_flops = 3.0 * t * d * pass_flops  # Forward + about 2x backward.
  grads = {c: f(params, key)[1] for c, f in steps.items()}
  out = {}
  for c in cases:
    fields: dict[str, Any] = dict(
        ms_per_step=1e3 * timings[c].median,
        ms_per_step_best=1e3 * timings[c].min,
        compile_s=timings[c].compile_s, batch=batch, components=components,
        trained=bool(checkpoint_dir))
    if c == 'fixed' and peak:
      fields['fixed_flop_bound_s'] = fixed_flops / (peak['gflops'] * 1e9)
      fields['ratio_to_bound'] = timings[c].median / fields[
          'fixed_flop_bound_s']
    out[c] = reporter.result(c, **fields)
  if set(cases) == set(CASES):
    diff = max(float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-30))
               for a, b in zip(jax.tree.leaves(grads['early']),
                               jax.tree.leaves(grads['fixed'])))
    out['targets'] = reporter.result(
        'targets', speedup_vs_fixed=timings['fixed'].median /
        timings['early'].median, max_rel_grad_diff=diff,
        met_gradients_agree=diff < 1e-3)
  return out


def main(argv=None) -> int:
  parser = common.make_parser(__doc__, CASES)
  parser.add_argument('--batch_size', type=int, default=20,
                      help='B, images per step.')
  parser.add_argument('--num_components', type=int, default=10,
                      help='K, pseudo-inputs of the VampPrior.')
  parser.add_argument('--checkpoint_dir', default=None,
                      help='A train_vae --posterior=iaf run folder whose '
                      'trained encoder, flow and decoder to use.')
  args = parser.parse_args(argv)
  reporter = common.Reporter('iaf_inversion', args.output)
  reporter.info()
  images, _ = common.load_images(args, 'train', args.batch_size)
  benchmark(images, args.batch_size, args.num_components, args.repeats,
            args.peak_n, reporter, args.cases.split(','),
            args.checkpoint_dir)
  reporter.save()
  return 0


if __name__ == '__main__':
  sys.exit(main())
