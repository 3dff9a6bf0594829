"""Middlebury-30 (minus the benchmark scenes) + Lu, x8. Evaluate on Middlebury 2005 with eval_middlebury2005.py."""
from dsr_jax.configs import common


def get_config(arg=None):
  del arg
  return common.real_data('middlebury_lu', 8, crop=256)
