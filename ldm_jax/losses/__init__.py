"""ldm_jax.losses."""
