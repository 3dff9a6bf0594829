"""Teachers that see more than the LR depth (docs/method.md, "Frozen teachers"). Training time only: DSRNet
alone ships, and predict and export refuse these networks.

`GuidedDSR` is DSRNet with a second input branch. The LR depth enters as in DSRNet: its shallow block, and
the bicubic residual added to the main and side outputs. The guide enters through its own encoder, from HR
down to the LR grid:
  - the colour-guided teacher ('guided'): the HR RGB;
  - the autoencoder ('ae', after Hong et al., CVPR 2020): the HR depth it has to reconstruct, optionally
    with the RGB beside it (`model.ae_rgb`).
The two branches are fused at the LR grid, and the fused map runs through DSRNet's own back-projection body
(`dsrnet.body_and_heads`), so the T feature maps have DSRNet's shapes, and a student's feature maps can be
compared with them one by one.

    g = Encoder(2 * guide - 1)               conv3x3 -> W at HR, then log2(s) stride-2 conv3x3 -> W: the LR grid
    x = PReLU(conv1x1([Shallow(D_lr), g] -> W))
    x = R x ResBlock_W(x);  x = PReLU(conv1x1(x -> C))
    then DSRNet from its shallow features on: body, tail + bicubic_s(D_lr), side heads

W = `model.teacher_width` and R = `model.teacher_blocks` make a wider or deeper teacher a config change;
C, F, T and s are DSRNet's (`model.channels`, `feat`, `stages`, `scale`).
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from dsr_jax.models import dsrnet
from dsr_jax.models import layers
from dsr_jax.models.denet import ResBlock

# Channels of each guide, by its batch key.
GUIDE_CHANNELS = {'rgb': 3, 'hr_depth': 1}


class GuideEncoder(nn.Module):
  """HR guides (each in [0, 1]) -> `width` channels on the LR grid, 1/scale of the input's size."""
  width: int
  scale: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, guides):
    # Inputs at [-1, 1], not [0, 1]: a zero-mean input for the first conv, as RGB and depth alike.
    parts = [2.0 * g.astype(jnp.float32) - 1.0 for g in guides]
    h = layers.PReLU(name='act_in')(layers.Conv(self.width, 3, self.dtype, name='conv_in')(parts))
    for i in range(int(self.scale).bit_length() - 1):  # log2(s) halvings: HR -> LR
      h = layers.PReLU(name=f'act_{i}')(layers.Conv(self.width, 3, self.dtype, stride=2, name=f'down_{i}')(h))
    return h


class GuidedDSR(nn.Module):
  """Inputs: LR depth (B, h, w, 1) and the guides named by `guides` (B, s*h, s*w, c each), in that order.

  Same output contract as DSRNet: a NetOutput with train=True (feats: T x (B, H, W, C)), else the depth.
  """
  scale: int = 4
  channels: int = 64
  feat: int = 256
  stages: int = 4
  width: int = 32
  blocks: int = 2
  guides: tuple = ('rgb',)  # batch keys, in the order __call__ takes them after the LR
  residual: bool = True
  side_residual: bool = True
  impl: str = 'polyphase'
  dtype: Any = jnp.float32

  def __post_init__(self):
    dsrnet.validate(scale=self.scale, channels=self.channels, feat=self.feat, stages=self.stages, impl=self.impl)
    super().__post_init__()

  def input_keys(self) -> tuple:
    """The batch keys of its positional inputs (models.input_keys)."""
    return ('lr_depth',) + tuple(self.guides)

  def receptive_margin(self) -> int:
    """LR pixels of context: DSRNet's 6T, the residual blocks at the LR grid (2 each) and the fusion and
    encoder (under 2 LR pixels together)."""
    return 6 * int(self.stages) + 2 * int(self.blocks) + 2

  def dummy_inputs(self, lr_size: int, scale: int) -> tuple:
    hr = lr_size * scale
    return (jnp.zeros((1, lr_size, lr_size, 1)),) + tuple(
        jnp.zeros((1, hr, hr, GUIDE_CHANNELS[k])) for k in self.guides)

  @nn.compact
  def __call__(self, lr, *guides, train: bool = False):
    if len(guides) != len(self.guides):
      raise ValueError(f'GuidedDSR: expected the LR and {len(self.guides)} guides {self.guides}, '
                       f'got {len(guides)}')
    x = layers.Shallow(self.feat, self.channels, self.dtype, name='shallow')(lr)
    g = GuideEncoder(self.width, self.scale, self.dtype, name='guide')(guides)
    x = layers.PReLU(name='fuse_act')(layers.Conv(self.width, 1, self.dtype, name='fuse')([x, g]))
    for r in range(self.blocks):
      x = ResBlock(self.width, self.dtype, name=f'block_{r}')(x)
    x = layers.PReLU(name='to_body_act')(layers.Conv(self.channels, 1, self.dtype, name='to_body')(x))
    return dsrnet.body_and_heads(self, x, lr, train)
