"""The metrics registry and the protocols: how a prediction is scored, in each dataset's protocol units.

Adding a metric: one `@metric(name, label)` function below (pred, gt, mask, peak in protocol units -> float);
the JSON, the Markdown tables, the console line and TensorBoard's eval/<name> render whatever keys a result
holds. Adding a protocol: one DatasetSpec.protocol (input_pipeline/readers.py; readers.PROTOCOLS by name).

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
import math
from typing import Callable

import numpy as np
from scipy import ndimage

from dsr_jax.errors import ConfigError
from dsr_jax.input_pipeline import readers
from dsr_jax.protocol import Protocol


def protocol_for(dataset: str) -> Protocol:
  """The protocol of one dataset (its DatasetSpec's, input_pipeline/readers.py: adding a dataset adds it)."""
  if dataset not in readers.PROTOCOLS:
    raise ConfigError(f'eval.dataset={dataset!r}: expected one dataset of {", ".join(sorted(readers.PROTOCOLS))}')
  return readers.PROTOCOLS[dataset]


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


def crop(x, border: int):
  """`x` without `border` pixels on each side (a protocol's border crop)."""
  return x[border:-border, border:-border] if border else x


def in_protocol_units(pred_norm, norm: float, proto: Protocol) -> np.ndarray:
  """A normalised prediction as the protocol scores it: its units, its border crop, its uint8 rounding."""
  pred = crop(np.asarray(pred_norm, np.float64) * (float(norm) * proto.factor), proto.border)
  return np.round(np.clip(pred, 0, 255)) if proto.round_uint8 else pred


def score_image(pred_norm, hr_norm, valid, norm: float, proto: Protocol, names=None) -> tuple[dict, tuple]:
  """Scores one normalised prediction against its normalised GT under `proto` (`names`: of METRICS; all).

  Returns:
    (metrics, (pred, gt, mask, peak)) with the maps in protocol units after the border crop.
  """
  f = float(norm) * proto.factor
  pred = in_protocol_units(pred_norm, norm, proto)
  gt = crop(np.asarray(hr_norm, np.float64) * f, proto.border)
  mask = crop(np.ones(np.shape(hr_norm), bool) if proto.all_pixels else np.asarray(valid) > 0, proto.border)
  peak = f  # depth / norm lies in [0, 1], so the norm is the data range
  return sr_metrics(pred, gt, mask, peak, names), (pred, gt, mask, peak)
