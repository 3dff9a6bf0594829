"""Procedural RGB-D scenes: the embedded default dataset (no download, any size, deterministic by seed).

A scene is a slanted background plane with a handful of occluders painted back to front through a
z-buffer: flat or slanted rectangles and convex polygons, spheres, cylinders and paraboloid bumps/bowls.
That gives the two things DSR has to learn: sharp occlusion edges and smooth curved or planar interiors.

The RGB is built to be a poor depth proxy, as in real data (the cross-task idea is that DENet must learn
structure from RGB without copying it):
- texture-copy traps: stripes, checkers and blob textures laid over the whole image, independent of depth,
  so colour edges appear where depth is smooth;
- depth-leak traps: some occluders are left unpainted (they show the background's texture), so their
  depth edges have no colour edge.
Painted occluders do carry a colour edge on their silhouette, which is the cue RGB legitimately gives.
"""
import numpy as np

DEPTH_MIN, DEPTH_MAX = 0.05, 1.0


def _rot(x, y, theta):
  c, s = np.cos(theta), np.sin(theta)
  return c * x + s * y, -s * x + c * y


def _plane(rng, x, y, base):
  """A slanted plane around `base` (gradients kept modest so depth stays in range)."""
  gx, gy = rng.uniform(-0.25, 0.25, 2)
  return base + gx * (x - x.mean()) + gy * (y - y.mean())


def _object(rng, x, y, kind, aspect):
  """Returns (mask, depth) of one occluder; depth is in [0, 1] before the global clip."""
  cx, cy = rng.uniform(0.1, 0.9) * aspect[1], rng.uniform(0.1, 0.9) * aspect[0]
  d0 = rng.uniform(0.15, 0.8)
  dx, dy = x - cx, y - cy
  if kind == 'rect':
    u, v = _rot(dx, dy, rng.uniform(0, np.pi))
    a, b = rng.uniform(0.05, 0.35, 2)
    mask = (np.abs(u) < a) & (np.abs(v) < b)
    depth = _plane(rng, x, y, d0) if rng.random() < 0.6 else np.full_like(x, d0)
  elif kind == 'polygon':
    n = rng.integers(3, 8)
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radius = rng.uniform(0.08, 0.35)
    px, py = radius * np.cos(angles), radius * np.sin(angles)
    # Convex hull of points on a circle = the polygon itself; inside = left of every edge.
    mask = np.ones(x.shape, bool)
    for k in range(n):
      ex, ey = px[(k + 1) % n] - px[k], py[(k + 1) % n] - py[k]
      mask &= ex * (dy - py[k]) - ey * (dx - px[k]) >= 0
    depth = _plane(rng, x, y, d0)
  elif kind == 'sphere':
    r = rng.uniform(0.05, 0.3)
    rr = dx * dx + dy * dy
    mask = rr < r * r
    depth = d0 - rng.uniform(0.3, 1.0) * np.sqrt(np.maximum(r * r - rr, 0))
  elif kind == 'cylinder':
    u, v = _rot(dx, dy, rng.uniform(0, np.pi))
    r, half_len = rng.uniform(0.04, 0.15), rng.uniform(0.15, 0.6)
    mask = (np.abs(v) < r) & (np.abs(u) < half_len)
    depth = d0 - rng.uniform(0.3, 1.0) * np.sqrt(np.maximum(r * r - v * v, 0)) + 0.1 * rng.uniform(-1, 1) * u
  else:  # paraboloid bump (k < 0) or bowl (k > 0) on an elliptic footprint
    u, v = _rot(dx, dy, rng.uniform(0, np.pi))
    a, b = rng.uniform(0.08, 0.3, 2)
    q = (u / a) ** 2 + (v / b) ** 2
    mask = q < 1
    depth = d0 + rng.uniform(-0.25, 0.25) * q
  return mask, depth


def _smooth_noise(rng, h, w, cells):
  """Bilinearly upsampled random grid: blobs of size ~ (h / cells)."""
  gh, gw = max(2, int(np.ceil(h / max(h, w) * cells)) + 1), max(2, int(np.ceil(w / max(h, w) * cells)) + 1)
  g = rng.random((gh, gw))
  yy = np.linspace(0, gh - 1, h)
  xx = np.linspace(0, gw - 1, w)
  y0, x0 = np.minimum(yy.astype(int), gh - 2), np.minimum(xx.astype(int), gw - 2)
  fy, fx = (yy - y0)[:, None], (xx - x0)[None, :]
  g00, g01 = g[y0][:, x0], g[y0][:, x0 + 1]
  g10, g11 = g[y0 + 1][:, x0], g[y0 + 1][:, x0 + 1]
  return (g00 * (1 - fy) * (1 - fx) + g01 * (1 - fy) * fx + g10 * fy * (1 - fx) + g11 * fy * fx)


