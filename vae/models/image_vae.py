"""A VAE with Gaussian latents and Bernoulli pixels (a `vae.model.Model`).

    p(z) = N(0, I),   q_φ(z|x) = N(μ_φ(x), diag σ_φ(x)²),
    p_θ(x|z) = Bern(σ(D_θ(z))),

with MLP networks (`networks.MLP`; Burda et al.'s 784-200-200-50 tanh by
default). `ModelConfig` declares the architecture's settings and `make`
builds the model; bounds, surrogates, training, evaluation and importance
sampling are those of every model (`vae.model`, `vae.train`,
`vae.evaluate`, `vae.importance`).
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from vae import config as cfg
from vae import distributions as dists
from vae import types
from vae.models import networks

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey

MAX_WIDTH = 10_000  # Widest layer (and largest latent dimension) accepted.


@cfg.settings
class ModelConfig:
  """The MLP VAE's architecture (default: Burda et al.'s 784-200-200-50)."""
  hidden_sizes: tuple[int, ...] = cfg.setting(
      (200, 200), 'Hidden layer widths of the encoder and of the decoder '
      '(empty: linear maps).', min=1, max=MAX_WIDTH, repeats=True,
      empty=True)
  latent_dim: int = cfg.setting(50, 'Dimension of z.', min=1, max=MAX_WIDTH)
  activation: str = cfg.setting('tanh', 'Hidden-layer activation.',
                                choices=tuple(networks.ACTIVATIONS))

  def num_params(self, data_dim: int = 784) -> int:
    """Σ_layers (d_in + 1)·d_out over the encoder and the decoder."""
    h = self.hidden_sizes
    enc = zip((data_dim,) + h, h + (2 * self.latent_dim,))
    dec = zip((self.latent_dim,) + h, h + (data_dim,))
    return sum((i + 1) * o for i, o in (*enc, *dec))


@dataclasses.dataclass(frozen=True)
class VAE:
  """A static, hashable VAE (a `vae.model.Model`; a jit static argument).

  Attributes:
    encoder_net: x -> (loc, log_scale), e.g. `networks.MLPEncoder`.
    decoder_net: z -> Bernoulli logits, e.g. `networks.MLPDecoder`.
    latent_dim: dimension of z.
    data_dim: dimension of x.
  """
  encoder_net: nn.Module
  decoder_net: nn.Module
  latent_dim: int
  data_dim: int = 784

  def init(self, key: PRNGKey, data_mean: Array | None = None) -> Params:
    """{'encoder', 'decoder'}; decoder output bias b = logit(x̄) if given.

    b_j = log p_j - log(1 - p_j), p_j = clip(x̄_j, 1e-3, 1 - 1e-3) (the mean
    training image; `networks.mean_logit`): the decoder starts out
    predicting the mean image. The other parameters do not depend on x̄.
    """
    params = networks.init_vae_params(key, self.encoder_net,
                                      self.decoder_net, self.data_dim,
                                      self.latent_dim)
    if data_mean is None:
      return params
    bias = networks.mean_logit(data_mean)
    decoder = params['decoder']['params']
    logits = {**decoder['logits'], 'bias': jnp.asarray(bias, jnp.float32)}
    return {**params, 'decoder': {**params['decoder'], 'params': {
        **decoder, 'logits': logits}}}

  def prior(self, params: Params = None) -> dists.Normal:
    """p(z) = N(0, I) (no parameters)."""
    del params
    return dists.standard_normal((self.latent_dim,))

  def encoder(self, params: Params, x: Array) -> dists.Normal:
    """q_φ(z|x) = N(μ_φ(x), diag σ_φ(x)²) for x [..., data_dim]."""
    loc, log_scale = networks.apply(self.encoder_net, params['encoder'], x)
    return dists.Normal(loc, log_scale)

  def decoder(self, params: Params, z: Array) -> dists.Bernoulli:
    """p_θ(x|z) = Bern(σ(D_θ(z))) for z [..., latent_dim]."""
    return dists.Bernoulli(
        networks.apply(self.decoder_net, params['decoder'], z))


def burda_vae(latent_dim: int = 50, hidden_sizes=(200, 200),
              activation: str = 'tanh', data_dim: int = 784,
              output_bias_init=None) -> VAE:
  """Burda et al. (2015) one-stochastic-layer architecture (784-200-200-50)."""
  return VAE(
      encoder_net=networks.MLPEncoder(
          hidden_sizes=tuple(hidden_sizes), latent_dim=latent_dim,
          activation=activation),
      decoder_net=networks.MLPDecoder(
          hidden_sizes=tuple(hidden_sizes), output_dim=data_dim,
          activation=activation, output_bias_init=output_bias_init),
      latent_dim=latent_dim, data_dim=data_dim)


def make(config: ModelConfig, data_dim: int = 784) -> VAE:
  """The MLP VAE of `config` (output bias zeros; see `VAE.init`)."""
  return burda_vae(config.latent_dim, config.hidden_sizes, config.activation,
                   data_dim)
