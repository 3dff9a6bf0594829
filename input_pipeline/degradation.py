"""The LR degradations of training and evaluation.

Two families:
- the protocol's: MATLAB-style antialiased bicubic downsampling (dsr_jax.resize, which also documents the
  protocol it reproduces), optionally 'nearest' or 'box', plus optional Gaussian noise (data.degrade,
  data.noise_sigma). The paper's tables are measured on this LR, and DSRNet trained on it alone learns to
  invert that one blur;
- the LR a user actually has (docs/method.md, "Degradations"): `Random` draws, for every training crop, a
  resampler as image libraries implement it (with or without antialiasing, area, point sampling) at a random
  sub-pixel offset, an optional blur before it, Gaussian and depth-proportional (time-of-flight-like) noise,
  quantisation to the grid of a saved 8- or 16-bit file, and holes filled the way predict fills them.
  `EVAL_DEGRADATIONS` are fixed members of that family, one per row of the robustness table.

Every function works on one normalised depth map (H, W) in [0, about 1] and a `np.random.Generator`, so a
grain RandomMap gives the same LR for the same seed whatever the worker count.
"""
import dataclasses
import functools
import math

import numpy as np
from scipy import ndimage

from dsr_jax.errors import ConfigError
from dsr_jax.resize import METHODS  # pylint: disable=unused-import
from dsr_jax.resize import SCALES  # pylint: disable=unused-import
from dsr_jax.resize import downsample  # pylint: disable=unused-import
from dsr_jax.resize import resize  # pylint: disable=unused-import
from dsr_jax.resize import resize_weights  # pylint: disable=unused-import
from dsr_jax.resize import upsample_bicubic  # pylint: disable=unused-import

# data.degrade: one of the protocol's fixed resamplers, or 'random' (the mixture of data.random.*).
DEGRADE_CHOICES = METHODS + ('random',)

# Downscaling as common libraries do it. '_noaa' kernels are not widened by the factor (OpenCV INTER_CUBIC /
# INTER_LINEAR, torch interpolate without antialias): they alias. 'bicubic'/'bilinear' are widened (MATLAB,
# PIL). 'area' averages the s x s block (OpenCV INTER_AREA, PIL BOX). 'point' keeps one pixel of every block
# (OpenCV INTER_NEAREST keeps the top-left one, PIL NEAREST the one right of and below the centre).
RESAMPLERS = ('bicubic', 'bicubic_noaa', 'bilinear', 'bilinear_noaa', 'area', 'point')
_LEVELS = 255.0  # noise sigmas are given in 8-bit levels of the normalised range


def _cubic(x):
  ax = np.abs(x)
  return ((1.5 * ax ** 3 - 2.5 * ax ** 2 + 1.0) * (ax <= 1) +
          (-0.5 * ax ** 3 + 2.5 * ax ** 2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2)))


def _linear(x):
  return np.maximum(0.0, 1.0 - np.abs(x))


def _mirror(idx, n: int):
  """Symmetric padding with the edge pixel repeated (MATLAB imresize's, scipy 'reflect')."""
  idx = np.mod(idx, 2 * n)
  return np.where(idx >= n, 2 * n - 1 - idx, idx)


