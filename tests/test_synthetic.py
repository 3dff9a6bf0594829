"""Procedural RGB-D scenes: determinism, any size, occlusion edges, RGB that is not a depth proxy."""
import pickle
import time

import numpy as np
import pytest

from dsr_jax.input_pipeline import synthetic


def _grad_mag(a):
  a = np.asarray(a, np.float64)
  gy = np.abs(np.diff(a, axis=0))[:, :-1]
  gx = np.abs(np.diff(a, axis=1))[:-1, :]
  return np.maximum(gx, gy)


def test_deterministic_by_seed():
  a, b, c = (synthetic.make_scene(s, 48, 40) for s in (7, 7, 8))
  np.testing.assert_array_equal(a['depth'], b['depth'])
  np.testing.assert_array_equal(a['rgb'], b['rgb'])
  assert not np.array_equal(a['depth'], c['depth'])


@pytest.mark.parametrize('h,w', [(37, 53), (1, 1), (5, 128), (128, 128)])
def test_any_size_types_and_range(h, w):
  s = synthetic.make_scene(3, h, w)
  assert s['depth'].shape == (h, w) and s['depth'].dtype == np.float32
  assert s['rgb'].shape == (h, w, 3) and s['rgb'].dtype == np.uint8
  assert s['depth'].min() >= synthetic.DEPTH_MIN and s['depth'].max() <= synthetic.DEPTH_MAX
  assert np.isfinite(s['depth']).all()


def test_depth_has_occlusion_edges_and_smooth_interiors():
  for seed in range(5):
    g = _grad_mag(synthetic.make_scene(seed, 96, 96)['depth'])
    assert g.max() > 0.05, seed  # a jump of > 5% of the range between neighbours: an occlusion edge
    assert np.median(g) < 0.01, seed  # most of the image is smooth


def test_rgb_is_not_a_function_of_depth():
  hits_copy = hits_leak = 0
  for seed in range(8):
    s = synthetic.make_scene(seed, 96, 96)
    gd = _grad_mag(s['depth'])
    gc = np.max([_grad_mag(s['rgb'][..., c] / 255) for c in range(3)], axis=0)
    # Texture-copy trap: strong colour edges where depth is smooth.
    hits_copy += ((gc > 0.15) & (gd < 0.01)).sum() > 50
    # Depth-leak trap: depth edges with (almost) no colour edge across them.
    hits_leak += ((gd > 0.05) & (gc < 0.05)).sum() > 10
    # Equal depth, different colours: rgb is not a function of depth.
    q = np.round(s['depth'] * 200).astype(int).ravel()
    rgb = s['rgb'].reshape(-1, 3).astype(int)
    spread = [np.ptp(rgb[q == v], axis=0).max() for v in np.unique(q) if (q == v).sum() > 20]
    assert max(spread) > 60, seed
  assert hits_copy == 8 and hits_leak == 8, (hits_copy, hits_leak)


def test_fast_enough():
  synthetic.make_scene(0, 128, 128)
  t = time.perf_counter()
  for seed in range(10):
    synthetic.make_scene(seed, 128, 128)
  assert (time.perf_counter() - t) / 10 < 0.05  # ~4 ms on one core; generous for loaded CI


def test_source_format_and_disjoint_offsets():
  train = synthetic.SyntheticSource(4, 37, 53)
  val = synthetic.SyntheticSource(2, 37, 53, seed_offset=1_000_000)
  assert len(train) == 4
  ex = train[1]
  assert set(ex) == {'depth', 'rgb', 'valid', 'norm', 'name'}
  assert ex['depth'].shape == (37, 53) and ex['depth'].dtype == np.float32
  assert ex['rgb'].shape == (37, 53, 3) and ex['rgb'].dtype == np.uint8
  assert ex['valid'].dtype == np.uint8 and ex['valid'].all()
  assert ex['norm'] == np.float32(1.0) and ex['norm'].dtype == np.float32
  np.testing.assert_array_equal(ex['depth'], synthetic.make_scene(1, 37, 53)['depth'])
  names = {train[i]['name'] for i in range(4)} | {val[i]['name'] for i in range(2)}
  assert len(names) == 6
  with pytest.raises(IndexError):
    train[4]
  # Picklable (grain workers are spawned) and the cache does not travel.
  train[0]
  clone = pickle.loads(pickle.dumps(train))
  assert not clone._cache  # pylint: disable=protected-access
  np.testing.assert_array_equal(clone[0]['rgb'], train[0]['rgb'])
