"""RGB-D-D time-of-flight depth (mm), x8."""
from dsr_jax.configs import common


def get_config(arg=None):
  del arg
  return common.real_data('rgbdd', 8, crop=256)
