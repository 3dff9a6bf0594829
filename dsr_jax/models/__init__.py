"""Model registry: the three networks built from a config's `model` section."""
import dataclasses
from typing import Any

import jax.numpy as jnp

from dsr_jax.errors import ConfigError
from dsr_jax.models.denet import DENet
from dsr_jax.models.dsrnet import DSRNet
from dsr_jax.models.dsrnet import validate
from dsr_jax.models.spnet import SPNet

NETS = ('dsr', 'denet', 'spnet')
TEACHER_INPUTS = ('rgb', 'rgbd')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class Models:
  dsr: DSRNet
  denet: Any  # DENet or None ("w/o CT")
  spnet: Any  # SPNet or None


def compute_dtype(model_cfg):
  if model_cfg.dtype not in DTYPES:
    raise ConfigError(f'model.dtype={model_cfg.dtype!r}: expected one of {", ".join(DTYPES)}')
  return DTYPES[model_cfg.dtype]


def build(model_cfg) -> Models:
  """Builds the networks; raises ConfigError naming the bad field."""
  dt = compute_dtype(model_cfg)
  validate(scale=model_cfg.scale, channels=model_cfg.channels, feat=model_cfg.feat,
           stages=model_cfg.stages, de_blocks=model_cfg.de_blocks, impl=model_cfg.bp_impl)
  if model_cfg.teacher_input not in TEACHER_INPUTS:
    raise ConfigError(f'model.teacher_input={model_cfg.teacher_input!r}: expected one of '
                      f'{", ".join(map(repr, TEACHER_INPUTS))}')
  dsr = DSRNet(scale=model_cfg.scale, channels=model_cfg.channels, feat=model_cfg.feat,
               stages=model_cfg.stages, residual=model_cfg.residual, side_residual=model_cfg.side_residual,
               impl=model_cfg.bp_impl, dtype=dt)
  use_de = model_cfg.use_denet
  rgbd = model_cfg.teacher_input == 'rgbd'
  denet = DENet(channels=model_cfg.channels, feat=model_cfg.feat, stages=model_cfg.stages,
                blocks=model_cfg.de_blocks, dtype=dt, depth_input=rgbd,
                residual=rgbd and model_cfg.teacher_residual,
                scale=model_cfg.scale) if use_de else None
  spnet = SPNet(channels=model_cfg.channels, dtype=dt) if use_de and model_cfg.use_spnet else None
  return Models(dsr, denet, spnet)
