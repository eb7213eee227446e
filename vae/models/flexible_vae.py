"""Flexible posteriors, priors and decoders for the MLP VAE (a `vae.model.Model`).

One model, three choices, each a head on the MLP VAE's networks:

    posterior  diagonal  q(z|x) = N(μ(x), diag σ(x)²)
               full      q(z|x) = N(μ(x), L(x) L(x)ᵀ), L lower triangular
               iaf       T inverse autoregressive steps (Kingma et al. 2016)
                         on the diagonal Gaussian, conditioned on x through
                         a per-example hidden bias c_t(x)
               delta     the δ-VAE's diagonal Gaussian (Razavi et al. 2019):
                         σ_j(x) confined below σ_l, the smaller root of
                         ½(σ² - 1 - log σ²) = δ, so that with the N(0, I)
                         prior KL(q_j ‖ p_j) = ½(μ² + σ² - 1 - log σ²) ≥ δ
                         for every x (`delta_scale_bounds`)
    prior      standard  p(z) = N(0, I)
               mog       p(z) = Σ_k π_k N(z; m_k, diag s_k²), all learned
               vamp      p(z) = (1/K) Σ_k q(z|u_k), u_k = σ(a_k) K learned
                         pseudo-inputs (the VampPrior, Tomczak & Welling 2018)
               vamp_base p(z) = (1/K) Σ_k N(z; μ(u_k), diag σ(u_k)²), the
                         VampPrior over the IAF's base Gaussian (posterior
                         iaf only): q(z|u_k) of an IAF needs the flow
                         inverted at every z (sequential passes, up to D
                         per step and component); its base Gaussian is one
                         pass
    decoder    factorized     p(x|z) = Π_j Bern(x_j; σ(D(z)_j))
               autoregressive p(x|z) = Π_j Bern(x_j; σ(D(z)_j + M(x_{<j}, z)_j)),
                              M a MADE (Germain et al. 2015) of set width

The distributions are those of `vae.distributions` (`MultivariateNormal`,
`InverseAutoregressiveFlow`, `Mixture`, `AutoregressiveBernoulli`); masks
are built here (`made_masks`). With every choice at its default this is
`image_vae.burda_vae`'s model, parameter for parameter.
"""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.special

from vae import config as cfg
from vae import distributions as dists
from vae import types
from vae.models import networks

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey

POSTERIORS = ('diagonal', 'full', 'iaf', 'delta')
PRIORS = ('standard', 'mog', 'vamp', 'vamp_base')
# The priors made of the encoder at learned pseudo-inputs.
VAMP = ('vamp', 'vamp_base')
DECODERS = ('factorized', 'autoregressive')
MAX_WIDTH = 10_000
# The posteriors that are a diagonal Gaussian (`dists.Normal`).
GAUSSIAN = ('diagonal', 'delta')
# The estimators for a q that is not a diagonal Gaussian: those that need
# only q's reparameterized samples and its log-density at any z.
FLEXIBLE_ESTIMATORS = ('pathwise', 'stl', 'dreg')