@functools.lru_cache(maxsize=512)
def resample_matrix(n: int, s: int, resampler: str, offset: float = 0.0) -> np.ndarray:
  """The (ceil(n/s), n) matrix of one axis of `resampler` at a sub-pixel `offset` (input pixels).

  Output pixel i is centred on input coordinate (i + 0.5) s - 0.5 + offset (pixel centres at integers), the
  MATLAB/PIL/OpenCV convention for offset 0. For 'point', `offset` is rounded to a pixel of the block:
  offset -(s-1)/2 keeps the top-left pixel (OpenCV), +0.5 (even s) the one PIL keeps.
  """
  if resampler not in RESAMPLERS:
    raise ConfigError(f'resampler: expected one of {RESAMPLERS}, got {resampler!r}')
  m = -(-n // s)
  centre = (np.arange(m) + 0.5) * s - 0.5 + offset
  mat = np.zeros((m, n), np.float64)
  rows = np.arange(m)
  if resampler == 'point':
    np.add.at(mat, (rows, _mirror(np.floor(centre + 0.5).astype(np.int64), n)), 1.0)
    mat.setflags(write=False)
    return mat
  if resampler == 'area':
    # Exact overlap of each input pixel [j - 0.5, j + 0.5] with the output's footprint [c - s/2, c + s/2].
    lo, hi = centre - s / 2, centre + s / 2
    taps = np.arange(int(math.floor(lo.min())) - 1, int(math.ceil(hi.max())) + 2)
    w = np.clip(np.minimum(hi[:, None], taps[None] + 0.5) - np.maximum(lo[:, None], taps[None] - 0.5), 0, None)
  else:
    kernel, support = (_cubic, 2.0) if resampler.startswith('bicubic') else (_linear, 1.0)
    stretch = 1.0 if resampler.endswith('_noaa') else float(s)
    reach = support * stretch
    taps = np.arange(int(math.floor(centre.min() - reach)) - 1, int(math.ceil(centre.max() + reach)) + 2)
    w = kernel((taps[None] - centre[:, None]) / stretch)
  w = w / w.sum(axis=1, keepdims=True)
  cols = np.broadcast_to(_mirror(taps, n)[None], w.shape)
  np.add.at(mat, (np.broadcast_to(rows[:, None], w.shape), cols), w)
  mat.setflags(write=False)
  return mat


def resample(depth, s: int, resampler: str, offset=(0.0, 0.0)) -> np.ndarray:
  """Downscales a (H, W) map by s with `resampler` at sub-pixel `offset` (dy, dx); float64 out."""
  x = np.asarray(depth, np.float64)
  mh = resample_matrix(x.shape[0], int(s), resampler, float(offset[0]))
  mw = resample_matrix(x.shape[1], int(s), resampler, float(offset[1]))
  return mh @ x @ mw.T


def quantize(lr, bits: int):
  """Rounds to the grid of a `bits`-bit file holding the normalised range [0, 1] (clipped to it)."""
  levels = float(2 ** bits - 1)
  return np.round(np.clip(lr, 0.0, 1.0) * levels) / levels


def fill_invalid(depth: np.ndarray, ok: np.ndarray) -> np.ndarray:
  """Replaces pixels where `ok` is False by the nearest valid value (0 when nothing is valid)."""
  if ok.all():
    return depth
  if not ok.any():
    return np.zeros_like(depth)
  idx = ndimage.distance_transform_edt(~ok, return_distances=False, return_indices=True)
  return depth[idx[0], idx[1]]


@dataclasses.dataclass(frozen=True)
class Fixed:
  """One degradation, every part fixed: the rows of the robustness table (and the parts `Random` draws).

  Attributes:
    resampler: one of RESAMPLERS.
    offset: sub-pixel offset (dy, dx) in HR pixels (see resample_matrix).
    blur: std in HR pixels of a Gaussian blur before resampling (0 = none).
    noise: std of additive Gaussian noise, in 8-bit levels of the normalised range.
    tof: std of depth-proportional noise, as a fraction of the depth (time-of-flight-like).
    bits: quantise to an 8- or 16-bit file's grid (0 = keep float).
    holes: fraction of LR pixels dropped, then filled with the nearest valid value as predict fills them.
  """
  resampler: str = 'bicubic'
  offset: tuple = (0.0, 0.0)
  blur: float = 0.0
  noise: float = 0.0
  tof: float = 0.0
  bits: int = 0
  holes: float = 0.0

  def apply(self, hr, s: int, rng: np.random.Generator) -> np.ndarray:
    """HR (H, W) normalised and hole-free -> LR (ceil(H/s), ceil(W/s)) float32."""
    x = np.asarray(hr, np.float64)
    if self.blur > 0:
      x = ndimage.gaussian_filter(x, self.blur, mode='reflect', truncate=3.0)
    if self.resampler == 'bicubic' and self.offset == (0.0, 0.0):
      lr = downsample(x, s, 'bicubic')  # the protocol's own LR, to the bit
    else:
      lr = resample(x, s, self.resampler, self.offset)
    if self.tof > 0:
      lr = lr * (1.0 + self.tof * rng.standard_normal(lr.shape))
    if self.noise > 0:
      lr = lr + (self.noise / _LEVELS) * rng.standard_normal(lr.shape)
    if self.bits:
      lr = quantize(lr, self.bits)
    if self.holes > 0:
      ok = rng.random(lr.shape) >= self.holes
      # A saved file marks a hole with 0: a quantised value of 0 is one too.
      ok &= lr > 0
      lr = fill_invalid(lr, ok)
    return lr.astype(np.float32)


PROTOCOL = 'protocol'
# The robustness table's rows: what a user's LR file may be. Each is saved to an 8-bit grid, as a user's PNG
# is (middlebury2005's depth is 8-bit disparity, so its 8-bit grid is the integers). 'nearest' and 'point' are
# the two point-sampling conventions (PIL, OpenCV). None of these is chosen for the network's sake.
EVAL_DEGRADATIONS = {
    'bicubic_u8': Fixed('bicubic', bits=8),
    'bicubic_noaa_u8': Fixed('bicubic_noaa', bits=8),
    'bilinear_u8': Fixed('bilinear', bits=8),
    'bilinear_noaa_u8': Fixed('bilinear_noaa', bits=8),
    'area_u8': Fixed('area', bits=8),
    'nearest_u8': Fixed('point', offset=(0.5, 0.5), bits=8),
    'point_u8': Fixed('point', offset=(-1e9, -1e9), bits=8),  # resolved per scale: the top-left pixel
    'noise1_u8': Fixed('bicubic', noise=1.0, bits=8),
    'noise2_u8': Fixed('bicubic', noise=2.0, bits=8),
    'tof1_u8': Fixed('bicubic', tof=0.01, bits=8),
}
EVAL_CHOICES = (PROTOCOL,) + tuple(EVAL_DEGRADATIONS)
EVAL_SEED = 0  # the noise of the named degradations, whatever the run's seed


def eval_degradation(name: str, s: int) -> Fixed:
  """The named evaluation degradation at scale s."""
  if name not in EVAL_DEGRADATIONS:
    raise ConfigError(f'eval.degradation={name!r}: expected one of {", ".join(EVAL_CHOICES)}')
  deg = EVAL_DEGRADATIONS[name]
  if deg.resampler == 'point' and deg.offset[0] < -1e8:
    deg = dataclasses.replace(deg, offset=(-(s - 1) / 2,) * 2)
  return deg


def parse_names(value: str, field: str) -> tuple:
  """A comma list of evaluation degradation names ('robust' = every row but the protocol's)."""
  names = []
  for token in str(value).split(','):
    token = token.strip()
    if not token:
      continue
    if token == 'robust':
      names += list(EVAL_DEGRADATIONS)
    elif token in EVAL_CHOICES:
      names.append(token)
    else:
      raise ConfigError(f'{field}={value!r}: {token!r} is not one of {", ".join(EVAL_CHOICES)} or "robust"')
  return tuple(dict.fromkeys(names))


def _pair(v, field):
  try:
    lo, hi = (float(a) for a in v)
  except (TypeError, ValueError):
    raise ConfigError(f'{field}={v!r}: expected a (low, high) pair of numbers') from None
  if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi):
    raise ConfigError(f'{field}={v!r}: expected finite 0 <= low <= high')
  return lo, hi


