"""The PyTorch/diffusers reference for the benchmarks (`python -m ldm_jax.benchmarks.peers`).

torch and diffusers are not dependencies of ldm_jax: they are imported only under this package.
Install them with `pip install torch==2.13.0 diffusers==0.42.1` (the CPU wheel; an unpinned torch
pulls a multi-GB CUDA build).
"""
