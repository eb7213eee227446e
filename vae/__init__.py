"""vae: variational autoencoders and Monte Carlo gradient estimators in JAX."""

__version__ = '0.1.0'
