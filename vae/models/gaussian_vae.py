"""A small VAE for low-dimensional real data (a `vae.model.Model`).

    p(z) = N(0, I_D),   p_θ(x|z) = N(μ_θ(z), diag σ_θ(z)²),
    q_φ(z|x) = N(μ_φ(x), diag σ_φ(x)²),

both networks `networks.MLPEncoder`s (a tanh `networks.MLP` trunk and
linear loc and raw log-scale heads), with log σ = m + softplus(raw - m) ≥ m
(m = -8 for q, -4 for p(x|z): bounded densities). p_θ(x) = ∫ N(z; 0, I)
p_θ(x|z) dz is an infinite mixture of Gaussians. Weights start at
W ~ N(0, 1/fan_in), biases at 0 (`networks.init_layers`). Fitting, bounds
and importance sampling are those of every model (`vae.model`,
`vae.optim`, `vae.importance`; `vae.problems.vae_density`).
"""

import dataclasses

import jax

from vae import distributions as dists
from vae import types
from vae.models import networks

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey


def normal_head(out: tuple[Array, Array],
                min_log_scale: float) -> dists.Normal:
  """N(loc, σ²) from (loc, raw): log σ = m + softplus(raw - m) ≥ m.

  Smooth in raw, and ≥ m so that the density stays bounded.
  """
  loc, raw = out
  log_scale = min_log_scale + jax.nn.softplus(raw - min_log_scale)
  return dists.Normal(loc=loc, log_scale=log_scale)


@dataclasses.dataclass(frozen=True)
class GaussianVAE:
  """Gaussian encoder and decoder MLPs (static and hashable).

  Attributes:
    latent_dim: D, dimension of z.
    data_dim: d, dimension of x.
    hidden_sizes: hidden widths of both networks (tanh).
    encoder_min_log_scale: the floor m of log σ_φ.
    decoder_min_log_scale: the floor m of log σ_θ.
  """
  latent_dim: int
  data_dim: int
  hidden_sizes: tuple[int, ...] = (64,)
  encoder_min_log_scale: float = -8.0
  decoder_min_log_scale: float = -4.0

  @property
  def encoder_net(self) -> networks.MLPEncoder:
    """x -> (μ_φ, raw log σ_φ)."""
    return networks.MLPEncoder(self.hidden_sizes, self.latent_dim)

  @property
  def decoder_net(self) -> networks.MLPEncoder:
    """z -> (μ_θ, raw log σ_θ)."""
    return networks.MLPEncoder(self.hidden_sizes, self.data_dim)

  def init(self, key: PRNGKey, data_mean: Array | None = None) -> Params:
    """{'encoder', 'decoder'}: W_l ~ N(0, 1/m_l), b_l = 0 (x̄ unused).

    The encoder's layers d -> hidden -> 2D and the decoder's D -> hidden
    -> 2d draw from split(key)[0] and [1]; the last layer's columns are
    the loc and log-scale heads.
    """
    del data_mean
    k_enc, k_dec = jax.random.split(key)
    h = list(self.hidden_sizes)
    return {'encoder': networks.variables(networks.init_layers(
        k_enc, [self.data_dim, *h, 2 * self.latent_dim])),
            'decoder': networks.variables(networks.init_layers(
                k_dec, [self.latent_dim, *h, 2 * self.data_dim]))}

  def prior(self, params: Params = None) -> dists.Normal:
    """p(z) = N(0, I_D) (no parameters)."""
    del params
    return dists.standard_normal((self.latent_dim,))

  def encoder(self, params: Params, x: Array) -> dists.Normal:
    """q_φ(z|x) for x [..., d]."""
    return normal_head(networks.apply(self.encoder_net, params['encoder'], x),
                       self.encoder_min_log_scale)

  def decoder(self, params: Params, z: Array) -> dists.Normal:
    """p_θ(x|z) for z [..., D]."""
    return normal_head(networks.apply(self.decoder_net, params['decoder'], z),
                       self.decoder_min_log_scale)
