"""DSRNet: LR depth -> HR depth, built from DBPN back-projection units (the product; runs alone at test)."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from dsr_jax import resize
from dsr_jax.models import layers
from dsr_jax.models.output import NetOutput


def bicubic_upsample(x, scale: int):
  # The global residual is the same MATLAB-style bicubic as the bicubic baseline, so a zero output conv
  # reproduces the baseline exactly.
  return resize.upsample_bicubic(x, scale, xp=jnp)


class DSRNet(nn.Module):
  """Input (B, h, w, 1) LR depth; output (B, s*h, s*w, 1).

  With train=True it returns a NetOutput: depth, feats (the T HR feature maps F^n, HR layout, C channels)
  and sides (the T side outputs D^n_sr). With train=False it returns only the depth map.
  """
  scale: int = 4
  channels: int = 64
  feat: int = 256
  stages: int = 4
  residual: bool = True
  side_residual: bool = True  # side outputs carry the same bicubic residual (docs/method.md, rule 1)
  impl: str = 'polyphase'
  dtype: Any = jnp.float32

  def __post_init__(self):
    validate(scale=self.scale, channels=self.channels, feat=self.feat, stages=self.stages, impl=self.impl)
    super().__post_init__()

  def receptive_margin(self) -> int:
    """LR pixels on each side of an output pixel's LR position that can change it: a bound the tiled
    inference (evaluate.run_windows) must give as context; derived in dsr_jax/evaluate.py's docstring."""
    return 6 * int(self.stages)

  def dummy_inputs(self, lr_size: int, scale: int) -> tuple:
    del scale  # its own
    return (jnp.zeros((1, lr_size, lr_size, 1)),)

  @nn.compact
  def __call__(self, lr, train: bool = False):
    x = layers.Shallow(self.feat, self.channels, self.dtype, name='shallow')(lr)
    return body_and_heads(self, x, lr, train)


def body_and_heads(net, x, lr, train: bool):
  """DSRNet from its LR features `x` on: the back-projection body, the output conv with the bicubic residual
  of `lr`, and (train) the side heads. Called inside `net`'s compact __call__, so the layers are `net`'s;
  the guided teachers (guided.py) share it, which gives their feature maps DSRNet's shapes."""
  s, c = net.scale, net.channels
  kw = dict(channels=c, scale=s, impl=net.impl, dtype=net.dtype)
  h = layers.UpProjection(**kw, name='up_0')(x)
  feats = [h]
  for n in range(1, net.stages):
    h = layers.UpProjection(**kw, name=f'up_{n}')(layers.DownProjection(**kw, name=f'down_{n}')(h))
    feats.append(h)
  if net.impl == 'polyphase':
    feats = [layers.groups_to_hr(f, s) for f in feats]
  out = layers.Conv(1, 3, net.dtype, name='tail')(feats)  # = conv of the concatenated feats
  out = out.astype(jnp.float32)
  base = bicubic_upsample(lr.astype(jnp.float32), s) if net.residual else None
  if base is not None:
    out = out + base
  if not train:
    return out
  sides = [layers.SideHead(c, net.dtype, name=f'side_{n}')(f).astype(jnp.float32)
           for n, f in enumerate(feats)]
  if base is not None and net.side_residual:
    sides = [d + base for d in sides]
  return NetOutput(depth=out, feats=tuple(feats), sides=tuple(sides))


def validate(*, scale=None, channels=None, feat=None, stages=None, de_blocks=None, impl=None,
             prefix='model.'):
  """Raises ConfigError naming the field and the allowed values."""
  if scale is not None:
    layers.check_scale(scale, prefix + 'scale')
  for name, v in (('channels', channels), ('feat', feat), ('stages', stages), ('de_blocks', de_blocks)):
    if v is not None:
      layers.check_positive(prefix + name, v)
  if impl is not None and impl not in layers.BP_IMPLS:
    raise layers.ConfigError(f'{prefix}bp_impl={impl!r}: expected one of {", ".join(layers.BP_IMPLS)}')
