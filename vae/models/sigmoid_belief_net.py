"""A VAE with Bernoulli latents: a one-layer sigmoid belief net + encoder.

    p(b) = Π_j Bern(b_j; σ(a_j)),   p_θ(x|b) = Π_i Bern(x_i; σ(D_θ(b)_i)),
    q_φ(b|x) = Π_j Bern(b_j; σ(E_φ(2x - 1)_j)),

a `vae.model.Model` with learned prior logits a and D_θ, E_φ linear maps or
MLPs (`networks.MLP`; e.g. two hidden layers of 200 LeakyReLU units with
slope 0.3, the nonlinear model of Dong et al.'s code, google-research/
disarm), as in Dong, Mnih & Tucker (2020). Weights start at W ~ N(0,
1/fan_in), biases at 0, the decoder's output bias at logit(x̄). The ELBO
E_q[log p(x|b)] - KL(q ‖ p) has the analytic Bernoulli KL; surrogates for
every discrete-latent estimator, bounds and training are
those of every model (`vae.model`, `vae.evaluate`, `vae.optim`); the
estimator comparison is `vae.analysis.discrete_latents`.
"""

import dataclasses

import jax
import jax.numpy as jnp

from vae import distributions as dists
from vae import types
from vae.models import networks

Array = types.Array
Params = types.Params
PRNGKey = types.PRNGKey


@dataclasses.dataclass(frozen=True)
class SBN:
  """Bernoulli prior, encoder and decoder (static and hashable).

  Attributes:
    latent_dim: number of binary latents D.
    data_dim: number of binary pixels d.
    hidden_sizes: hidden widths of both networks (empty: linear maps).
    activation: their activation (`networks.ACTIVATIONS`).
    negative_slope: leaky_relu's slope s below 0: a(h) = max(h, s·h).
  """
  latent_dim: int
  data_dim: int
  hidden_sizes: tuple[int, ...] = ()
  activation: str = 'tanh'
  negative_slope: float = 0.3

  @property
  def encoder_net(self) -> networks.BernoulliEncoder:
    """2x - 1 -> logits of q(b|x)."""
    return networks.BernoulliEncoder(self.hidden_sizes, self.latent_dim,
                                     self.activation, self.negative_slope)

  @property
  def decoder_net(self) -> networks.MLPDecoder:
    """b -> logits of p(x|b)."""
    return networks.MLPDecoder(self.hidden_sizes, self.data_dim,
                               self.activation,
                               negative_slope=self.negative_slope)

  def init(self, key: PRNGKey, data_mean: Array | None = None) -> Params:
    """{'encoder', 'decoder', 'prior_logits'}: W ~ N(0, 1/fan_in), b = 0.

    The encoder's layers d -> hidden -> D draw from split(key)[0], the
    decoder's D -> hidden -> d from split(key)[1]; prior logits a = 0; the
    decoder's output bias is logit(clip(x̄, 10⁻³, 1 - 10⁻³)) when the data
    mean x̄ is given (it starts out predicting the mean image).
    """
    k_enc, k_dec = jax.random.split(key)
    h = list(self.hidden_sizes)
    enc = networks.init_layers(k_enc, [self.data_dim, *h, self.latent_dim])
    dec = networks.init_layers(k_dec, [self.latent_dim, *h, self.data_dim])
    if data_mean is not None:
      p = jnp.clip(data_mean, 1e-3, 1 - 1e-3)
      dec[-1]['b'] = jnp.log(p) - jnp.log1p(-p)
    return {'encoder': networks.variables(enc, ('logits',)),
            'decoder': networks.variables(dec, ('logits',)),
            'prior_logits': jnp.zeros(self.latent_dim)}

  def prior(self, params: Params) -> dists.Bernoulli:
    """p(b) = Bern(σ(a)) with learned logits a."""
    return dists.Bernoulli(logits=params['prior_logits'])

  def encoder(self, params: Params, x: Array) -> dists.Bernoulli:
    """q_φ(b|x) = Bern(σ(E_φ(2x - 1))) for x [..., d]."""
    return dists.Bernoulli(networks.apply(self.encoder_net, params['encoder'],
                                          2.0 * x - 1.0))

  def decoder(self, params: Params, b: Array) -> dists.Bernoulli:
    """p_θ(x|b) = Bern(σ(D_θ(b))) for b [..., D] (in [0, 1]^D)."""
    return dists.Bernoulli(
        networks.apply(self.decoder_net, params['decoder'], b))
