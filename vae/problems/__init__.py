"""Problems with exact answers: Gaussian costs, the linear-Gaussian model,
mixtures, amortization, importance sampling, a VAE density."""
