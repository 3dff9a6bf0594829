"""The output contract of a depth network in train mode, which the losses, SPNet and the diagnostics read."""
from typing import Sequence

import flax
import jax


@flax.struct.dataclass
class NetOutput:
  """What `net.apply(..., train=True)` returns (a pytree, so stop_gradient and tree_map apply to it whole).

  Attributes:
    depth: (B, H, W, 1) float32, the HR depth estimate (normalised units).
    feats: T feature maps (B, H, W, C) at HR, in the compute dtype; L_A compares them and SPNet reads the last.
    sides: T side outputs (B, H, W, 1) float32, one per feature map; side supervision and L_O use them.
  """
  depth: jax.Array
  feats: Sequence[jax.Array]
  sides: Sequence[jax.Array]
