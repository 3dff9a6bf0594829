"""The paper-size network: C=64, F=256, T=7 DBPN stages, affinity pool 32, x4 on Middlebury + Lu.

Override the scale with --config.model.scale=8 (and data.crop to a multiple of it).
"""
from dsr_jax.configs import common


def get_config(arg=None):
  del arg
  c = common.real_data('middlebury_lu', 4, crop=128)
  c.model.stages = 7
  return c
