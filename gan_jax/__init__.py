"""gan_jax: generative adversarial networks in JAX and Flax, from the theory to a DCGAN."""
