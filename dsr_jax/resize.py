"""MATLAB-style `imresize`: the one resampling of the LR degradation, the bicubic baseline and DSRNet's
residual base. It lives outside input_pipeline because the models and evaluation use it too.

`downsample(x, s)` is MATLAB's `imresize(x, 1/s, 'bicubic')` and `upsample_bicubic(x, s)` is
`imresize(x, s, 'bicubic')`. Both are separable linear maps, so each is two small matrices built once in
numpy and cached per (in_size, scale, method). On the host they are applied as banded gathers + sums (no
BLAS threads); with `xp=jax.numpy` as two dense einsums that trace under `jax.jit` (the matrices become
constants), which lets the train step make the LR on device from the HR crop with the host's numbers.

MATLAB semantics reproduced (imresize.m, `contributions`):
- cubic kernel with a = -0.5 (Keys), support 4; when downsampling with antialiasing the kernel is
  stretched by 1/scale: h(x) = scale * cubic(scale * x), support 4 / scale;
- output length ceil(in * scale) with scale = 1/s exactly (no crop to a multiple of s);
- coordinate map u = x / scale + 0.5 * (1 - 1 / scale) (1-based output x to 1-based input u);
- taps left = floor(u - width / 2) + (0 .. ceil(width) + 1), weights normalised to sum 1 per output;
- out-of-range taps mirrored symmetrically ([1..n, n..1] repeated: edge pixel duplicated);
- 'nearest' never antialiases (MATLAB disables it for nearest); 'box' does (area average for integer s).

Middlebury 2005 protocol (tests/test_degradation.py; reproduces the paper's Bicubic MAD row to two
decimals for Art, Books, Moebius at x2/x4/x8/x16):
  GT   = PIL.Image.open('middlebury2005/depth/{scene}.bmp') as float64, 0-255;
  LR   = downsample(GT, s), float64, not rounded;
  pred = upsample_bicubic(LR, s)[:H, :W]  (already exactly s * ceil(H/s) x s * ceil(W/s) before the crop);
  pred = np.round(np.clip(pred, 0, 255))  (numpy rounds half to even; no exact .5 values occur in
         practice, so half-up gives the same numbers);
  MAD  = mean(|pred - GT|) over all pixels.
Obtained (x2/x4/x8/x16): Art 0.4775/0.9730/1.8524/3.5857, Books 0.1299/0.2906/0.5924/1.1483, Moebius
0.1322/0.2964/0.5943/1.1337, i.e. the paper's 0.48/0.97/1.85/3.59, 0.13/0.29/0.59/1.15, 0.13/0.30/0.59/1.13
after rounding to two decimals. The rounding to uint8 matters: unrounded predictions give e.g. Art x2
0.53, Books x2 0.19.

Comparison with `jax.image.scale_and_translate(method='cubic', antialias=True)`: JAX uses the Keys cubic
kernel with a = -0.5 and the same pixel-centre mapping, so interior pixels agree to float precision; at
the border JAX drops out-of-image taps and renormalises instead of mirroring, so the outermost 2 output
pixels on each side (those whose kernel, 2s input pixels of half-support, crosses the edge) differ.
"""
import functools
import math

import numpy as np

from dsr_jax.errors import ConfigError

METHODS = ('bicubic', 'nearest', 'box')
# The upsampling factors of the paper's protocols; the one definition (models, pipeline and evaluation use it).
SCALES = (2, 4, 8, 16)


def _cubic(x):
  """Keys cubic convolution kernel with a = -0.5 (MATLAB's `cubic`)."""
  ax = np.abs(x)
  ax2, ax3 = ax * ax, ax * ax * ax
  return ((1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1) +
          (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2)))


def _box(x):
  return ((x >= -0.5) & (x < 0.5)).astype(np.float64)


_KERNELS = {'bicubic': (_cubic, 4.0), 'nearest': (_box, 1.0), 'box': (_box, 1.0)}


def _check_method(method):
  if method not in METHODS:
    raise ConfigError(f'data.degrade: expected one of {METHODS}, got {method!r}')


@functools.lru_cache(maxsize=256)
def _contributions(in_size: int, scale: float, method: str) -> tuple[np.ndarray, np.ndarray]:
  """imresize.m `contributions`: (source indices, weights), both (out, taps); indices 0-based."""
  kernel, width = _KERNELS[method]
  out_size = int(math.ceil(in_size * scale))
  antialias = method != 'nearest'
  if scale < 1 and antialias:
    h = lambda x: scale * kernel(scale * x)
    width = width / scale
  else:
    h = kernel
  x = np.arange(1, out_size + 1, dtype=np.float64)  # 1-based, as in imresize.m.
  u = x / scale + 0.5 * (1.0 - 1.0 / scale)
  left = np.floor(u - width / 2.0)
  taps = int(math.ceil(width)) + 2
  idx = left[:, None] + np.arange(taps)[None, :]
  w = h(u[:, None] - idx)
  w = w / w.sum(axis=1, keepdims=True)
  # Symmetric padding: the sequence [1..n, n..1] repeated, indexed 1-based.
  aux = np.concatenate([np.arange(in_size), np.arange(in_size)[::-1]])
  src = aux[np.mod(idx.astype(np.int64) - 1, 2 * in_size)]
  keep = np.any(w != 0, axis=0)  # imresize.m drops tap columns that are zero for every output
  src, w = np.ascontiguousarray(src[:, keep]), np.ascontiguousarray(w[:, keep])
  src.setflags(write=False)
  w.setflags(write=False)
  return src, w


