"""The one MLP (Flax linen) and its heads, for every model in `vae.models`.

`MLP` is the trunk h_{l+1} = a(h_l W_l + b_l); the heads are linear layers
on it: `MLPEncoder` (loc, log_scale of a diagonal Gaussian), `MLPDecoder`
and `BernoulliEncoder` (logits). The defaults are Burda et al. (2015)'s
one-stochastic-layer architecture: 784-200-200-50 with tanh, in both
directions. Networks return raw arrays; the models turn them into
distributions. `init_layers` + `variables` build a network's variables
with W ~ N(0, 1/fan_in), b = 0 (the small models' initialization).
"""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vae.types import Array, Params, PRNGKey, Shape

Initializer = Callable[[PRNGKey, Shape, Any], Array]

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    'tanh': jnp.tanh,
    'relu': nn.relu,
    'elu': nn.elu,
    'softplus': nn.softplus,
    'sigmoid': nn.sigmoid,
    'gelu': nn.gelu,
    'silu': nn.silu,
    'swish': nn.swish,
    'leaky_relu': nn.leaky_relu,
    'identity': lambda x: x,
}


def get_activation(name: str, negative_slope: float = 0.01
                   ) -> Callable[[Array], Array]:
  """Returns the activation function called `name` (see `ACTIVATIONS`).

  Args:
    name: e.g. 'tanh', 'relu', 'elu', 'softplus'.
    negative_slope: s of leaky_relu, a(h) = max(h, s·h) (ignored by the
      others).

  Returns:
    The elementwise function.

  Raises:
    ValueError: `name` is not in `ACTIVATIONS`.
  """
  if name not in ACTIVATIONS:
    raise ValueError(f'unknown activation {name!r}; expected one of '
                     f'{sorted(ACTIVATIONS)}')
  if name == 'leaky_relu':
    return functools.partial(nn.leaky_relu, negative_slope=negative_slope)
  return ACTIVATIONS[name]


def mean_logit(pixel_mean: Array | np.ndarray,
               eps: float = 1e-3) -> np.ndarray:
  """logit(p) = log p - log(1 - p), p = clip(pixel_mean, eps, 1 - eps)."""
  p = np.clip(np.asarray(pixel_mean, np.float64), eps, 1.0 - eps)
  return np.log(p) - np.log1p(-p)


def mean_logit_init(pixel_mean: Array | np.ndarray,
                    eps: float = 1e-3) -> Initializer:
  """Bias initializer logit(pixel_mean), clipped to [eps, 1 - eps].

  With it a decoder starts out predicting the mean training image, the usual
  trick for Bernoulli image likelihoods.

  Args:
    pixel_mean: [784] mean of each pixel over the training set.
    eps: clipping, so that always-0 pixels get a finite bias.

  Returns:
    An initializer for `MLPDecoder(output_bias_init=...)`.
  """
  bias = mean_logit(pixel_mean, eps)

  def init(key: PRNGKey, shape: Shape, dtype: Any = jnp.float32) -> Array:
    del key  # Deterministic.
    if tuple(shape) != bias.shape:
      raise ValueError(f'pixel_mean has shape {bias.shape}, bias {shape}')
    return jnp.asarray(bias, dtype)

  return init


class MLP(nn.Module):
  """Dense layers with an activation after each: x -> features.

  Attributes:
    hidden_sizes: width of each layer (empty: the identity).
    activation: activation name (see `ACTIVATIONS`).
    negative_slope: leaky_relu's slope below 0.
  """
  hidden_sizes: Sequence[int] = (200, 200)
  activation: str = 'tanh'
  negative_slope: float = 0.01

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """Applies the layers to x [..., d_in]; returns [..., hidden_sizes[-1]]."""
    act = get_activation(self.activation, self.negative_slope)
    x = _as_float(x)
    for i, size in enumerate(self.hidden_sizes):
      x = act(nn.Dense(size, name=f'hidden_{i}')(x))
    return x


class MLPEncoder(nn.Module):
  """x -> (loc, log_scale) of a diagonal-Gaussian q(z|x).

  Attributes:
    hidden_sizes: widths of the hidden layers.
    latent_dim: dimension of z.
    activation: activation name (see `ACTIVATIONS`).
    negative_slope: leaky_relu's slope below 0.
  """
  hidden_sizes: Sequence[int] = (200, 200)
  latent_dim: int = 50
  activation: str = 'tanh'
  negative_slope: float = 0.01

  @nn.compact
  def __call__(self, x: Array) -> tuple[Array, Array]:
    """Encodes x [..., 784]; returns loc, log_scale, each [..., latent_dim]."""
    h = MLP(self.hidden_sizes, self.activation, self.negative_slope,
            name='trunk')(x)
    loc = nn.Dense(self.latent_dim, name='loc')(h)
    log_scale = nn.Dense(self.latent_dim, name='log_scale')(h)
    return loc, log_scale


