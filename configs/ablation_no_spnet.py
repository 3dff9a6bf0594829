"""Ablation: cross-task transfer without SPNet (no structure loss)."""
from dsr_jax.configs import default


def get_config(arg=None):
  c = default.get_config(arg)
  c.model.use_spnet = False
  return c
