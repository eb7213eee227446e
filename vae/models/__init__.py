"""Models: one Flax MLP (`networks`) and models of three distributions each.

`image_vae` (Gaussian latents, Bernoulli pixels), `sigmoid_belief_net`
(Bernoulli latents), `gaussian_vae` (real-valued data); each is a
`vae.model.Model` (`prior`, `encoder`, `decoder`), made by its `make`.
"""