class BernoulliEncoder(nn.Module):
  """x -> logits of independent Bernoulli latents q(z|x).

  For discrete-latent VAEs and sigmoid belief nets (REBAR/RELAX's nonlinear
  model is 784-200-200 tanh to 200 Bernoulli units, the default here).

  Attributes:
    hidden_sizes: widths of the hidden layers; () gives a linear (logistic)
      layer.
    latent_dim: number of binary latents.
    activation: activation name (see `ACTIVATIONS`).
    negative_slope: leaky_relu's slope below 0.
  """
  hidden_sizes: Sequence[int] = (200, 200)
  latent_dim: int = 200
  activation: str = 'tanh'
  negative_slope: float = 0.01

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """Encodes x [..., 784]; returns logits [..., latent_dim]."""
    h = MLP(self.hidden_sizes, self.activation, self.negative_slope,
            name='trunk')(x)
    return nn.Dense(self.latent_dim, name='logits')(h)


class MLPDecoder(nn.Module):
  """z -> Bernoulli logits of p(x|z).

  Attributes:
    hidden_sizes: widths of the hidden layers.
    output_dim: number of pixels.
    activation: activation name (see `ACTIVATIONS`).
    output_bias_init: initializer of the output bias, e.g.
      `mean_logit_init(dataset.pixel_mean)`; None: zeros.
    negative_slope: leaky_relu's slope below 0.
  """
  hidden_sizes: Sequence[int] = (200, 200)
  output_dim: int = 784
  activation: str = 'tanh'
  output_bias_init: Initializer | None = None
  negative_slope: float = 0.01

  @nn.compact
  def __call__(self, z: Array) -> Array:
    """Decodes z [..., latent_dim] (float or 0/1); returns [..., output_dim]."""
    h = MLP(self.hidden_sizes, self.activation, self.negative_slope,
            name='trunk')(z)
    bias_init = self.output_bias_init or nn.initializers.zeros_init()
    return nn.Dense(self.output_dim, bias_init=bias_init, name='logits')(h)


def init_vae_params(key: PRNGKey, encoder: nn.Module, decoder: nn.Module,
                    x_dim: int = 784,
                    latent_dim: int | None = None) -> dict[str, Params]:
  """Initialises an encoder and a decoder.

  Args:
    key: PRNG key.
    encoder: maps x [x_dim] to the parameters of q(z|x).
    decoder: maps z [latent_dim] to the parameters of p(x|z).
    x_dim: data dimension.
    latent_dim: latent dimension; None: `encoder.latent_dim`.

  Returns:
    {'encoder': variables, 'decoder': variables}, each the result of
    `module.init`, so `encoder.apply(params['encoder'], x)` works.
  """
  if latent_dim is None:
    latent_dim = encoder.latent_dim
  enc_key, dec_key = jax.random.split(key)
  return {'encoder': _init(encoder, enc_key, jnp.zeros((1, x_dim))),
          'decoder': _init(decoder, dec_key, jnp.zeros((1, latent_dim)))}


def apply(net: nn.Module, variables_: Params, *inputs: Array) -> Any:
  """net(*inputs) with `variables_`: `net.apply(variables_, *inputs)`.

  Flax types `Module.apply` as its output or (output, updated state); without
  `mutable` it is the output (here: an array or a tuple of arrays).
  """
  return net.apply(variables_, *inputs)


def init_layers(key: PRNGKey, sizes: Sequence[int]) -> list[dict[str, Array]]:
  """Dense layers sizes[0] -> ... -> sizes[-1]: W_l ~ N(0, 1/m_l), b_l = 0.

  Layer l (m_l inputs) draws W_l with the l-th key of split(key, L).
  """
  keys = jax.random.split(key, len(sizes) - 1)
  return [{'w': jax.random.normal(k, (m, n)) / jnp.sqrt(m), 'b': jnp.zeros(n)}
          for k, m, n in zip(keys, sizes[:-1], sizes[1:])]


def variables(layers: Sequence[dict[str, Array]],
              heads: tuple[str, ...] = ('loc', 'log_scale')) -> Params:
  """Flax variables of an MLP with heads from dense layers [{'w', 'b'}].

  layers[:-1] become the trunk `MLP` (h_{l+1} = a(h_l W_l + b_l)); the last
  layer's columns are split evenly into the linear `heads` (`MLPEncoder`:
  loc, log_scale; `MLPDecoder`, `BernoulliEncoder`: logits).
  """
  w, b = layers[-1]['w'], layers[-1]['b']
  params: dict[str, Any] = {
      h: {'kernel': wh, 'bias': bh} for h, wh, bh in zip(
          heads, jnp.split(w, len(heads), -1), jnp.split(b, len(heads), -1))}
  if layers[:-1]:
    params['trunk'] = {f'hidden_{i}': {'kernel': lay['w'], 'bias': lay['b']}
                       for i, lay in enumerate(layers[:-1])}
  return {'params': params}


def hidden_sizes(variables_: Params) -> tuple[int, ...]:
  """The trunk's widths, read from an MLP-with-heads' variables."""
  trunk = variables_['params'].get('trunk', {})
  return tuple(trunk[f'hidden_{i}']['kernel'].shape[-1]
               for i in range(len(trunk)))


def num_params(tree: Any) -> int:
  """The number of scalars in a pytree of parameters."""
  return sum(int(np.size(a)) for a in jax.tree_util.tree_leaves(tree))


# Jitted: one compilation per (module, shape), instead of many op-by-op ones
# or one per call (seconds on CPU); modules are hashable static arguments.
_init = jax.jit(lambda module, key, x: module.init(key, x), static_argnums=0)


def _as_float(x: Array) -> Array:
  x = jnp.asarray(x)
  return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)
