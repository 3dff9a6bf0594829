"""Full-resolution inference (`super_resolve`), the metrics registry, the protocols and the one evaluation
loop (`Evaluator`: training-time validation and eval mode of dsr_jax.main both run it).

Adding a metric: one `@metric(name, label)` function below (pred, gt, mask, peak in protocol units -> float);
the JSON, the Markdown tables, the console line and TensorBoard's eval/<name> render whatever keys a result
holds. Adding a protocol: one PROTOCOLS entry.

Eval mode:
  python -m dsr_jax.main --config configs/eval.py:middlebury2005 --workdir W --config.eval.checkpoint_dir=C
  python -m dsr_jax.main --config configs/eval.py:middlebury2005 --workdir W \
      --config.eval.baseline=bicubic --config.model.scale=4    # the bicubic baseline, no checkpoint
It evaluates split 'test' of eval.dataset (or data.name) and writes W/eval/<dataset>_x<s>.json (per-scene
MAD, RMSE, PSNR, SSIM in protocol units, and their means) and W/eval/<dataset>_x<s>.md (Markdown tables;
for middlebury2005 beside the paper's Table 1 rows); the bicubic baseline's are <dataset>_x<s>_bicubic.*.
A report of another checkpoint is never replaced: the run is refused before any image is evaluated.
The model and its scale come from the checkpoint's saved config; model.scale = 0 (the eval configs'
value) means "the checkpoint's scale", any other value must agree with it.

Inference
---------
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

Protocols (metrics in protocol units; PSNR = 10 log10(peak^2 / MSE) with peak = the dataset's norm in
protocol units; SSIM = Gaussian-window SSIM (11 taps, sigma 1.5, K = 0.01, 0.03) of prediction / peak and
GT / peak, averaged over the scored pixels):
- middlebury2005 (the paper's Table 1; ../shared/data/README.md): GT = depth/{scene}.bmp, 0-255;
  LR = MATLAB bicubic `imresize(GT, 1/s)` (antialiased, ceil(H/s) x ceil(W/s), float, not rounded);
  prediction at s x the LR size, cropped to the top-left H x W, clipped to [0, 255] and rounded to uint8;
  MAD and RMSE over all pixels. Bicubic at x4: Art 0.97, Books 0.29, Moebius 0.30 (paper: same).
- middlebury_lu (Middlebury-30 / Lu, DKN/FDSR/DCTNet protocol): HR cropped to a multiple of s before
  degrading; RMSE on the 0-255 scale over a 6-pixel-border-cropped image (their `midd_calc_rmse`); the LR
  is the project's MATLAB bicubic (the literature uses Pillow bicubic, which is not antialiased the same
  way, so numbers are comparable in protocol, not bit-exact); no rounding.
- nyu_v2: metres -> centimetres (x 100), 6-pixel border crop, valid (> 0) GT pixels.
- rgbdd: millimetres -> centimetres (/ 10), no border crop, valid GT pixels.
- synthetic_rgbd: relative depth (norm 1), no crop (for tests and smoke runs).
For a cross-task checkpoint (params has 'denet'), DENet is also scored on the HR RGB with the monocular
depth metrics (valid GT pixels with positive depth, prediction clipped below at 1e-3 x peak): delta < 1.25,
< 1.25^2, < 1.25^3, AbsRel, RMSE (protocol units), log10.
"""
import dataclasses
import json
import math
import os
import time
from typing import Callable

from absl import logging
import jax
import ml_collections
import numpy as np
from scipy import ndimage

from dsr_jax import config_lib
from dsr_jax import paths
from dsr_jax import resize
from dsr_jax import xla_options
from dsr_jax.errors import ConfigError
from dsr_jax.errors import UserError
from dsr_jax.input_pipeline import readers
from dsr_jax.protocol import Protocol

