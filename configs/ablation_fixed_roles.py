"""Ablation: fixed roles, DENet is always the teacher (no role exchange)."""
from dsr_jax.configs import default


def get_config(arg=None):
  c = default.get_config(arg)
  c.train.roles = 'fixed_denet'
  return c
