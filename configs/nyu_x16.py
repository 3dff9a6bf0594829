"""NYU Depth v2 (metres, DKN layout: nyu_v2/Depth/*.npy + RGB/*.jpg), x16."""
from dsr_jax.configs import common


def get_config(arg=None):
  del arg
  return common.real_data('nyu_v2', 16, crop=256)