BUCKET = 32
BASELINES = ('', 'bicubic')  # eval.baseline: '' = the checkpoint's network
PAPER_SCALES = resize.SCALES
SCENES_2005 = ('art', 'books', 'dolls', 'laundry', 'moebius', 'reindeer')
# Sun et al. CVPR 2021, Table 1 (Middlebury 2005, MAD on 0-255): per scene, x2 / x4 / x8 / x16.
PAPER_TABLE1_MAD = {
    'Bicubic': {'art': (0.48, 0.97, 1.85, 3.59), 'books': (0.13, 0.29, 0.59, 1.15),
                'dolls': (0.20, 0.36, 0.66, 1.18), 'laundry': (0.28, 0.54, 1.04, 1.95),
                'moebius': (0.13, 0.30, 0.59, 1.13), 'reindeer': (0.30, 0.55, 0.99, 1.88)},
    'DSRNet w/o CT': {'art': (0.16, 0.31, 0.59, 1.55), 'books': (0.10, 0.15, 0.31, 0.73),
                      'dolls': (0.12, 0.21, 0.39, 0.69), 'laundry': (0.12, 0.21, 0.40, 0.82),
                      'moebius': (0.11, 0.16, 0.32, 0.74), 'reindeer': (0.13, 0.22, 0.38, 0.87)},
    'DSRNet': {'art': (0.11, 0.25, 0.53, 1.44), 'books': (0.05, 0.11, 0.26, 0.67),
               'dolls': (0.07, 0.16, 0.36, 0.65), 'laundry': (0.06, 0.16, 0.36, 0.76),
               'moebius': (0.07, 0.13, 0.27, 0.69), 'reindeer': (0.08, 0.17, 0.35, 0.77)},
}



# ------------------------------------------------------------------------------------------- inference


def receptive_margin(dsr) -> int:
  """The network's own receptive margin (each model exports it; see the module docstring for DSRNet's)."""
  return int(dsr.receptive_margin())


def denet_margin(denet) -> int:
  return int(denet.receptive_margin())


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
    params: the network parameters.
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
    y = np.asarray(y)[0, :, :, 0]
    out[s * y0:s * (y0 + th), s * x0:s * (x0 + tw)] = y[s * m:s * (m + th), s * m:s * (m + tw)]
    done += 1
    if progress is not None:
      progress(done, len(starts))

  for y0, x0 in starts:
    # Dispatch the next window before fetching the previous one: the device never waits for the host
    # copy, and at most two windows are alive.
    item = ((y0, x0), fn(params, ext[None, y0:y0 + wh, x0:x0 + ww]))
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
    params: its parameters (params['dsr'] of a checkpoint).
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


# ------------------------------------------------------------------------------------------- protocols


# One entry per dataset, from its DatasetSpec (input_pipeline/readers.py): adding a dataset adds its protocol.
PROTOCOLS = {name: spec.protocol for name, spec in readers.DATASETS.items()}


def protocol_for(dataset: str) -> Protocol:
  if dataset not in PROTOCOLS:
    raise ConfigError(f'eval.dataset={dataset!r}: expected one dataset of {", ".join(sorted(PROTOCOLS))}')
  return PROTOCOLS[dataset]