@cfg.settings
class FamilyConfig:
  """The families of q(z|x), p(z) and p(x|z) (default: the MLP VAE's)."""
  posterior: str = cfg.setting(
      'diagonal', 'q(z|x): diagonal or full-covariance Gaussian, an '
      'inverse autoregressive flow on the diagonal one, or the delta-VAE\'s '
      'diagonal Gaussian whose KL per dimension is at least committed_rate.',
      choices=POSTERIORS)
  prior: str = cfg.setting(
      'standard', 'p(z): N(0, I), a learned mixture of Gaussians, or the '
      'VampPrior (the encoder at learned pseudo-inputs), or for '
      'posterior=iaf the VampPrior over the flow\'s base Gaussian '
      '(vamp_base: no flow inversion).', choices=PRIORS)
  decoder: str = cfg.setting(
      'factorized', 'p(x|z): independent pixels, or autoregressive over '
      'pixels (a MADE conditioned on z; binary data only).',
      choices=DECODERS)
  num_components: int = cfg.setting(
      10, 'Components of the mog prior / pseudo-inputs of the vamp prior.',
      min=1, max=MAX_WIDTH)
  flow_steps: int = cfg.setting(2, 'IAF steps (posterior=iaf).', min=1,
                                max=100)
  flow_hidden: int = cfg.setting(
      100, 'Hidden width of each IAF step (posterior=iaf).', min=1,
      max=MAX_WIDTH)
  committed_rate: float = cfg.setting(
      0.1, 'delta of the delta-VAE: the least KL(q_j ‖ p_j) per latent '
      'dimension, in nats (posterior=delta).', gt=0.0, max=100.0)
  decoder_hidden_sizes: tuple[int, ...] = cfg.setting(
      (200,), 'Hidden widths of the autoregressive decoder\'s MADE (its '
      'capacity; decoder=autoregressive).', min=1, max=MAX_WIDTH,
      repeats=True)

  @property
  def flexible(self) -> bool:
    """True unless diagonal / standard / factorized (the MLP VAE)."""
    return (self.posterior, self.prior, self.decoder) != (
        'diagonal', 'standard', 'factorized')

  @property
  def analytic_kl(self) -> bool:
    """KL(q ‖ p) in closed form: a Gaussian q and the N(0, I) prior."""
    return analytic_kl(self.posterior, self.prior)


def check_training(families: FamilyConfig, objective: str,
                   estimator: str) -> None:
  """Refuses (ValueError, one line) what the model cannot train with.

  objective 'elbo' (E_q[log p(x|z)] - KL(q ‖ p), the KL in closed form)
  needs a Gaussian q and the N(0, I) prior, and so does posterior 'delta';
  a q other than a diagonal Gaussian (GAUSSIAN) takes only
  FLEXIBLE_ESTIMATORS (the others assume a Normal q's parameters).
  """
  check_families(families.posterior, families.prior)
  if objective == 'elbo' and not families.analytic_kl:
    raise ValueError(
        f'objective: elbo needs a closed-form KL(q ‖ p), which '
        f'posterior={families.posterior} with prior={families.prior} does '
        'not have; use elbo_mc_kl or iwae.')
  if families.posterior not in GAUSSIAN and estimator not in (
      FLEXIBLE_ESTIMATORS):
    raise ValueError(
        f'estimator: {estimator} assumes a diagonal Gaussian q; '
        f'posterior={families.posterior} takes '
        f'{", ".join(FLEXIBLE_ESTIMATORS)}.')


def check_families(posterior: str, prior: str) -> None:
  """Refuses (ValueError, one line) a prior the posterior cannot take:
  'delta' bounds the KL to N(0, I) only; 'vamp_base' is the VampPrior over
  an IAF's base Gaussian (for a Gaussian q it would be 'vamp')."""
  if posterior == 'delta' and prior != 'standard':
    raise ValueError('posterior: delta bounds the KL to the N(0, I) prior; '
                     f'prior={prior} is not that.')
  if prior == 'vamp_base' and posterior != 'iaf':
    raise ValueError('prior: vamp_base is the VampPrior over an IAF\'s base '
                     f'Gaussian; posterior={posterior} has none (use vamp).')


def delta_scale_bounds(delta: float) -> tuple[float, float]:
  """(σ_l, σ_u): the two roots σ_l < 1 < σ_u of ½(σ² - 1 - log σ²) = δ.

  With s = σ², s - log s = c = 1 + 2δ, i.e. -s e^{-s} = -e^{-c}, so
  s = -W_k(-e^{-c}) with the Lambert W branches k = 0 (s < 1) and k = -1
  (s > 1). For σ ≤ σ_l (or σ ≥ σ_u) the KL of N(μ, σ²) to N(0, 1),
  ½(μ² + σ² - 1 - log σ²), is ≥ δ whatever μ (Razavi et al. 2019); the
  'delta' posterior takes σ ∈ (0, σ_l), a q committed to be narrower than
  the prior.
  """
  if not delta > 0:
    raise ValueError(f'committed_rate: must be > 0, got {delta}.')
  arg = -np.exp(-(1.0 + 2.0 * delta))
  lo, hi = (-scipy.special.lambertw(arg, k).real for k in (0, -1))
  return float(np.sqrt(lo)), float(np.sqrt(hi))


