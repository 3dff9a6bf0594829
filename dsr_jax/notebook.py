"""Helpers for notebooks (colab/dsr_jax_quickstart.ipynb): the notebook itself only calls these.

Kept free of logic that training or evaluation need, so nothing here is on a hot path.
"""
import sys

import matplotlib.pyplot as plt
import numpy as np


def in_colab() -> bool:
  return 'google.colab' in sys.modules


def tensorboard(workdir: str) -> str:
  """Inline TensorBoard in Colab; elsewhere (e.g. headless runs) prints the command instead."""
  cmd = f'--logdir {workdir}'
  if in_colab():
    from IPython import get_ipython  # pylint: disable=g-import-not-at-top
    ip = get_ipython()
    ip.run_line_magic('load_ext', 'tensorboard')
    ip.run_line_magic('tensorboard', cmd)
  else:
    print(f'tensorboard {cmd}')
  return cmd


def demo_scene(config, seed: int = 10**6, size=(128, 128)):
  """A held-out synthetic scene (the validation seeds): normalised HR depth (H, W) in [0, 1]."""
  from dsr_jax.input_pipeline import synthetic  # pylint: disable=g-import-not-at-top
  return synthetic.make_scene(seed, *size)['depth'].astype(np.float32)


def load_depth(path: str, norm: float) -> np.ndarray:
  """A depth map file (8/16-bit PNG or .npy) normalised by `norm` (e.g. 255 for Middlebury disparity)."""
  from dsr_jax import predict  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  depth, _ = predict.read_depth(pathlib.Path(path))
  return np.asarray(depth, np.float32) / np.float32(norm)


def compare(checkpoint: str, hr: np.ndarray, *, tile: int = 0, ensemble: bool = False):
  """Degrades `hr` (normalised, (H, W)) by the checkpoint's scale and super-resolves it.

  Returns a dict of (H, W) maps: lr (nearest-upsampled for display), bicubic, ours, gt, and the MADs.
  """
  from dsr_jax import evaluate  # pylint: disable=g-import-not-at-top
  from dsr_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  from dsr_jax import restore  # pylint: disable=g-import-not-at-top
  from dsr_jax.input_pipeline import degradation  # pylint: disable=g-import-not-at-top
  config, params = restore.load_for_inference(checkpoint)
  s = int(config.model.scale)
  dsr = models_lib.build(config.model).dsr
  h, w = hr.shape
  lr = degradation.downsample(hr.astype(np.float64), s).astype(np.float32)
  ours = evaluate.super_resolve(dsr, params, lr, tile=tile, ensemble=ensemble)[:h, :w]
  bic = degradation.upsample_bicubic(lr.astype(np.float64), s)[:h, :w].astype(np.float32)
  lr_big = np.kron(lr, np.ones((s, s), np.float32))[:h, :w]
  return {'scale': s, 'lr': lr_big, 'bicubic': bic, 'ours': ours, 'gt': hr,
          'mad_bicubic': float(np.abs(bic - hr).mean()), 'mad_ours': float(np.abs(ours - hr).mean())}


def plot(result: dict, unit_scale: float = 1.0, title: str = ''):
  """LR | bicubic | ours | GT | |error of ours| side by side."""
  panels = [('LR (nearest)', result['lr']), (f'bicubic  MAD {result["mad_bicubic"] * unit_scale:.3f}',
                                               result['bicubic']),
            (f'dsr_jax  MAD {result["mad_ours"] * unit_scale:.3f}', result['ours']), ('GT', result['gt'])]
  lo, hi = float(result['gt'].min()), float(result['gt'].max())
  fig, axes = plt.subplots(1, 5, figsize=(20, 4.4))
  for ax, (name, img) in zip(axes, panels):
    ax.imshow(img, cmap='viridis', vmin=lo, vmax=hi)
    ax.set_title(name)
    ax.axis('off')
  err = np.abs(result['ours'] - result['gt']) * unit_scale
  im = axes[4].imshow(err, cmap='inferno')
  axes[4].set_title('|ours - GT|')
  axes[4].axis('off')
  fig.colorbar(im, ax=axes[4], fraction=0.046)
  fig.suptitle(title or f'x{result["scale"]} depth super-resolution')
  fig.tight_layout(rect=(0, 0, 1, 0.92))  # room for the suptitle
  return fig
