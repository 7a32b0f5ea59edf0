"""ldm_jax.evaluation."""
