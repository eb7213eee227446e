"""Analyses behind the image experiments: numbers only, no files.

vae_gradients: variance, SNR and direction of VAE gradient estimators along
training; minibatch_noise: minibatch against Monte Carlo noise (law of total
variance); discrete_latents: Bernoulli-latent models trained with each
estimator; image_inference: per-image q fits, IS bounds and the gaps;
critical_batch: the critical batch from training curves; posterior_collapse:
I_q(x; z) and the ELBO-surgery split; flexible_exact: quadrature checks of
the flexible families; run_comparison: trained runs over seeds and paired
per-image differences.
"""
