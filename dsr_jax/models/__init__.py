"""Model registry: the networks by name, built from a config's `model` section.

Each registered network is a Flax module that exports
  `dummy_inputs(lr_size, scale)`  the positional inputs `init` traces it with (LR side `lr_size`);
  `receptive_margin()`            the input pixels of context an output pixel depends on (tiled inference);
and, called with `train=True`, returns a `NetOutput` (depth, feats, sides): the contract the losses read.
`model.name` picks the SR network (the product: the one network that runs at test time); the cross-task
partners are the registry's 'denet' and 'spnet' (model.use_denet, model.use_spnet). Adding a network is one
`@register` builder here and `--config.model.name=<it>`.
"""
import dataclasses
from typing import Any, Callable

import jax.numpy as jnp

from dsr_jax.errors import ConfigError
from dsr_jax.models.denet import DENet
from dsr_jax.models.dsrnet import DSRNet
from dsr_jax.models.dsrnet import validate
from dsr_jax.models.output import NetOutput  # pylint: disable=unused-import
from dsr_jax.models.spnet import SPNet

NETS = ('dsr', 'denet', 'spnet')
TEACHER_INPUTS = ('rgb', 'rgbd')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
REGISTRY: dict[str, Callable] = {}  # name -> builder(model_cfg, dtype) -> module
PARTNERS = ('denet', 'spnet')  # registry entries that are not SR networks


def register(name: str):
  def add(builder):
    REGISTRY[name] = builder
    return builder
  return add


@dataclasses.dataclass(frozen=True)
class Models:
  dsr: Any  # the SR network (model.name)
  denet: Any  # DENet or None ("w/o CT")
  spnet: Any  # SPNet or None

  def nets(self) -> dict:
    """{'dsr': module, 'denet': ..., 'spnet': ...} for the networks that exist, in NETS order."""
    return {k: getattr(self, k) for k in NETS if getattr(self, k) is not None}


def compute_dtype(model_cfg):
  if model_cfg.dtype not in DTYPES:
    raise ConfigError(f'model.dtype={model_cfg.dtype!r}: expected one of {", ".join(DTYPES)}')
  return DTYPES[model_cfg.dtype]


def sr_names() -> tuple:
  return tuple(n for n in REGISTRY if n not in PARTNERS)


@register('dsrnet')
def _dsrnet(m, dt):
  return DSRNet(scale=m.scale, channels=m.channels, feat=m.feat, stages=m.stages, residual=m.residual,
                side_residual=m.side_residual, impl=m.bp_impl, dtype=dt)


@register('denet')
def _denet(m, dt):
  rgbd = m.teacher_input == 'rgbd'
  return DENet(channels=m.channels, feat=m.feat, stages=m.stages, blocks=m.de_blocks, dtype=dt,
               depth_input=rgbd, residual=rgbd and m.teacher_residual, scale=m.scale)


@register('spnet')
def _spnet(m, dt):
  return SPNet(channels=m.channels, dtype=dt)


def check_name(name: str) -> None:
  if name not in sr_names():
    hint = '; the bicubic baseline is --config.eval.baseline=bicubic' if name == 'bicubic' else ''
    raise ConfigError(f'model.name={name!r}: expected one of {", ".join(map(repr, sr_names()))}{hint}')


def build(model_cfg) -> Models:
  """Builds the networks; raises ConfigError naming the bad field."""
  dt = compute_dtype(model_cfg)
  check_name(model_cfg.name)
  validate(scale=model_cfg.scale, channels=model_cfg.channels, feat=model_cfg.feat,
           stages=model_cfg.stages, de_blocks=model_cfg.de_blocks, impl=model_cfg.bp_impl)
  if model_cfg.teacher_input not in TEACHER_INPUTS:
    raise ConfigError(f'model.teacher_input={model_cfg.teacher_input!r}: expected one of '
                      f'{", ".join(map(repr, TEACHER_INPUTS))}')
  dsr = REGISTRY[model_cfg.name](model_cfg, dt)
  use_de = model_cfg.use_denet
  denet = REGISTRY['denet'](model_cfg, dt) if use_de else None
  spnet = REGISTRY['spnet'](model_cfg, dt) if use_de and model_cfg.use_spnet else None
  return Models(dsr, denet, spnet)
