"""RGB-D-D time-of-flight depth (mm), x4."""
from dsr_jax.configs import common


def get_config(arg=None):
  del arg
  return common.real_data('rgbdd', 4, crop=128)
