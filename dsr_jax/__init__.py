"""dsr_jax: single depth-map super-resolution with cross-task knowledge transfer, in JAX/Flax."""
__version__ = "0.1.0"
