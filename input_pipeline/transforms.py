"""grain transforms from the common example format to training / evaluation examples.

Common example format (what every source yields): 'depth' float32 (H, W) in the dataset's unit (0 or NaN
= invalid), 'rgb' uint8 (H, W, 3), 'valid' uint8 (H, W), 'norm' float32 scalar (depth / norm in [0, 1]),
'name' str.

Training chain (pipeline.train_dataset): PairedRandomCrop -> PairedFlipRotate (data.augment) -> Normalize
-> MakeLR -> ToTrainExample. Every transform is a module-level, picklable dataclass, so grain's spawned
workers can rebuild the pipeline.

Holes: Normalize fills invalid pixels with the nearest valid depth *in `hr_depth` itself* and reports them
in `valid`. The LR is therefore made from a hole-free HR (no zero-holes bleeding into neighbouring LR
pixels), and an LR made on device from `hr_depth` (data.lr_on_device) equals the host LR. Losses and
metrics must weight by `valid`; `hr_depth` values at valid == 0 are fill, not measurements.
"""
import dataclasses

import grain
import numpy as np
from dsr_jax.errors import DataError
from dsr_jax.input_pipeline import degradation


def example_name(ex) -> str:
  return str(ex.get('name', '<unnamed example>'))


def valid_mask(ex) -> np.ndarray:
  """Boolean (H, W): valid flag set, depth finite and > 0."""
  depth = np.asarray(ex['depth'])
  with np.errstate(invalid='ignore'):
    ok = np.isfinite(depth) & (depth > 0)
  if 'valid' in ex:
    ok &= np.asarray(ex['valid']) != 0
  return ok


def has_valid_depth(ex) -> bool:
  return bool(valid_mask(ex).any())


def check_example(ex):
  """Raises DataError unless `ex` has the common format's shapes and dtypes."""
  name = example_name(ex)
  depth, rgb = np.asarray(ex['depth']), np.asarray(ex['rgb'])
  if depth.ndim != 2:
    raise DataError(f'example {name}: depth must be (H, W), got shape {depth.shape}')
  if rgb.shape != depth.shape + (3,) or rgb.dtype != np.uint8:
    raise DataError(f'example {name}: rgb must be uint8 {depth.shape + (3,)}, got {rgb.dtype} {rgb.shape}')
  if 'valid' in ex and np.shape(ex['valid']) != depth.shape:
    raise DataError(f'example {name}: valid must be {depth.shape}, got {np.shape(ex["valid"])}')
  norm = float(ex.get('norm', 1.0))
  if not norm > 0:
    raise DataError(f'example {name}: norm must be > 0, got {norm}')


def _edge_fraction(depth: np.ndarray, ok: np.ndarray, step: float) -> float:
  d = depth.astype(np.float32)
  jump_y = (np.abs(d[1:] - d[:-1]) > step) & ok[1:] & ok[:-1]
  jump_x = (np.abs(d[:, 1:] - d[:, :-1]) > step) & ok[:, 1:] & ok[:, :-1]
  edge = np.zeros(d.shape, bool)
  edge[:-1] |= jump_y
  edge[:, :-1] |= jump_x
  return float(edge.mean())


@dataclasses.dataclass(frozen=True)
class PairedRandomCrop(grain.transforms.RandomMap):
  """One random crop offset shared by depth, rgb and valid.

  The LR is made from the HR crop afterwards, so the offset need not be a multiple of the scale. A crop
  whose valid fraction is below `min_valid`, or (when `min_edge` > 0) whose fraction of depth-edge pixels
  is below `min_edge`, is re-drawn from the same per-element rng (deterministic) up to `max_tries` times;
  if none passes, the draw with the most valid pixels (then the most edges) wins.

  Attributes:
    size: crop side in HR pixels (data.crop, a multiple of model.scale: pipeline.check_train_config).
    min_valid: minimal fraction of valid pixels in an accepted crop.
    max_tries: crop draws before giving up and keeping the best.
    min_edge: minimal fraction of edge pixels: valid pixels whose depth differs from a valid right or lower
      neighbour by more than `edge_step` x the example's norm (0 = no edge criterion).
    edge_step: the jump, in normalised depth, that makes an edge.
  """
  size: int
  min_valid: float = 0.5
  max_tries: int = 10
  min_edge: float = 0.0
  edge_step: float = 0.01

  def random_map(self, ex, rng: np.random.Generator):
    check_example(ex)
    depth = np.asarray(ex['depth'])
    h, w = depth.shape
    c = self.size
    if h < c or w < c:
      raise DataError(f'example {example_name(ex)}: image {h}x{w} is smaller than data.crop={c}')
    ok = valid_mask(ex)
    step = self.edge_step * float(ex['norm'])
    best, best_score = None, None
    for _ in range(max(1, self.max_tries)):
      y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
      frac = float(ok[y:y + c, x:x + c].mean())
      edges = _edge_fraction(depth[y:y + c, x:x + c], ok[y:y + c, x:x + c], step) if self.min_edge > 0 else 0.0
      score = (frac >= self.min_valid, frac if frac < self.min_valid else edges, frac)
      if best_score is None or score > best_score:
        best, best_score = (y, x), score
      if frac >= self.min_valid and edges >= self.min_edge:
        break
    y, x = best
    out = dict(ex)
    out['depth'] = depth[y:y + c, x:x + c]
    out['rgb'] = np.asarray(ex['rgb'])[y:y + c, x:x + c]
    out['valid'] = ok[y:y + c, x:x + c].astype(np.uint8)
    return out


