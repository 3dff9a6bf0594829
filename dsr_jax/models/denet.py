"""DENet: HR RGB -> depth (monocular depth estimation), the training-time partner of DSRNet."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from dsr_jax.models import dsrnet
from dsr_jax.models import layers
from dsr_jax.models.output import NetOutput


class ResBlock(nn.Module):
  channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = layers.Conv(self.channels, 3, self.dtype)(x)
    return x + layers.Conv(self.channels, 3, self.dtype)(layers.PReLU()(y))


class DENet(nn.Module):
  """Input (B, H, W, 3) RGB in [0, 1]. Same output convention as DSRNet (a NetOutput when train=True).

  depth_input (docs/method.md, rule 5, `model.teacher_input='rgbd'`): DENet also sees the bicubic-upsampled
  LR depth (B, H/s, W/s, 1), as a fourth input channel; with `residual` that upsampling is also added to its
  main and side outputs, as DSRNet does. Without depth_input the LR argument is ignored.
  """
  channels: int = 64
  feat: int = 256
  stages: int = 4
  blocks: int = 2
  dtype: Any = jnp.float32
  depth_input: bool = False
  residual: bool = False
  scale: int = 4

  def __post_init__(self):
    dsrnet.validate(channels=self.channels, feat=self.feat, stages=self.stages, de_blocks=self.blocks)
    super().__post_init__()

  def receptive_margin(self) -> int:
    """Pixels of context it needs: the shallow block (2), two 3x3 convs per residual block, the output conv."""
    return 3 + 2 * int(self.stages) * int(self.blocks)

  def dummy_inputs(self, lr_size: int, scale: int) -> tuple:
    hr = lr_size * scale
    return jnp.zeros((1, hr, hr, 3)), jnp.zeros((1, lr_size, lr_size, 1))

  @nn.compact
  def __call__(self, rgb, lr=None, train: bool = False):
    base = None
    if self.depth_input:
      base = dsrnet.bicubic_upsample(lr.astype(jnp.float32), self.scale)
      rgb = jnp.concatenate([rgb.astype(jnp.float32), base], axis=-1)
    x = layers.Shallow(self.feat, self.channels, self.dtype, name='shallow')(rgb)
    feats = []
    for n in range(self.stages):
      for r in range(self.blocks):
        x = ResBlock(self.channels, self.dtype, name=f'stage_{n}_block_{r}')(x)
      feats.append(x)
    out = layers.Conv(1, 3, self.dtype, name='tail')(feats).astype(jnp.float32)  # concatenated feats
    add = base is not None and self.residual
    if add:
      out = out + base
    if not train:
      return out
    sides = [layers.SideHead(self.channels, self.dtype, name=f'side_{n}')(f).astype(jnp.float32)
             for n, f in enumerate(feats)]
    if add:
      sides = [d + base for d in sides]
    return NetOutput(depth=out, feats=tuple(feats), sides=tuple(sides))