@functools.lru_cache(maxsize=256)
def _resize_weights_cached(in_size: int, scale: float, method: str) -> np.ndarray:
  src, w = _contributions(in_size, scale, method)
  mat = np.zeros((src.shape[0], in_size), np.float64)
  np.add.at(mat, (np.repeat(np.arange(src.shape[0]), src.shape[1]), src.ravel()), w.ravel())
  mat.setflags(write=False)
  return mat


def resize_weights(in_size: int, scale: float, method: str = 'bicubic') -> np.ndarray:
  """MATLAB imresize resampling matrix along one axis.

  Args:
    in_size: input length.
    scale: output/input size ratio (1/s to downsample by s, s to upsample).
    method: 'bicubic' | 'nearest' | 'box'.

  Returns:
    Read-only float64 array (ceil(in_size * scale), in_size); `out = W @ in` along that axis.
  """
  _check_method(method)
  if in_size < 1 or not scale > 0:
    raise ValueError(f'resize_weights: need in_size >= 1 and scale > 0, got {in_size}, {scale}')
  return _resize_weights_cached(int(in_size), float(scale), method)


@functools.lru_cache(maxsize=256)
def _band_as(in_size: int, scale: float, method: str, dtype: str):
  src, w = _contributions(in_size, scale, method)
  w = w.astype(dtype)
  w.setflags(write=False)
  return src, w


def resize(x, scale_h: float, scale_w: float, method: str = 'bicubic', xp=np):
  """Resizes the last two spatial axes by (scale_h, scale_w) (MATLAB `imresize` with a per-axis scale)."""
  squeeze = x.ndim == 2
  if x.ndim < 2:
    raise ValueError(f'resize: expected (H, W) or (..., H, W, C), got shape {x.shape}')
  if xp is np:
    # Host path: gather the few taps and sum them (banded), not a dense matmul. It does less work and,
    # unlike BLAS, never spawns threads, which would compete with grain's reader threads (BENCHMARKS.md,
    # "Measurements behind code choices").
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
      x = x.astype(np.float64)
    dt = x.dtype.str
    if squeeze:
      src_h, w_h = _band_as(x.shape[0], scale_h, method, dt)
      src_w, w_w = _band_as(x.shape[1], scale_w, method, dt)
      y = np.einsum('ot,otw->ow', w_h, x[src_h])
      return np.einsum('pt,opt->op', w_w, y[:, src_w])
    src_h, w_h = _band_as(x.shape[-3], scale_h, method, dt)
    src_w, w_w = _band_as(x.shape[-2], scale_w, method, dt)
    y = np.einsum('ot,...otwc->...owc', w_h, np.take(x, src_h, axis=-3))
    return np.einsum('pt,...optc->...opc', w_w, np.take(y, src_w, axis=-2))
  if squeeze:
    x = x[..., None]
  h, w = x.shape[-3], x.shape[-2]
  if not xp.issubdtype(x.dtype, xp.floating):
    x = x.astype(xp.float32)
  wh = xp.asarray(resize_weights(h, scale_h, method), x.dtype)
  ww = xp.asarray(resize_weights(w, scale_w, method), x.dtype)
  # Device path: dense matmuls (MXU / tensor-core friendly) with constant matrices. HIGHEST: the default
  # TPU/GPU matmul precision (bf16 passes) would make a device-made LR differ from the host LR by ~1e-3.
  y = xp.einsum('oh,...hwc->...owc', wh, x, precision='highest')
  y = xp.einsum('pw,...owc->...opc', ww, y, precision='highest')
  return y[..., 0] if squeeze else y


def _check_scale(scale):
  if int(scale) != scale or scale < 1:
    raise ConfigError(f'model.scale: expected a positive integer factor, got {scale!r}')
  return int(scale)


def downsample(x, scale: int, method: str = 'bicubic', xp=np):
  """MATLAB `imresize(x, 1/scale, method)` (antialiased except for 'nearest').

  Args:
    x: array (H, W) or (..., H, W, C); integer inputs are computed in float.
    scale: integer downsampling factor s.
    method: 'bicubic' (default) | 'nearest' | 'box'.
    xp: numpy or jax.numpy (jit-able; the resampling matrices become constants).

  Returns:
    Float array (ceil(H/s), ceil(W/s)) or (..., ceil(H/s), ceil(W/s), C).
  """
  _check_method(method)
  s = _check_scale(scale)
  return resize(x, 1.0 / s, 1.0 / s, method, xp)


def upsample_bicubic(x, scale: int, xp=np):
  """MATLAB `imresize(x, scale, 'bicubic')`: the bicubic baseline and DSRNet's residual base.

  Args:
    x: array (h, w) or (..., h, w, C).
    scale: integer factor s.
    xp: numpy or jax.numpy.

  Returns:
    Float array of exactly (s*h, s*w) (or (..., s*h, s*w, C)).
  """
  s = _check_scale(scale)
  return resize(x, float(s), float(s), 'bicubic', xp)
