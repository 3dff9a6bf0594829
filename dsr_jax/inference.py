"""Full-resolution inference: `super_resolve` (DSRNet) and `estimate_depth` (DENet) on images of any size.

Training-time validation, eval mode, predict, the notebook and the study all run the networks through here,
so a checkpoint is judged as it is used.

`super_resolve(dsr, params, lr)` runs DSRNet on one normalised LR map of any size:
- Border: the LR map is extended by symmetric reflection (MATLAB's `imresize` padding: edge pixel
  repeated) by `margin` LR pixels on every side before the network sees it, and the output is cropped
  back. So the global bicubic residual inside DSRNet equals MATLAB `imresize` of the unpadded LR exactly,
  and the result is a fixed function of the image: it never depends on the tile size or the padding added
  for shape buckets. (It differs from a bare `dsr.apply(lr)` within the receptive field of the border,
  where `apply` sees the convolutions' zero padding instead of reflected content.)
- Tiles: `tile` counts LR (input) pixels: each tile is a `tile` x `tile` core of the input plus
  `margin` = max(overlap, receptive_margin(dsr)) context pixels on each side (adjacent windows overlap by
  2 * margin); only the core's s*tile x s*tile output is kept. The last tile of a row or column is shifted
  back inside the image, so every tile is full-sized. Because the margin covers the receptive field
  (6 * stages LR pixels, derived below), the stitched result equals untiled inference (verified to 1e-4
  in tests/test_evaluate.py). `tile=0` runs the whole image as one window.
- Shape buckets: every window is padded (bottom/right, more reflection) to a multiple of 32, so jit
  compiles once per bucket shape, not per image; one jitted function is cached per model.
- `ensemble=True`: the 8-way self-ensemble (identity, flips, transpose and their compositions); each
  output is mapped back by the inverse transform and the 8 are averaged.
Receptive field of DSRNet in LR pixels: the shallow block has two 3x3 convs (2); in the polyphase form
every back-projection conv is a 3x3 conv at LR resolution, so an up- or down-projection reaches 3 and the
body Up + (T - 1) x (Down + Up) reaches 6T - 3; the 3x3 output conv at HR adds one HR pixel, at most one
LR pixel; the bicubic residual reaches 2. Total 6T (T = model.stages).

Transfers are explicit: each window is put on the device and each output fetched by name, and the
parameters are expected on the device already (`to_device` once per evaluation), so that a run under
`jax.transfer_guard('disallow')` shows that no window uploads the parameters again.
"""
from typing import Callable

import jax
import numpy as np

from dsr_jax import xla_options
from dsr_jax.errors import ConfigError

BUCKET = 32


def receptive_margin(dsr) -> int:
  """The network's own receptive margin (each model exports it; see the module docstring for DSRNet's)."""
  return int(dsr.receptive_margin())


def denet_margin(denet) -> int:
  return int(denet.receptive_margin())


def to_device(params):
  """`params` on the default device, once: a host tree, or a training state's tree sharded over a mesh,
  would otherwise travel with every window. The values are unchanged."""
  return jax.device_put(jax.device_get(params))


_JITTED = {}


def _apply_fn(module) -> Callable:
  fn = _JITTED.get(module)
  if fn is None:
    def apply(params, x):
      return module.apply({'params': params}, x)
    fn = _JITTED[module] = jax.jit(apply, compiler_options=xla_options.compiler_options())
  return fn


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def _tile_starts(n: int, t: int) -> list[int]:
  starts = list(range(0, n - t + 1, t))
  if starts[-1] + t < n:
    starts.append(n - t)  # shifted back inside the image: every window has the same shape
  return starts


def check_tiling(tile, overlap):
  if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 0:
    raise ConfigError(f'tile={tile!r}: expected an integer >= 0 (LR pixels per tile; 0 = whole image)')
  if isinstance(overlap, bool) or not isinstance(overlap, (int, np.integer)) or overlap < 0:
    raise ConfigError(f'overlap={overlap!r}: expected an integer >= 0 (LR context pixels per tile side)')


