"""SPNet: predicts the scene-structure (gradient) map from both nets' uncertainty-weighted features."""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dsr_jax.models import dsrnet
from dsr_jax.models import layers


class SPNet(nn.Module):
  channels: int = 64
  dtype: Any = jnp.float32

  def __post_init__(self):
    dsrnet.validate(channels=self.channels)
    super().__post_init__()

  def receptive_margin(self) -> int:
    return 5  # five 3x3 convs

  def dummy_inputs(self, lr_size: int, scale: int) -> tuple:
    hr = lr_size * scale
    f, d = jnp.zeros((1, hr, hr, self.channels)), jnp.zeros((1, hr, hr, 1))
    return f, f, d, d, d

  @nn.compact
  def __call__(self, f_sr, f_de, d_sr, d_de, d_hr, train: bool = False):
    del train  # no train/eval difference; accepted so that every network is initialised by one call
    c = self.channels
    u_sr = jax.nn.sigmoid(layers.Conv(c, 1, self.dtype, name='u_sr')(d_sr - d_hr))
    u_de = jax.nn.sigmoid(layers.Conv(c, 1, self.dtype, name='u_de')(d_de - d_hr))
    x = [f_sr.astype(self.dtype) * (1 + u_sr), f_de.astype(self.dtype) * (1 + u_de)]  # concatenated
    for i in range(4):
      x = layers.PReLU(name=f'act_{i}')(layers.Conv(c, 3, self.dtype, name=f'conv_{i}')(x))
    return layers.Conv(1, 3, self.dtype, name='conv_4')(x).astype(jnp.float32)