def made_masks(in_dim: int, hidden_sizes: tuple[int, ...], out_dim: int,
               direct: bool = False) -> list[np.ndarray]:
  """MADE masks (Germain et al. 2015) for inputs/outputs ordered 1..n.

  Degrees: input i has i, hidden unit u of a layer has 1 + (u mod (n-1)),
  output j has j (n = in_dim = out_dim). A weight from degree a to a hidden
  degree b is kept when b ≥ a; to an output of degree j when j > a, so
  output j depends on inputs 1..j-1 only. `direct`: the input -> output
  mask alone (strictly lower: M[i, j] = j > i).

  Returns:
    [M_1 [in, h_1], ..., M_out [h_L, out]] as float32 0/1 arrays.
  """
  n = in_dim
  degrees = [np.arange(1, n + 1)]
  if direct:
    return [(np.arange(1, out_dim + 1)[None, :] >
             degrees[0][:, None]).astype(np.float32)]
  for size in hidden_sizes:
    degrees.append(1 + np.arange(size) % max(n - 1, 1))
  masks = [(b[None, :] >= a[:, None]).astype(np.float32)
           for a, b in zip(degrees[:-1], degrees[1:])]
  out = np.arange(1, out_dim + 1)
  masks.append((out[None, :] > degrees[-1][:, None]).astype(np.float32))
  return masks


class HeadEncoder(nn.Module):
  """x -> (loc, log_scale, extra): `networks.MLPEncoder` plus a linear head
  of `extra_dim` outputs (the full covariance's lower entries, or the IAF's
  per-example hidden biases)."""
  hidden_sizes: tuple[int, ...] = (200, 200)
  latent_dim: int = 50
  activation: str = 'tanh'
  extra_dim: int = 1

  @nn.compact
  def __call__(self, x: Array) -> tuple[Array, Array, Array]:
    """Encodes x [..., d]: loc, log_scale [..., D], extra [..., extra_dim]."""
    h = networks.MLP(self.hidden_sizes, self.activation, name='trunk')(x)
    return (nn.Dense(self.latent_dim, name='loc')(h),
            nn.Dense(self.latent_dim, name='log_scale')(h),
            nn.Dense(self.extra_dim, name='extra',
                     kernel_init=nn.initializers.normal(1e-2))(h))


