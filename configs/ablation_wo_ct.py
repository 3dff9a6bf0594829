"""Ablation "DSRNet w/o CT": DSRNet alone on L_DSR (no DENet, no SPNet), same data and steps as default."""
from dsr_jax.configs import default


def get_config(arg=None):
  c = default.get_config(arg)
  c.model.use_denet = False
  c.model.use_spnet = False
  return c
