"""Inference: device and precision selection, stateless tiling, the Upscaler engine."""