def _prob(v, field):
  if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
    raise ConfigError(f'{field}={v!r}: expected a probability in [0, 1]')
  return float(v)


@dataclasses.dataclass(frozen=True)
class Random:
  """A degradation drawn per crop (data.degrade='random'); fields as data.random.* documents them."""
  clean: float = 0.25
  resamplers: tuple = RESAMPLERS
  offset: float = 0.5
  blur: float = 0.25
  blur_sigma: tuple = (0.3, 1.5)
  noise: float = 0.5
  noise_sigma: tuple = (0.2, 3.0)
  tof: float = 0.2
  tof_sigma: tuple = (0.002, 0.02)
  bits8: float = 0.5
  bits16: float = 0.2
  holes: float = 0.1
  hole_frac: tuple = (0.0, 0.03)

  @classmethod
  def from_config(cls, r) -> 'Random':
    """Checks data.random.* and builds the spec; ConfigError names the field."""
    f = lambda k: f'data.random.{k}'
    names = tuple(str(x).strip() for x in (r.resamplers.split(',') if isinstance(r.resamplers, str)
                                              else r.resamplers))
    if not names or any(n not in RESAMPLERS for n in names):
      raise ConfigError(f'{f("resamplers")}={r.resamplers!r}: expected a non-empty list of {", ".join(RESAMPLERS)}')
    if isinstance(r.offset, bool) or not isinstance(r.offset, (int, float)) or not 0 <= r.offset <= 2:
      raise ConfigError(f'{f("offset")}={r.offset!r}: expected a number of HR pixels in [0, 2]')
    spec = cls(
        clean=_prob(r.clean, f('clean')), resamplers=names, offset=float(r.offset),
        blur=_prob(r.blur, f('blur')), blur_sigma=_pair(r.blur_sigma, f('blur_sigma')),
        noise=_prob(r.noise, f('noise')), noise_sigma=_pair(r.noise_sigma, f('noise_sigma')),
        tof=_prob(r.tof, f('tof')), tof_sigma=_pair(r.tof_sigma, f('tof_sigma')),
        bits8=_prob(r.bits8, f('bits8')), bits16=_prob(r.bits16, f('bits16')),
        holes=_prob(r.holes, f('holes')), hole_frac=_pair(r.hole_frac, f('hole_frac')))
    if spec.bits8 + spec.bits16 > 1:
      raise ConfigError(f'data.random.bits8 + bits16 = {spec.bits8 + spec.bits16}: expected <= 1')
    if spec.hole_frac[1] >= 1:
      raise ConfigError(f'{f("hole_frac")}={r.hole_frac!r}: expected a high end below 1')
    return spec

  def draw(self, s: int, rng: np.random.Generator) -> Fixed:
    """One degradation; the draws happen in a fixed order, so the same rng state gives the same one."""
    u = rng.random(8)
    if u[0] < self.clean:
      return Fixed()
    resampler = self.resamplers[int(rng.integers(len(self.resamplers)))]
    if resampler == 'point':
      offset = tuple(float(k) - (s - 1) / 2 for k in rng.integers(0, s, size=2))
    else:
      offset = tuple(float(v) for v in rng.uniform(-self.offset, self.offset, size=2))
    lohi = lambda p: float(rng.uniform(*p))
    blur = lohi(self.blur_sigma) if u[1] < self.blur else 0.0
    noise = lohi(self.noise_sigma) if u[2] < self.noise else 0.0
    tof = lohi(self.tof_sigma) if u[3] < self.tof else 0.0
    bits = 8 if u[4] < self.bits8 else 16 if u[4] < self.bits8 + self.bits16 else 0
    holes = lohi(self.hole_frac) if u[5] < self.holes else 0.0
    return Fixed(resampler, offset, blur, noise, tof, bits, holes)


def check_config(d) -> None:
  """data.degrade and data.random.* (when 'random' is chosen); ConfigError names the field."""
  if d.degrade not in DEGRADE_CHOICES:
    raise ConfigError(f'data.degrade: expected one of {DEGRADE_CHOICES}, got {d.degrade!r}')
  if d.degrade == 'random':
    Random.from_config(d.random)
    if d.noise_sigma > 0:
      raise ConfigError("data.noise_sigma > 0 with data.degrade='random': the mixture draws its own noise "
                        '(data.random.noise*); expected 0')
  parse_names(d.val_degradations, 'data.val_degradations')


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
  # jax only here: grain's worker processes import this module, and need no jax.
  import jax  # pylint: disable=g-import-not-at-top  (see above)
  return lr + sigma * jax.random.normal(rng, lr.shape, lr.dtype)