@dataclasses.dataclass(frozen=True)
class PairedFlipRotate(grain.transforms.RandomMap):
  """One of the 8 flip / 90-degree rotation symmetries, applied alike to depth, rgb and valid."""

  def random_map(self, ex, rng: np.random.Generator):
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    out = dict(ex)
    for key in ('depth', 'rgb', 'valid'):
      a = np.rot90(ex[key], k, axes=(0, 1))
      if flip:
        a = a[:, ::-1]
      # Copy now, on the small raw dtypes, so every later float op runs on contiguous memory.
      out[key] = np.ascontiguousarray(a)
    return out


fill_invalid = degradation.fill_invalid  # predict fills an input's holes the same way


@dataclasses.dataclass(frozen=True)
class Normalize(grain.transforms.Map):
  """depth / norm with holes filled (see the module docstring), rgb to float32 [0, 1], valid to {0, 1}."""

  def map(self, ex):
    ok = valid_mask(ex)
    norm = np.float32(ex.get('norm', 1.0))
    depth = np.where(ok, np.asarray(ex['depth'], np.float32), np.float32(0)) / norm
    out = dict(ex)
    out['depth'] = fill_invalid(depth, ok).astype(np.float32, copy=False)
    out['rgb'] = np.multiply(ex['rgb'], np.float32(1 / 255), dtype=np.float32)
    out['valid'] = ok.astype(np.float32)
    out['norm'] = norm
    return out


def make_lr(depth, scale: int, method: str, noise_sigma: float, rng, random=None, fixed=None):
  """The degradation applied to a normalised, hole-free HR depth (H, W) -> (ceil(H/s), ceil(W/s)).

  `fixed` (a degradation.Fixed) or `random` (a degradation.Random, drawn from `rng`) replaces `method` and
  `noise_sigma` (the protocol's resampler and noise, in normalised units).
  """
  if random is not None:
    fixed = random.draw(scale, rng)
  if fixed is not None:
    return fixed.apply(depth, scale, rng)
  lr = degradation.downsample(depth, scale, method).astype(np.float32, copy=False)
  if noise_sigma > 0:
    lr = degradation.add_noise(lr, noise_sigma, rng)
  return lr


@dataclasses.dataclass(frozen=True)
class MakeLR(grain.transforms.RandomMap):
  """Adds 'lr' = degradation.downsample(normalised HR, scale, method) (+ noise of std sigma / norm).

  Attributes:
    scale: model.scale.
    method: data.degrade.
    noise_sigma: data.noise_sigma in the dataset's depth unit (divided by the example's norm here).
    random: with data.degrade='random', the mixture drawn per crop (method and noise_sigma unused).
  """
  scale: int
  method: str = 'bicubic'
  noise_sigma: float = 0.0
  random: degradation.Random | None = None

  def random_map(self, ex, rng: np.random.Generator):
    out = dict(ex)
    out['lr'] = make_lr(ex['depth'], self.scale, self.method, self.noise_sigma / float(ex['norm']), rng,
                        random=self.random)
    return out


@dataclasses.dataclass(frozen=True)
class ToTrainExample(grain.transforms.Map):
  """Final training keys: hr_depth, lr_depth (unless the LR is made on device), rgb, valid; NHWC."""

  def map(self, ex):
    out = {
        'hr_depth': np.ascontiguousarray(ex['depth'][..., None]),
        'rgb': np.ascontiguousarray(ex['rgb']),
        'valid': np.ascontiguousarray(ex['valid'][..., None]),
    }
    if 'lr' in ex:
      out['lr_depth'] = np.ascontiguousarray(ex['lr'][..., None])
    return out
