"""Benchmarks: compiled train steps, sampling, attention, and the PyTorch peer (peers/)."""