def run_windows(fn, params, x, *, scale: int, margin: int, tile: int = 0, bucket: int = BUCKET,
                progress=None):
  """Applies a fully-convolutional `fn` to (h, w, c) `x` in reflected, bucketed windows.

  Args:
    fn: jitted (params, (1, H, W, c)) -> (1, scale*H, scale*W, 1).
    params: the network parameters, on the device (`to_device`).
    x: float32 (h, w, c).
    scale: output/input size ratio.
    margin: context pixels added on each side of every window (>= fn's receptive field for exactness).
    tile: core size in input pixels (0 = the whole image in one window).
    bucket: window sizes are rounded up to a multiple of this (one compilation per bucket shape).
    progress: optional callable(done, total), called after each window's output has been fetched.

  Returns:
    float32 (scale*h, scale*w).
  """
  h, w, _ = x.shape
  s, m = int(scale), int(margin)
  th, tw = (h, w) if tile <= 0 else (min(tile, h), min(tile, w))
  wh, ww = _round_up(th + 2 * m, bucket), _round_up(tw + 2 * m, bucket)
  # One reflected copy of the whole input; every window is a view of it, so overlapping windows see
  # identical context and the stitched output does not depend on the tiling.
  ext = np.pad(x, ((m, wh - th - m), (m, ww - tw - m), (0, 0)), mode='symmetric')
  out = np.empty((s * h, s * w), np.float32)
  pending = None
  starts = [(y0, x0) for y0 in _tile_starts(h, th) for x0 in _tile_starts(w, tw)]
  done = 0

  def collect(item):
    nonlocal done
    (y0, x0), y = item
    y = np.asarray(jax.device_get(y))[0, :, :, 0]
    out[s * y0:s * (y0 + th), s * x0:s * (x0 + tw)] = y[s * m:s * (m + th), s * m:s * (m + tw)]
    done += 1
    if progress is not None:
      progress(done, len(starts))

  for y0, x0 in starts:
    # Dispatch the next window before fetching the previous one: the device never waits for the host
    # copy, and at most two windows are alive.
    item = ((y0, x0), fn(params, jax.device_put(ext[None, y0:y0 + wh, x0:x0 + ww])))
    if pending is not None:
      collect(pending)
    pending = item
  collect(pending)
  return out


# 8-way self-ensemble: (transpose, flip rows, flip columns).
ENSEMBLE = tuple((t, fy, fx) for t in (False, True) for fy in (False, True) for fx in (False, True))


def _forward_transform(x, t, fy, fx):
  if t:
    x = x.swapaxes(0, 1)
  if fy:
    x = x[::-1]
  if fx:
    x = x[:, ::-1]
  return x


def _inverse_transform(y, t, fy, fx):
  if fx:
    y = y[:, ::-1]
  if fy:
    y = y[::-1]
  if t:
    y = y.swapaxes(0, 1)
  return y


def super_resolve(dsr, params, lr, *, tile: int = 0, overlap: int = 32, ensemble: bool = False,
                  progress=None):
  """DSRNet on one normalised LR depth map of any size.

  Args:
    dsr: a DSRNet module (its scale and stages are used).
    params: its parameters (params['dsr'] of a checkpoint), on the device (`to_device`; restored
      checkpoints are).
    lr: (h, w) or (h, w, 1) depth normalised to [0, 1], hole-free.
    tile: LR pixels per tile side (0 = whole image).
    overlap: LR context pixels per tile side; raised to `receptive_margin(dsr)` if smaller.
    ensemble: average the 8 flip/transpose self-ensemble outputs.
    progress: optional callable(done, total) over all windows (of all 8 passes with `ensemble`).

  Returns:
    float32 (s*h, s*w).
  """
  check_tiling(tile, overlap)
  x = np.asarray(lr, np.float32)
  if x.ndim == 3 and x.shape[-1] == 1:
    x = x[..., 0]
  if x.ndim != 2 or min(x.shape) < 1:
    raise ValueError(f'super_resolve: expected an (h, w) or (h, w, 1) map, got shape {np.shape(lr)}')
  # Context beyond the image's own size is only its reflection, and beyond the receptive margin it never
  # changes the output: cap it there, so a huge eval.overlap cannot ask for huge windows.
  margin = max(min(int(overlap), max(x.shape)), receptive_margin(dsr))
  fn = _apply_fn(dsr)

  passes = len(ENSEMBLE) if ensemble else 1

  def one(z, k):
    report = None if progress is None else lambda i, n: progress(k * n + i, passes * n)
    return run_windows(fn, params, np.ascontiguousarray(z)[..., None], scale=dsr.scale, margin=margin,
                       tile=int(tile), progress=report)
  if not ensemble:
    return one(x, 0)
  acc = np.zeros((dsr.scale * x.shape[0], dsr.scale * x.shape[1]), np.float32)
  for k, tr in enumerate(ENSEMBLE):
    acc += _inverse_transform(one(_forward_transform(x, *tr), k), *tr)
  return acc / np.float32(len(ENSEMBLE))


def estimate_depth(denet, params, rgb, *, tile: int = 0):
  """DENet on one (H, W, 3) RGB in [0, 1]: normalised depth (H, W), tiled like `super_resolve`."""
  check_tiling(tile, 0)
  x = np.asarray(rgb, np.float32)
  return run_windows(_apply_fn(denet), params, x, scale=1, margin=denet_margin(denet), tile=int(tile))
