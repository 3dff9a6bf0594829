"""The LR degradation of training and evaluation: MATLAB-style bicubic downsampling (dsr_jax.resize, which
also documents the protocol it reproduces) and optional Gaussian noise."""
import numpy as np

from dsr_jax.resize import METHODS  # pylint: disable=unused-import
from dsr_jax.resize import SCALES  # pylint: disable=unused-import
from dsr_jax.resize import downsample  # pylint: disable=unused-import
from dsr_jax.resize import resize  # pylint: disable=unused-import
from dsr_jax.resize import resize_weights  # pylint: disable=unused-import
from dsr_jax.resize import upsample_bicubic  # pylint: disable=unused-import


def add_noise(lr, sigma: float, rng):
  """Adds zero-mean Gaussian noise of std `sigma` (same units as `lr`) for noisy DSR.

  Args:
    lr: numpy or jax array.
    sigma: noise std; 0 returns `lr` unchanged.
    rng: a `np.random.Generator` (host pipeline) or a JAX PRNG key (on device).

  Returns:
    Array like `lr`.
  """
  if sigma == 0:
    return lr
  if isinstance(rng, np.random.Generator):
    return (lr + sigma * rng.standard_normal(lr.shape)).astype(lr.dtype)
  import jax  # pylint: disable=g-import-not-at-top
  return lr + sigma * jax.random.normal(rng, lr.shape, lr.dtype)
