"""Pictures of depth maps: colour maps, side-by-side strips, 16-bit PNGs and comparison figures.

One place for what TensorBoard (train), predict and eval draw, so that the same depth looks the same in each.
"""
import os

import numpy as np


def _lut(cmap: str) -> np.ndarray:
  import matplotlib  # pylint: disable=g-import-not-at-top
  return (matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)


def colourise(x, cmap: str = 'viridis', lo=None, hi=None, holes=None, rows: int = 1024) -> np.ndarray:
  """(H, W) -> (H, W, 3) uint8 through a 256-entry table, over [lo, hi] (default: the range of the pixels
  that are not `holes`). Holes are black. Works in blocks of `rows`, so huge maps need little extra memory."""
  x = np.asarray(x)
  if lo is None or hi is None:
    vals = x[~holes] if holes is not None else x
    vals = vals[np.isfinite(vals)]
    lo_, hi_ = (float(vals.min()), float(vals.max())) if vals.size else (0.0, 1.0)
    del vals
    lo, hi = lo_ if lo is None else lo, hi_ if hi is None else hi
  lut = _lut(cmap)
  span = np.float32(255 / max(float(hi) - float(lo), 1e-12))
  out = np.empty(x.shape + (3,), np.uint8)
  for r in range(0, x.shape[0], rows):
    d = np.nan_to_num(x[r:r + rows].astype(np.float32), nan=np.float32(lo))
    block = lut[np.clip((d - np.float32(lo)) * span, 0, 255).astype(np.uint8)]
    if holes is not None:
      block[holes[r:r + rows]] = 0
    out[r:r + rows] = block
  return out


def strip(panels, gap: int = 2) -> np.ndarray:
  """(H, W_i, 3) uint8 panels of one height side by side, split by white columns `gap` wide."""
  h = panels[0].shape[0]
  sep = np.full((h, gap, 3), 255, np.uint8)
  out = [panels[0]]
  for p in panels[1:]:
    out += [sep, p]
  return np.concatenate(out, axis=1)


def save_png16(path: str, depth_norm) -> None:
  """Normalised depth in [0, 1] as a 16-bit PNG of round(depth * 65535)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.fromarray(np.round(np.clip(np.asarray(depth_norm, np.float64), 0, 1) * 65535).astype(np.uint16)).save(path)


def save_rgb(path: str, rgb) -> None:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.fromarray(np.asarray(rgb, np.uint8)).save(path)


def comparison_figure(rows, path: str, title: str, unit: str = '', err_max=None, width: float = 20.0,
                      dpi: int = 100) -> str:
  """A figure with one row per scene: LR (nearest) | bicubic | ours | GT | |ours - GT|.

  Args:
    rows: dicts with 'name', 'lr_up', 'bicubic', 'ours', 'gt' (same-size maps, one unit) and 'mask'
      (pixels that are scored); 'mad_bicubic' and 'mad_ours' go into the panel titles.
    path: the PNG to write.
    title: the figure's title.
    unit: the maps' unit, for the error colour bar.
    err_max: top of the error colour scale (default: the 99th percentile over all rows).
  """
  # A bare Figure, not pyplot: no backend is chosen or changed (a notebook keeps its inline one).
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  errs = [np.abs(r['ours'] - r['gt'])[r['mask']] for r in rows]
  if err_max is None:
    err_max = max(float(np.percentile(np.concatenate(errs), 99)) if sum(e.size for e in errs) else 1.0, 1e-6)
  aspect = rows[0]['gt'].shape[0] / rows[0]['gt'].shape[1]
  fig = Figure(figsize=(width, width / 5 * aspect * len(rows) + 0.8))
  axes = fig.subplots(len(rows), 5, squeeze=False)
  for ax_row, r in zip(axes, rows):
    gt = r['gt'][r['mask']] if r['mask'].any() else r['gt'].ravel()
    lo, hi = float(gt.min()), float(gt.max())
    panels = [(f'{r["name"]}: LR (nearest)', r['lr_up']), (f'bicubic  MAD {r["mad_bicubic"]:.3f}', r['bicubic']),
              (f'dsr_jax  MAD {r["mad_ours"]:.3f}', r['ours']), ('GT', r['gt'])]
    for ax, (name, img) in zip(ax_row, panels):
      ax.imshow(img, cmap='viridis', vmin=lo, vmax=hi, interpolation='nearest')
      ax.set_title(name, fontsize=10)
      ax.axis('off')
    im = ax_row[4].imshow(np.where(r['mask'], np.abs(r['ours'] - r['gt']), 0), cmap='inferno', vmin=0,
                          vmax=err_max, interpolation='nearest')
    ax_row[4].set_title('|ours - GT|', fontsize=10)
    ax_row[4].axis('off')
    fig.colorbar(im, ax=ax_row[4], fraction=0.046, label=unit)
  fig.suptitle(title)
  fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=dpi)
  return path
