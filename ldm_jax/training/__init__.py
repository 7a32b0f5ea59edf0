"""ldm_jax.training."""