def _texture(rng, x, y, h, w):
  """A two-colour texture that knows nothing about depth: (field (H, W) in [0, 1], colour0, colour1)."""
  c0, c1 = rng.random(3).astype(np.float32), rng.random(3).astype(np.float32)
  kind = rng.integers(3)
  if kind == 0:  # stripes
    u, _ = _rot(x, y, rng.uniform(0, np.pi))
    t = np.sin(2 * np.pi * u / rng.uniform(0.02, 0.15) + rng.uniform(0, 2 * np.pi))
    t = (t > 0) if rng.random() < 0.5 else 0.5 * (t + 1)
  elif kind == 1:  # checkers
    u, v = _rot(x, y, rng.uniform(0, np.pi))
    p = rng.uniform(0.03, 0.15)
    t = (np.floor(u / p) + np.floor(v / p)) % 2
  else:  # noise blobs
    t = _smooth_noise(rng, h, w, rng.integers(3, 12))
    if rng.random() < 0.5:
      t = t > 0.5
  return np.asarray(t, np.float32), c0, c1


def _paint(rgb, mask, texture):
  """rgb[mask] = texture colour; only the masked pixels are touched."""
  t, c0, c1 = texture
  rgb[mask] = c0 + (c1 - c0) * t[mask][:, None]


def make_scene(seed: int, height: int, width: int) -> dict:
  """One procedural RGB-D scene.

  Args:
    seed: any non-negative int; the same seed always gives the same scene (np.random.default_rng(seed)).
    height: H >= 1.
    width: W >= 1.

  Returns:
    dict(depth=float32 (H, W) in [0.05, 1], rgb=uint8 (H, W, 3)).
  """
  rng = np.random.default_rng(seed)
  h, w = int(height), int(width)
  side = max(h, w)
  # Coordinates in units of the longer side, so a scene looks alike at any resolution.
  y, x = np.meshgrid((np.arange(h) + 0.5) / side, (np.arange(w) + 0.5) / side, indexing='ij')
  aspect = (h / side, w / side)

  depth = _plane(rng, x, y, rng.uniform(0.75, 0.95))
  n_obj = int(rng.integers(3, 8))
  kinds = rng.choice(['rect', 'polygon', 'sphere', 'cylinder', 'paraboloid'], n_obj)
  objects = [_object(rng, x, y, k, aspect) for k in kinds]
  # At least one painted occluder (a true colour edge) and one unpainted (a depth-leak trap).
  painted = rng.random(n_obj) < 0.6
  painted[0], painted[1] = True, False
  rng.shuffle(painted)

  rgb = np.empty((h, w, 3), np.float32)
  _paint(rgb, np.ones((h, w), bool), _texture(rng, x, y, h, w))
  # A second background texture in a random region: colour edges where depth is smooth.
  region, _ = _object(rng, x, y, 'polygon', aspect)
  _paint(rgb, region, _texture(rng, x, y, h, w))

  # Paint far to near so nearer surfaces win the z-test.
  for i in np.argsort([-float(np.mean(d)) for _, d in objects]):
    mask, obj_depth = objects[i]
    mask = mask & (obj_depth < depth)
    depth = np.where(mask, obj_depth, depth)
    if painted[i]:
      _paint(rgb, mask, _texture(rng, x, y, h, w))

  # Sensor noise (about 5 grey levels), so flat colour regions are not exact.
  rgb = rgb * np.float32(255) + rng.standard_normal((h, w, 3), np.float32) * np.float32(5)
  depth = np.clip(depth, DEPTH_MIN, DEPTH_MAX).astype(np.float32)
  rgb = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
  return {'depth': depth, 'rgb': rgb}


class SyntheticSource:
  """grain random-access source of procedural scenes in the common example format.

  Item i is `make_scene(seed_offset + i, height, width)`; train and validation use disjoint offsets
  (train 0.., validation 1_000_000..). Generated scenes are memoised per process up to `cache_mb`
  (a 128x128 scene costs ~4 ms to make and 112 KB to keep); the cache is not pickled, so the source
  stays tiny to ship into grain workers.
  """

  def __init__(self, num: int, height: int, width: int, seed_offset: int = 0, *, cache_mb: float = 256):
    if num < 1 or height < 1 or width < 1:
      raise ValueError(f'SyntheticSource: need num, height, width >= 1, got {num}, {height}, {width}')
    self.num, self.height, self.width, self.seed_offset = int(num), int(height), int(width), int(seed_offset)
    self._cache_items = int(cache_mb * 2**20 // (self.height * self.width * 7))
    self._cache = {}

  def __len__(self) -> int:
    return self.num

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if not -self.num <= index < self.num:
      raise IndexError(f'SyntheticSource index {index} out of range [0, {self.num})')
    seed = self.seed_offset + index % self.num
    scene = self._cache.get(seed)
    if scene is None:
      scene = make_scene(seed, self.height, self.width)
      scene['depth'].setflags(write=False)
      scene['rgb'].setflags(write=False)
      if len(self._cache) < self._cache_items:
        self._cache[seed] = scene
    return {
        'depth': scene['depth'],
        'rgb': scene['rgb'],
        'valid': np.ones((self.height, self.width), np.uint8),
        'norm': np.float32(1.0),
        'name': f'synthetic_{seed}',
    }

  def __getstate__(self):
    state = self.__dict__.copy()
    state['_cache'] = {}
    return state

  def __repr__(self):
    return (f'SyntheticSource(num={self.num}, height={self.height}, width={self.width}, '
            f'seed_offset={self.seed_offset})')
