"""Pictures of depth maps: colour maps, side-by-side strips, 16-bit PNGs and comparison figures.

One place for what TensorBoard (train), predict and eval draw, so that the same depth looks the same in each.
`SceneImages` is eval mode's set of pictures per scene.
"""
import json
import os
import shutil
import tempfile

import numpy as np

from dsr_jax import metrics
from dsr_jax import reports
from dsr_jax import resize


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


class SceneImages:
  """Eval's pictures, under <workdir>/eval/<report stem>_images/: per scene the SR depth as a 16-bit PNG
  (<scene>_sr.png, round(depth / norm * 65535); index.json gives each scene's norm and unit), a colourised
  view (<scene>_color.png, viridis over the GT's range) and an error map (<scene>_error.png, |SR - GT| in
  protocol units, inferno from 0 to the scene's 99th percentile, unscored pixels black); and figure.png:
  LR | bicubic | ours | GT | error for the first `figure_scenes` scenes, one row each, and
  <scene>_panel.png, that row alone (index.json holds the MADs its titles show)."""

  def __init__(self, directory: str, dataset: str, scale: int, proto, figure_scenes: int):
    self.final, self.dataset, self.scale, self.proto = directory, dataset, scale, proto
    self.figure_scenes, self.rows, self.index = figure_scenes, [], {}
    # Written outside the workdir until the evaluation has finished: a run that fails part-way (a corrupt
    # file) leaves nothing behind, and an earlier run's pictures stay until they are replaced whole.
    self.dir = tempfile.mkdtemp(prefix='dsr_jax_eval_images_')

  def discard(self) -> None:
    shutil.rmtree(self.dir, ignore_errors=True)

  def _path(self, name: str, what: str) -> str:
    safe = ''.join(c if c.isalnum() or c in '-_.' else '_' for c in name)
    return os.path.join(self.dir, f'{safe}_{what}.png')

  def __call__(self, name, lr_norm, pred_norm, hr_norm, norm: float, scored) -> None:
    pred, gt, mask, _ = scored
    save_png16(self._path(name, 'sr'), pred_norm)
    v = gt[mask] if mask.any() else gt.ravel()
    lo, hi = float(v.min()), float(v.max())
    save_rgb(self._path(name, 'color'), colourise(pred, 'viridis', lo, hi))
    err = np.where(mask, np.abs(pred - gt), 0.0)
    top = max(float(np.percentile(err[mask], 99)) if mask.any() else 1.0, 1e-6)
    save_rgb(self._path(name, 'error'), colourise(err, 'inferno', 0.0, top, holes=~mask))
    self.index[name] = {'norm': float(norm), 'unit': self.proto.unit, 'factor': self.proto.factor}
    if len(self.rows) < self.figure_scenes:
      h, w = hr_norm.shape
      f = float(norm) * self.proto.factor
      to_proto = lambda x: metrics.crop(np.asarray(x, np.float64)[:h, :w] * f, self.proto.border)
      s = self.scale
      # Scored as the protocol scores ours (rounding included), so the panel's MADs match the reports'.
      bic = metrics.in_protocol_units(resize.upsample_bicubic(np.asarray(lr_norm, np.float64), s)[:h, :w],
                                      norm, self.proto)
      lr_up = to_proto(np.kron(np.asarray(lr_norm, np.float64), np.ones((s, s))))
      row = {'name': reports.title(name), 'lr_up': lr_up, 'bicubic': bic, 'ours': pred, 'gt': gt, 'mask': mask,
             'mad_bicubic': float(np.abs(bic - gt)[mask].mean()) if mask.any() else float('nan'),
             'mad_ours': float(np.abs(pred - gt)[mask].mean()) if mask.any() else float('nan')}
      comparison_figure([row], self._path(name, 'panel'), f'{self.dataset} {reports.title(name)}, x{s}',
                        self.proto.unit)
      self.rows.append(row)
      self.index[name].update(panel_mad_bicubic=row['mad_bicubic'], panel_mad_ours=row['mad_ours'])

  def finish(self) -> dict:
    """Writes the index and the figure, then puts the directory in place (replacing an earlier one)."""
    with open(os.path.join(self.dir, 'index.json'), 'w') as f:
      json.dump({'png16': 'depth (dataset units) = value / 65535 * norm; protocol units = that * factor',
                 'scenes': self.index}, f, indent=2)
    if self.rows:
      comparison_figure(self.rows, os.path.join(self.dir, 'figure.png'), f'{self.dataset}, x{self.scale}',
                        self.proto.unit)
    self.rows = []
    if os.path.isdir(self.final):
      shutil.rmtree(self.final)
    shutil.move(self.dir, self.final)
    files = {'dir': self.final, 'index': os.path.join(self.final, 'index.json')}
    if os.path.exists(os.path.join(self.final, 'figure.png')):
      files['figure'] = os.path.join(self.final, 'figure.png')
    return files