def ssim(a, b, mask=None, *, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> float:
  """Mean SSIM (Wang et al. 2004, Gaussian window of 11 taps) of two maps in [0, 1] over `mask`."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  filt = lambda z: ndimage.gaussian_filter(z, sigma, truncate=3.5, mode='reflect')
  mu_a, mu_b = filt(a), filt(b)
  var_a = filt(a * a) - mu_a * mu_a
  var_b = filt(b * b) - mu_b * mu_b
  cov = filt(a * b) - mu_a * mu_b
  c1, c2 = k1 * k1, k2 * k2
  smap = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
  return float(smap.mean() if mask is None else smap[mask].mean())


@dataclasses.dataclass(frozen=True)
class Metric:
  """One registered metric: fn(pred, gt, mask, peak) -> float or None, on maps in protocol units.

  label: the report's column header ('{unit}' becomes the protocol's unit); short: the console's name.
  """
  fn: Callable
  label: str
  digits: int
  short: str


# Every report (JSON, Markdown, the console line, TensorBoard during training) renders whichever of these
# keys a result holds, in this order: adding a metric is one registered function.
METRICS: dict[str, Metric] = {}  # depth super-resolution, scored against the HR GT
DEPTH_METRICS: dict[str, Metric] = {}  # DENet's monocular depth (pred clipped below at `peak`)


def metric(name: str, label: str, digits: int = 4, short: str = '', table: dict = METRICS):
  def add(fn):
    table[name] = Metric(fn, label, digits, short or name)
    return fn
  return add


def _diff(pred, gt, mask):
  return (pred - gt)[mask].astype(np.float64)


@metric('mad', 'MAD ({unit})', short='MAD')
def mad(pred, gt, mask, peak):
  del peak
  return float(np.mean(np.abs(_diff(pred, gt, mask))))


@metric('rmse', 'RMSE ({unit})', short='RMSE')
def rmse(pred, gt, mask, peak):
  del peak
  d = _diff(pred, gt, mask)
  return math.sqrt(float(np.mean(d * d)))


@metric('psnr', 'PSNR (dB)', 2, short='PSNR')
def psnr(pred, gt, mask, peak):
  d = _diff(pred, gt, mask)
  mse = float(np.mean(d * d))
  return 10 * math.log10(peak * peak / mse) if mse > 0 else None


@metric('ssim', 'SSIM', short='SSIM')
def _ssim(pred, gt, mask, peak):
  return ssim(pred / peak, gt / peak, mask)


def sr_metrics(pred, gt, mask, peak: float, names=None) -> dict:
  """The registered metrics (or `names` of them) of maps already in protocol units, over `mask`."""
  return {k: METRICS[k].fn(pred, gt, mask, peak) for k in (names or METRICS)}


def _depth_pairs(pred, gt, mask, eps):
  m = mask & (gt > 0)
  return np.maximum(pred[m].astype(np.float64), eps), gt[m].astype(np.float64)


def _delta(k):
  def fn(pred, gt, mask, eps):
    p, g = _depth_pairs(pred, gt, mask, eps)
    return float(np.mean(np.maximum(p / g, g / p) < 1.25 ** k))
  return fn


for _k, _label in ((1, 'δ<1.25'), (2, 'δ<1.25²'), (3, 'δ<1.25³')):
  metric(f'delta{_k}', _label, table=DEPTH_METRICS)(_delta(_k))


@metric('abs_rel', 'AbsRel', table=DEPTH_METRICS)
def _abs_rel(pred, gt, mask, eps):
  p, g = _depth_pairs(pred, gt, mask, eps)
  return float(np.mean(np.abs(p - g) / g))


@metric('rmse', 'RMSE ({unit})', table=DEPTH_METRICS)
def _depth_rmse(pred, gt, mask, eps):
  p, g = _depth_pairs(pred, gt, mask, eps)
  return float(math.sqrt(np.mean((p - g) ** 2)))


@metric('log10', 'log10', table=DEPTH_METRICS)
def _log10(pred, gt, mask, eps):
  p, g = _depth_pairs(pred, gt, mask, eps)
  return float(np.mean(np.abs(np.log10(p) - np.log10(g))))


def depth_metrics(pred, gt, mask, eps: float) -> dict:
  """Monocular depth metrics over mask & gt > 0, prediction clipped below at eps."""
  return {k: m.fn(pred, gt, mask, eps) for k, m in DEPTH_METRICS.items()}


def _crop(x, border: int):
  return x[border:-border, border:-border] if border else x


def in_protocol_units(pred_norm, norm: float, proto: Protocol) -> np.ndarray:
  """A normalised prediction as the protocol scores it: its units, its border crop, its uint8 rounding."""
  pred = _crop(np.asarray(pred_norm, np.float64) * (float(norm) * proto.factor), proto.border)
  return np.round(np.clip(pred, 0, 255)) if proto.round_uint8 else pred


def score_image(pred_norm, hr_norm, valid, norm: float, proto: Protocol, names=None) -> tuple[dict, tuple]:
  """Scores one normalised prediction against its normalised GT under `proto` (`names`: of METRICS; all).

  Returns:
    (metrics, (pred, gt, mask, peak)) with the maps in protocol units after the border crop.
  """
  f = float(norm) * proto.factor
  pred = in_protocol_units(pred_norm, norm, proto)
  gt = _crop(np.asarray(hr_norm, np.float64) * f, proto.border)
  mask = _crop(np.ones(np.shape(hr_norm), bool) if proto.all_pixels else np.asarray(valid) > 0, proto.border)
  peak = f  # depth / norm lies in [0, 1], so the norm is the data range
  return sr_metrics(pred, gt, mask, peak, names), (pred, gt, mask, peak)


class _CropToMultiple:
  """A source whose examples are cropped (top-left) to a multiple of `scale` (Lu protocol)."""

  def __init__(self, source, scale: int):
    self._source, self._scale = source, scale

  def __len__(self):
    return len(self._source)

  def __getitem__(self, index):
    ex = dict(self._source[index])
    h, w = np.shape(ex['depth'])
    h, w = h - h % self._scale, w - w % self._scale
    for k in ('depth', 'rgb', 'valid'):
      if k in ex:
        ex[k] = ex[k][:h, :w]
    return ex


def _data_config(config, dataset: str, scale: int):
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.data.name = dataset
  cfg.data.eval_batch = 1
  cfg.model.scale = scale
  return cfg


class SceneImages:
  """Eval's pictures, under <workdir>/eval/<report stem>_images/: per scene the SR depth as a 16-bit PNG
  (<scene>_sr.png, round(depth / norm * 65535); index.json gives each scene's norm and unit), a colourised
  view (<scene>_color.png, viridis over the GT's range) and an error map (<scene>_error.png, |SR - GT| in
  protocol units, inferno from 0 to the scene's 99th percentile, unscored pixels black); and figure.png:
  LR | bicubic | ours | GT | error for the first `figure_scenes` scenes, one row each, and
  <scene>_panel.png, that row alone (index.json holds the MADs its titles show)."""

  def __init__(self, directory: str, dataset: str, scale: int, proto, figure_scenes: int):
    import tempfile  # pylint: disable=g-import-not-at-top
    self.final, self.dataset, self.scale, self.proto = directory, dataset, scale, proto
    self.figure_scenes, self.rows, self.index = figure_scenes, [], {}
    # Written outside the workdir until the evaluation has finished: a run that fails part-way (a corrupt
    # file) leaves nothing behind, and an earlier run's pictures stay until they are replaced whole.
    self.dir = tempfile.mkdtemp(prefix='dsr_jax_eval_images_')

  def discard(self) -> None:
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(self.dir, ignore_errors=True)

  def _path(self, name: str, what: str) -> str:
    safe = ''.join(c if c.isalnum() or c in '-_.' else '_' for c in name)
    return os.path.join(self.dir, f'{safe}_{what}.png')

  def __call__(self, name, lr_norm, pred_norm, hr_norm, norm: float, scored) -> None:
    from dsr_jax import pictures  # pylint: disable=g-import-not-at-top
    pred, gt, mask, _ = scored
    pictures.save_png16(self._path(name, 'sr'), pred_norm)
    v = gt[mask] if mask.any() else gt.ravel()
    lo, hi = float(v.min()), float(v.max())
    pictures.save_rgb(self._path(name, 'color'), pictures.colourise(pred, 'viridis', lo, hi))
    err = np.where(mask, np.abs(pred - gt), 0.0)
    top = max(float(np.percentile(err[mask], 99)) if mask.any() else 1.0, 1e-6)
    pictures.save_rgb(self._path(name, 'error'), pictures.colourise(err, 'inferno', 0.0, top, holes=~mask))
    self.index[name] = {'norm': float(norm), 'unit': self.proto.unit, 'factor': self.proto.factor}
    if len(self.rows) < self.figure_scenes:
      h, w = hr_norm.shape
      f = float(norm) * self.proto.factor
      to_proto = lambda x: _crop(np.asarray(x, np.float64)[:h, :w] * f, self.proto.border)
      s = self.scale
      # Scored as the protocol scores ours (rounding included), so the panel's MADs match the reports'.
      bic = in_protocol_units(resize.upsample_bicubic(np.asarray(lr_norm, np.float64), s)[:h, :w], norm,
                              self.proto)
      lr_up = to_proto(np.kron(np.asarray(lr_norm, np.float64), np.ones((s, s))))
      row = {'name': _title(name), 'lr_up': lr_up, 'bicubic': bic, 'ours': pred, 'gt': gt, 'mask': mask,
             'mad_bicubic': float(np.abs(bic - gt)[mask].mean()) if mask.any() else float('nan'),
             'mad_ours': float(np.abs(pred - gt)[mask].mean()) if mask.any() else float('nan')}
      pictures.comparison_figure([row], self._path(name, 'panel'), f'{self.dataset} {_title(name)}, x{s}',
                                 self.proto.unit)
      self.rows.append(row)
      self.index[name].update(panel_mad_bicubic=row['mad_bicubic'], panel_mad_ours=row['mad_ours'])

  def finish(self) -> dict:
    """Writes the index and the figure, then puts the directory in place (replacing an earlier one)."""
    import shutil  # pylint: disable=g-import-not-at-top
    from dsr_jax import pictures  # pylint: disable=g-import-not-at-top
    with open(os.path.join(self.dir, 'index.json'), 'w') as f:
      json.dump({'png16': 'depth (dataset units) = value / 65535 * norm; protocol units = that * factor',
                 'scenes': self.index}, f, indent=2)
    if self.rows:
      pictures.comparison_figure(self.rows, os.path.join(self.dir, 'figure.png'), f'{self.dataset}, x{self.scale}',
                                 self.proto.unit)
    self.rows = []
    if os.path.isdir(self.final):
      shutil.rmtree(self.final)
    shutil.move(self.dir, self.final)
    files = {'dir': self.final, 'index': os.path.join(self.final, 'index.json')}
    if os.path.exists(os.path.join(self.final, 'figure.png')):
      files['figure'] = os.path.join(self.final, 'figure.png')
    return files


class Evaluator:
  """The one evaluation loop: whole images of one dataset, scored under one protocol.

  Training-time validation (train.py: the best checkpoint), eval mode (`run`; the notebook and the study
  call it) use it, so a checkpoint is judged during training as it is reported.

    ev = Evaluator(batches, PROTOCOLS['middlebury2005'], scale=4)
    result = ev(predict)              # predict: normalised LR (h, w) -> normalised (s*h, s*w)

  Args:
    batches: a re-iterable of pipeline.eval_dataset batches (any data.eval_batch).
    proto: the Protocol.
    scale: s.
    metrics: names in METRICS (None: every registered one).
    name: the data as a message names it ("eval.dataset='nyu_v2': split test").
  """

  def __init__(self, batches, proto: Protocol, scale: int, metrics=None, name: str = 'evaluation'):
    self.batches, self.proto, self.scale, self.name = batches, proto, int(scale), name
    self.metrics = tuple(metrics or METRICS)
    self._bicubic = None  # the baseline's result: the same every time

  def images(self):
    """(name, lr (h, w), hr (H, W), valid (H, W), rgb (H, W, 3), norm) of every real image, in order."""
    for b in self.batches:
      for i in range(len(b['mask'])):
        if b['mask'][i]:
          yield (str(b['name'][i]), b['lr_depth'][i, ..., 0], b['hr_depth'][i, ..., 0], b['valid'][i, ..., 0],
                 b['rgb'][i], float(b['norm'][i]))

  def __call__(self, predict: Callable, *, estimate: Callable | None = None, baseline: bool = False,
               on_image: Callable | None = None) -> dict:
    """Scores `predict` on every image.

    Args:
      predict: the SR function.
      estimate: optional DENet function (normalised RGB (H, W, 3) -> normalised depth (H, W)).
      baseline: also score the bicubic baseline (computed once per Evaluator), as result['bicubic'].
      on_image: optional callable(name, lr, pred, hr, norm, (pred, gt, mask, peak) in protocol units), e.g.
        SceneImages.

    Returns:
      {'per_scene': {name: metrics}, 'mean': metrics (over images), 'images': n, 'seconds': t, and
      'denet' / 'bicubic' ({'per_scene', 'mean'}) when asked}.
    """
    rows, rows_de = [], []
    t0 = time.perf_counter()
    for name, lr, hr, valid, rgb, norm in self.images():
      h, w = hr.shape
      pred = np.asarray(predict(lr))[:h, :w]
      metrics, scored = score_image(pred, hr, valid, norm, self.proto, self.metrics)
      rows.append((name, metrics))
      if on_image is not None:
        on_image(name, lr, pred, hr, norm, scored)
      logging.info('%s %s x%d: %s', self.name, name, self.scale, metrics)
      if estimate is not None:
        _, gt, mask, peak = scored
        de_pred = _crop(np.asarray(estimate(rgb), np.float64) * norm * self.proto.factor, self.proto.border)
        rows_de.append((name, depth_metrics(de_pred, gt, mask, 1e-3 * peak)))
    if not rows:
      raise UserError(f'{self.name} has no image with valid depth')
    out = {**_table(rows), 'images': len(rows), 'seconds': time.perf_counter() - t0}
    if rows_de:
      out['denet'] = _table(rows_de)
    if baseline:
      if self._bicubic is None:
        s = self.scale
        bic = self(lambda lr: resize.upsample_bicubic(np.asarray(lr, np.float64), s))
        self._bicubic = {'per_scene': bic['per_scene'], 'mean': bic['mean']}
      out['bicubic'] = self._bicubic
    return out


def _table(rows) -> dict:
  """{'per_scene': {name: metrics}, 'mean': the mean over rows}; a repeated name gets a '#k' suffix (a
  validation mix of datasets may repeat one) so that no image drops out of the table."""
  per_scene = {}
  for name, m in rows:
    key, k = name, 1
    while key in per_scene:
      k += 1
      key = f'{name}#{k}'
    per_scene[key] = m
  return {'per_scene': per_scene, 'mean': _mean(per_scene)}


def evaluate_dataset(config, dataset: str, scale: int, predict: Callable, estimate: Callable | None = None,
                     on_image: Callable | None = None, baseline: bool = False):
  """Scores `predict` on split 'test' of `dataset` under its protocol (an Evaluator of dataset_batches)."""
  ev = Evaluator(dataset_batches(config, dataset, scale), protocol_for(dataset), scale,
                 name=f'eval.dataset={dataset!r}: split test')
  return ev(predict, estimate=estimate, on_image=on_image, baseline=baseline)


def dataset_batches(config, dataset: str, scale: int):
  """Whole-image batches of split 'test' of `dataset` as its protocol prepares them."""
  from dsr_jax.input_pipeline import pipeline  # pylint: disable=g-import-not-at-top
  from dsr_jax.input_pipeline import sources  # pylint: disable=g-import-not-at-top
  proto = protocol_for(dataset)
  cfg = _data_config(config, dataset, scale)
  source = sources.get_source(cfg.data, 'test')
  if proto.crop_multiple:
    source = _CropToMultiple(source, scale)
  return pipeline.eval_dataset(cfg, 'test', source=source, degradations=(str(config.eval.degradation),))


def _mean(per_scene: dict) -> dict:
  keys = next(iter(per_scene.values())).keys()
  out = {}
  for k in keys:
    vals = [m[k] for m in per_scene.values() if m[k] is not None]
    out[k] = float(np.mean(vals)) if vals else None
  return out


# ------------------------------------------------------------------------------------------- eval mode


def _fmt(v, digits: int) -> str:
  return '-' if v is None else f'{v:.{digits}f}'


def _title(scene: str) -> str:
  return scene[:1].upper() + scene[1:]


def paper_rows(scale: int) -> dict:
  """{method: {scene: MAD}} of the paper's Table 1 at `scale` (empty for scales it does not list)."""
  if scale not in PAPER_SCALES:
    return {}
  i = PAPER_SCALES.index(scale)
  return {m: {sc: v[i] for sc, v in rows.items()} for m, rows in PAPER_TABLE1_MAD.items()}


def markdown(result: dict) -> str:
  """The Markdown report of one eval run (see `run`)."""
  ds, s, unit = result['dataset'], result['scale'], result['protocol']['unit']
  ours = 'Bicubic' if result['model'] == 'bicubic' else 'DSRNet'
  label = f'{ours} (ours' + (f', step {result["step"]})' if result.get('step') is not None else ')')
  deg = result.get('degradation', 'protocol')
  lines = [f'# {ds} x{s}' + ('' if deg == 'protocol' else f', LR made by {deg}') + f': {label}', '']
  if result.get('checkpoint'):
    lines.append(f'Checkpoint: `{result["checkpoint"]}`')
  lines += [f'Protocol: {result["protocol"]["reference"]}; metrics in {unit}, split `{result["split"]}`, '
            f'{result["images"]} images' + (', 8-way self-ensemble' if result.get('ensemble') else '') + '.',
            '']
  per = result['per_scene']
  paper = result.get('paper_table1_mad') or {}
  if paper:
    scenes = [sc for sc in SCENES_2005 if sc in per]
    lines += [f'## MAD (0-255) beside the paper\'s Table 1, x{s}', '',
              '| Method | ' + ' | '.join(_title(sc) for sc in scenes) + ' | Mean |',
              '|---|' + '---:|' * (len(scenes) + 1)]
    for method, row in paper.items():
      vals = [row[sc] for sc in scenes]
      lines.append(f'| {method} (paper) | ' + ' | '.join(f'{v:.2f}' for v in vals) +
                   f' | {np.mean(vals):.2f} |')
    vals = [per[sc]['mad'] for sc in scenes]
    lines.append(f'| **{label}** | ' + ' | '.join(f'{v:.2f}' for v in vals) + f' | {np.mean(vals):.2f} |')
    lines.append('')
  lines += ['## Per scene', ''] + _metric_table(per, result['mean'], METRICS, unit)
  if 'denet' in result:
    lines += ['', '## DENet (monocular depth from the HR RGB)', '']
    lines += _metric_table(result['denet']['per_scene'], result['denet']['mean'], DEPTH_METRICS, unit)
  return '\n'.join(lines) + '\n'


def _columns(mean: dict, registry: dict) -> list:
  """(key, Metric) for every key of a result, registered ones in registry order, others after them."""
  cols = [(k, registry[k]) for k in registry if k in mean]
  return cols + [(k, Metric(None, k, 4, k)) for k in mean if k not in registry]


def _metric_table(per_scene: dict, mean: dict, registry: dict, unit: str) -> list:
  cols = _columns(mean, registry)
  out = ['| Scene | ' + ' | '.join(m.label.format(unit=unit) for _, m in cols) + ' |',
         '|---|' + '---:|' * len(cols)]
  for name, row in list(per_scene.items()) + [('**Mean**', mean)]:
    out.append(f'| {name} | ' + ' | '.join(_fmt(row.get(k), m.digits) for k, m in cols) + ' |')
  return out


def run(config, workdir: str) -> dict:
  """Eval mode: scores a checkpoint (or the bicubic baseline) on split 'test' and writes the reports.

  Args:
    config: the eval config (mode 'eval'; eval.*, data.*, model.scale).
    workdir: reports go to <workdir>/eval/<dataset>_x<s>.{json,md}.

  Returns:
    The metrics dict written to the JSON file (plus 'files': the two paths).

  Raises:
    UserError: bad config fields, checkpoint or data (one line naming the field or file).
  """
  from dsr_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  from dsr_jax import restore  # pylint: disable=g-import-not-at-top
  config_lib.validate(config, mode='eval')
  dataset = str(config.eval.dataset or config.data.name)
  proto, baseline, want = PROTOCOLS[dataset], config.eval.baseline, config.model.scale
  paths.check_dir_target(workdir, '--workdir')  # Now, not after the whole evaluation.
  tile, overlap, ensemble = config.eval.tile, config.eval.overlap, bool(config.eval.ensemble)
  info, estimate = {}, None
  name = baseline
  if baseline == 'bicubic':
    scale = want

    def predict(lr):
      return resize.upsample_bicubic(np.asarray(lr, np.float64), scale)
  else:
    ck_cfg, params, info = restore.load_params(config.eval.checkpoint_dir, ('dsr', 'denet'))
    scale = int(ck_cfg.model.scale)
    if want and want != scale:
      raise ConfigError(f'model.scale={want} contradicts the checkpoint\'s scale {scale} ({info["dir"]}); '
                        f'set model.scale={scale} or 0 (= the checkpoint\'s)')
    models = models_lib.build(ck_cfg.model)
    name = ck_cfg.model.name

    def predict(lr):
      return super_resolve(models.dsr, params['dsr'], lr, tile=tile, overlap=overlap, ensemble=ensemble)
    # Monocular DE metrics only for an RGB-only DENet (docs/method.md, rule 5): an 'rgbd' one also saw the LR.
    if 'denet' in params and models.denet is not None and not models.denet.depth_input:
      denet, denet_params = models.denet, params['denet']
      estimate = lambda rgb: estimate_depth(denet, denet_params, rgb, tile=tile)
  degradation = str(config.eval.degradation)
  files = report_files(workdir, dataset, scale, name, info.get('dir', ''), degradation)
  images = None
  if config.eval.images and jax.process_index() == 0:
    images = SceneImages(os.path.splitext(files['json'])[0] + '_images', dataset, scale, proto,
                         int(config.eval.figure_scenes))
  try:
    # Bicubic upsampling of the same LR beside the network's: the ratio a robustness table reports.
    result = evaluate_dataset(config, dataset, scale, predict, estimate, on_image=images,
                              baseline=baseline != 'bicubic')
  except BaseException:
    if images is not None:
      images.discard()
    raise
  result = {'dataset': dataset, 'split': 'test', 'scale': scale, 'model': name,
            'checkpoint': shown_path(info.get('dir', ''), str(config.eval.checkpoint_dir)),
            'step': info.get('step'),
            # What the network computed with (its checkpoint's config; 'auto' resolved when it trained).
            'dtype': models.dtype if baseline != 'bicubic' else None,
            'bp_impl': models.bp_impl if baseline != 'bicubic' else None,
            'tile': int(tile), 'overlap': int(overlap), 'ensemble': ensemble, 'degradation': degradation,
            'protocol': dataclasses.asdict(proto), **result}
  if dataset == 'middlebury2005' and degradation == 'protocol':  # the paper's LR is the protocol's alone
    result['paper_table1_mad'] = paper_rows(scale)
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(files['json']), exist_ok=True)
    with open(files['json'], 'w') as f:
      json.dump(result, f, indent=2)
    with open(files['md'], 'w') as f:
      f.write(markdown(result))
  if images is not None:
    files['images'] = images.finish()
  result['files'] = files
  return result


def shown_path(step_dir: str, given: str) -> str:
  """The checkpoint path a report records: relative when the user gave a relative path under the cwd.

  Restoring needs the absolute path, but a report written into the repository (the shipped ones) should
  not carry this machine's directory layout.
  """
  if not step_dir or os.path.isabs(os.path.expanduser(given)):
    return step_dir
  rel = os.path.relpath(step_dir)
  return step_dir if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel


def report_files(workdir: str, dataset: str, scale: int, name: str, checkpoint: str,
                 degradation: str = 'protocol') -> dict:
  """The report's two paths; refuses (before any image is evaluated) to replace another checkpoint's report.

  `checkpoint` is the step directory ('' for the bicubic baseline), compared by real path. A degradation
  other than the protocol's names the report ('<dataset>_x<s>_<degradation>').
  """
  stem = os.path.join(os.path.abspath(workdir), 'eval',
                      f'{dataset}_x{scale}' + ('' if degradation == 'protocol' else f'_{degradation}') +
                      ('_bicubic' if name == 'bicubic' else ''))
  files = {'json': stem + '.json', 'md': stem + '.md'}
  real = lambda c: os.path.realpath(c) if c else ''
  if os.path.exists(files['json']):
    try:
      with open(files['json']) as f:
        old = json.load(f).get('checkpoint')
      what = f'the report of {old}' if old else "the bicubic baseline's report"
    except (OSError, ValueError, AttributeError):
      old, what = None, 'something that is not a report'
    if not isinstance(old, str) or real(old) != real(checkpoint):
      raise UserError(f'{files["json"]}: already holds {what}; give another --workdir or move it away '
                      '(a re-run of the same checkpoint replaces its own report)')
  elif os.path.exists(files['md']):
    raise UserError(f'{files["md"]}: exists without its .json (so whose report it is is unknown); give '
                    'another --workdir or move it away')
  return files


def summary(result: dict) -> str:
  """One line for the console."""
  m = result['mean']
  values = ' '.join(f'{c.short} {_fmt(m[k], c.digits)}' for k, c in _columns(m, METRICS))
  return (f'eval {result["dataset"]} x{result["scale"]} ({result["model"]}, {result["images"]} images, '
          f'{result["protocol"]["unit"]}): {values}; wrote {result["files"]["json"]} and {result["files"]["md"]}')


def real_sensor_scenes(data_dir, scale: int):
  """(name, HR mm (H, W), valid (H, W), LR normalised (ceil(H/s), ceil(W/s)), norm) of each RGB-D-D
  'realscene' pair, the LR prepared as step 1 of `real_sensor` says."""
  norm = readers.dataset_info('rgbdd').norm
  for rec in readers.list_records(data_dir, 'rgbdd', 'realscene'):
    ex = readers.load_example(rec)
    hr, valid = ex['depth'].astype(np.float64), ex['valid'] > 0
    lr = readers.load_depth_lr(rec).astype(np.float64)
    th, tw = -(-hr.shape[0] // scale), -(-hr.shape[1] // scale)
    lr = resize.resize(lr, th / lr.shape[0], tw / lr.shape[1], 'bicubic')
    yield rec.name, hr, valid, lr[:th, :tw] / norm, norm


def rmse_cm(pred_mm, hr_mm, valid) -> float:
  """RMSE in cm over the valid pixels of a millimetre map (the RGB-D-D unit)."""
  return float(np.sqrt(np.mean((pred_mm[valid] - hr_mm[valid]) ** 2)) / 10.0)


def real_sensor(dsr, params, data_dir, scale: int) -> dict:
  """RGB-D-D 'realscene': the data's only real LR inputs (phone time-of-flight, 192x144) against a 512x384 HR.

  A fixed-scale network needs an LR of exactly HR/s, and the real ratio is 2.67, so the protocol is:
  1. LR = the real LR map (mm), resized to ceil(HR/s) with the evaluation's MATLAB-style bicubic (antialiased
     when it shrinks, as at x4 and x8), normalised by the rgbdd norm (4000 mm);
  2. prediction = DSRNet (or bicubic) on that LR, cropped to the HR size;
  3. RMSE in cm over the HR's valid pixels (the literature's RGB-D-D unit), no border crop.
  Returns {'per_scene': {name: {'rmse_cm', 'bicubic_rmse_cm'}}, 'mean': {...}, 'protocol': str}.
  """
  per_scene = {}
  for name, hr, valid, lr, norm in real_sensor_scenes(data_dir, scale):
    h, w = hr.shape
    ours = super_resolve(dsr, params, lr.astype(np.float32))[:h, :w] * norm
    bic = resize.upsample_bicubic(lr, scale)[:h, :w] * norm
    per_scene[name] = {'rmse_cm': rmse_cm(ours, hr, valid), 'bicubic_rmse_cm': rmse_cm(bic, hr, valid)}
  mean = {k: float(np.mean([v[k] for v in per_scene.values()])) for k in ('rmse_cm', 'bicubic_rmse_cm')}
  return {'per_scene': per_scene, 'mean': mean,
          'protocol': f'real LR bicubic-resized to HR/{scale}, x{scale}, RMSE cm over valid HR pixels'}
