"""vae: variational autoencoders and Monte Carlo gradient estimators in JAX."""

__version__ = '0.1.0'

from vae.comparison import compare as compare  # The public entry point.
