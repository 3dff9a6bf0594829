"""Ablation: cross-task transfer without affinity-space distillation (output-space L1 only)."""
from dsr_jax.configs import default


def get_config(arg=None):
  c = default.get_config(arg)
  c.loss.use_affinity = False
  return c
