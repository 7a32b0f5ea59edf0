"""ldm_jax.models."""