@dataclasses.dataclass(frozen=True)
class FlexibleVAE:
  """A static, hashable VAE with a chosen posterior, prior and decoder.

  Attributes:
    hidden_sizes: encoder and decoder MLP widths.
    latent_dim: D.
    data_dim: d.
    activation: the MLPs' activation.
    posterior_type: one of POSTERIORS.
    prior_type: one of PRIORS.
    decoder_type: one of DECODERS.
    num_components: K of the mog and vamp(_base) priors.
    flow_steps: T, IAF steps.
    flow_hidden: H, the width of each IAF step's MADE.
    ar_hidden_sizes: the autoregressive decoder's MADE widths (its
      capacity; () is a masked linear layer on x).
    committed_rate: δ of posterior 'delta'.
  """
  hidden_sizes: tuple[int, ...] = (200, 200)
  latent_dim: int = 50
  data_dim: int = 784
  activation: str = 'tanh'
  posterior_type: str = 'diagonal'
  prior_type: str = 'standard'
  decoder_type: str = 'factorized'
  num_components: int = 10
  flow_steps: int = 2
  flow_hidden: int = 100
  ar_hidden_sizes: tuple[int, ...] = (200,)
  committed_rate: float = 0.1

  def __post_init__(self):
    for name, value, choices in (('posterior', self.posterior_type, POSTERIORS),
                                 ('prior', self.prior_type, PRIORS),
                                 ('decoder', self.decoder_type, DECODERS)):
      if value not in choices:
        raise ValueError(f'{name}: {value!r} is not one of {choices}.')
    check_families(self.posterior_type, self.prior_type)
    if self.posterior_type == 'delta':
      delta_scale_bounds(self.committed_rate)

  @property
  def encoder_net(self) -> nn.Module:
    if self.posterior_type in GAUSSIAN:
      return networks.MLPEncoder(self.hidden_sizes, self.latent_dim,
                                 self.activation)
    d = self.latent_dim
    extra = (d * (d - 1) // 2 if self.posterior_type == 'full' else
             self.flow_steps * self.flow_hidden)
    return HeadEncoder(self.hidden_sizes, d, self.activation, max(extra, 1))

  @property
  def decoder_net(self) -> nn.Module:
    return networks.MLPDecoder(self.hidden_sizes, self.data_dim,
                               self.activation)

  def init(self, key: PRNGKey, data_mean: Array | None = None) -> Params:
    """{'encoder', 'decoder'} as the MLP VAE's (same keys, same numbers),
    plus 'flow', 'prior' and 'autoregressive' for the chosen heads.

    Decoder output bias logit(x̄) if x̄ is given (`networks.mean_logit`);
    MoG means m_k ~ N(0, I), s_k = 1, π uniform; pseudo-inputs
    a_k = logit(x̄) + N(0, 0.1²) (or N(0, 0.1²)); IAF gates start at
    σ(g) ≈ 0.73 (g = 1, Kingma et al.); MADE weights N(0, 1/fan_in).
    """
    params = networks.init_vae_params(key, self.encoder_net, self.decoder_net,
                                      self.data_dim, self.latent_dim)
    if data_mean is not None:
      dec = params['decoder']['params']
      logits = {**dec['logits'], 'bias': jnp.asarray(
          networks.mean_logit(data_mean), jnp.float32)}
      params = {**params, 'decoder': {**params['decoder'], 'params': {
          **dec, 'logits': logits}}}
    keys = jax.random.split(jax.random.fold_in(key, 18), 3)
    d, big_d = self.latent_dim, self.data_dim
    if self.posterior_type == 'iaf':
      t, h = self.flow_steps, self.flow_hidden
      k = jax.random.split(keys[0], 3)
      params['flow'] = {
          'w_in': jax.random.normal(k[0], (t, d, h)) / np.sqrt(d),
          'w_shift': jax.random.normal(k[1], (t, h, d)) / np.sqrt(h),
          'b_shift': jnp.zeros((t, d)),
          'w_gate': jax.random.normal(k[2], (t, h, d)) / np.sqrt(h),
          'b_gate': jnp.ones((t, d))}
    if self.prior_type == 'mog':
      kk = self.num_components
      params['prior'] = {'logits': jnp.zeros(kk),
                         'loc': jax.random.normal(keys[1], (kk, d)),
                         'log_scale': jnp.zeros((kk, d))}
    elif self.prior_type in VAMP:
      mean = (jnp.zeros(big_d) if data_mean is None else
              jnp.asarray(networks.mean_logit(data_mean), jnp.float32))
      params['prior'] = {'pseudo_inputs': mean + 0.1 * jax.random.normal(
          keys[1], (self.num_components, big_d))}
    if self.decoder_type == 'autoregressive':
      sizes = self.ar_hidden_sizes
      k = jax.random.split(keys[2], len(sizes) + 2)
      ar: dict[str, Any] = {'direct': jnp.zeros((big_d, big_d))}
      if sizes:
        dims = (big_d,) + sizes + (big_d,)
        ar['z_hidden'] = jax.random.normal(k[0], (d, sizes[0])) / np.sqrt(d)
        ar['w'] = [jax.random.normal(kl, (m, n)) / np.sqrt(m)
                   for kl, m, n in zip(k[1:], dims[:-1], dims[1:])]
        ar['b'] = [jnp.zeros(n) for n in dims[1:]]
      params['autoregressive'] = ar
    return params

  def prior_dist(self, params: Params) -> Any:
    """p(z): N(0, I), the learned MoG, or the VampPrior (over the IAF's
    base Gaussian for 'vamp_base')."""
    if self.prior_type == 'standard':
      return dists.standard_normal((self.latent_dim,))
    p = params['prior']
    if self.prior_type == 'mog':
      return dists.Mixture(p['logits'], dists.Normal(p['loc'],
                                                     p['log_scale']))
    u = jax.nn.sigmoid(p['pseudo_inputs'])  # Pseudo-images in (0, 1).
    q = self.encoder(params, u)
    return dists.Mixture(jnp.zeros(u.shape[0]),
                         q.base() if self.prior_type == 'vamp_base' else q)

  def prior(self, params: Params = None) -> Any:
    """p(z) (see `prior_dist`), batch shape [D]."""
    return self.prior_dist(params)

  def encoder(self, params: Params, x: Array) -> Any:
    """q(z|x): Normal, MultivariateNormal or InverseAutoregressiveFlow;
    for 'delta' N(μ, σ²) with σ = σ_l sigmoid(r(x)), r the encoder's
    log-scale head (`delta_scale_bounds`): KL(q_j ‖ N(0, 1)) > δ."""
    out = networks.apply(self.encoder_net, params['encoder'], x)
    if self.posterior_type == 'diagonal':
      return dists.Normal(*out)
    if self.posterior_type == 'delta':
      lo, _ = delta_scale_bounds(self.committed_rate)
      return dists.Normal(out[0], math.log(lo) + jax.nn.log_sigmoid(out[1]))
    loc, log_scale, extra = out
    d = self.latent_dim
    if self.posterior_type == 'full':
      rows, cols = np.tril_indices(d, -1)
      lower = jnp.zeros(loc.shape + (d,)).at[..., rows, cols].set(
          extra[..., :len(rows)])
      return dists.MultivariateNormal.from_unconstrained(loc, log_scale,
                                                         lower)
    flow = params['flow']
    t, h = self.flow_steps, self.flow_hidden
    m_in, m_out = made_masks(d, (h,), d)
    batch = loc.shape[:-1]
    shared = lambda a: jnp.broadcast_to(a, batch + a.shape)
    return dists.InverseAutoregressiveFlow(
        loc, log_scale, extra.reshape(batch + (t, h)),
        shared(flow['w_in'] * m_in), shared(flow['w_shift'] * m_out),
        shared(flow['b_shift']), shared(flow['w_gate'] * m_out),
        shared(flow['b_gate']))

  def decoder(self, params: Params, z: Array) -> Any:
    """p(x|z): Bernoulli, or AutoregressiveBernoulli (raster order)."""
    logits = networks.apply(self.decoder_net, params['decoder'], z)
    if self.decoder_type == 'factorized':
      return dists.Bernoulli(logits)
    ar, big_d = params['autoregressive'], self.data_dim
    direct = ar['direct'] * made_masks(big_d, (), big_d, direct=True)[0]
    if not self.ar_hidden_sizes:
      return dists.AutoregressiveBernoulli(logits, jnp.zeros(()), direct)
    masks = made_masks(big_d, self.ar_hidden_sizes, big_d)
    layers = [(w * m, b) for w, m, b in zip(ar['w'], masks, ar['b'])]
    z_hidden = z @ ar['z_hidden'] + layers[0][1]
    return dists.AutoregressiveBernoulli(
        logits, z_hidden, direct, ((layers[0][0], None), *layers[1:]))


def analytic_kl(posterior: str, prior: str) -> bool:
  """True when KL(q ‖ p) has a closed form: a Gaussian q and N(0, I)."""
  return posterior in ('diagonal', 'full', 'delta') and prior == 'standard'


def make(model: Any, families: FamilyConfig,
         data_dim: int = 784) -> FlexibleVAE:
  """The FlexibleVAE of an MLP architecture (`image_vae.ModelConfig`:
  hidden_sizes, latent_dim, activation) and `families`."""
  return FlexibleVAE(
      hidden_sizes=tuple(model.hidden_sizes), latent_dim=model.latent_dim,
      data_dim=data_dim, activation=model.activation,
      posterior_type=families.posterior, prior_type=families.prior,
      decoder_type=families.decoder, num_components=families.num_components,
      flow_steps=families.flow_steps, flow_hidden=families.flow_hidden,
      ar_hidden_sizes=tuple(families.decoder_hidden_sizes),
      committed_rate=families.committed_rate)
