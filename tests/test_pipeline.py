"""grain pipelines: alignment, determinism, restore, process shards, eval padding, bad inputs."""
import argparse

from absl import flags
import grain
import jax.numpy as jnp
import numpy as np
import pytest

from dsr_jax.configs import default
from dsr_jax.errors import ConfigError, DataError
from dsr_jax.input_pipeline import bench_pipeline, degradation, pipeline, synthetic, transforms


def small_config(**data):
  c = default.get_config()
  c.seed = 0
  c.model.scale = 4
  c.data.crop = 16
  c.data.workers = 0
  c.train.batch_size = 4
  for k, v in data.items():
    c.data[k] = v
  return c


class ListSource:
  """In-memory random-access source of common-format examples."""

  def __init__(self, examples):
    self.examples = list(examples)

  def __len__(self):
    return len(self.examples)

  def __getitem__(self, i):
    return dict(self.examples[i])


def example(depth, name, rgb=None, valid=None, norm=1.0):
  depth = np.asarray(depth, np.float32)
  h, w = depth.shape
  return {
      'depth': depth,
      'rgb': np.zeros((h, w, 3), np.uint8) if rgb is None else rgb,
      'valid': np.ones((h, w), np.uint8) if valid is None else valid,
      'norm': np.float32(norm),
      'name': name,
  }


def constant_source(n, size=16):
  """Example i has constant depth (i + 1) / 32: the id survives crops, flips and normalisation."""
  return ListSource(example(np.full((size, size), (i + 1) / 32), f'ex{i}') for i in range(n))


def ids(batch):
  return [int(round(v * 32)) - 1 for v in batch['hr_depth'][:, 0, 0, 0]]


def take(ds, n):
  it = iter(ds)
  out = [next(it) for _ in range(n)]
  if hasattr(it, 'close'):
    it.close()
  return out


def assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_train_batch_format():
  c = small_config()
  b = take(pipeline.train_dataset(c, synthetic.SyntheticSource(6, 24, 20), process_index=0,
                                  process_count=1), 1)[0]
  assert set(b) == {'hr_depth', 'lr_depth', 'rgb', 'valid'}
  assert b['hr_depth'].shape == (4, 16, 16, 1)
  assert b['lr_depth'].shape == (4, 4, 4, 1)
  assert b['rgb'].shape == (4, 16, 16, 3)
  assert b['valid'].shape == (4, 16, 16, 1)
  for v in b.values():
    assert v.dtype == np.float32 and np.isfinite(v).all()
  assert 0 <= b['rgb'].min() and b['rgb'].max() <= 1
  # Default process index/count come from jax (one process here).
  b2 = take(pipeline.train_dataset(c, synthetic.SyntheticSource(6, 24, 20)), 1)[0]
  assert_batches_equal(b, b2)


def position_source(h=40, w=48, n=3):
  """Depth and rgb both encode the pixel position, so any misalignment is visible exactly."""
  yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
  out = []
  for i in range(n):
    depth = 1.0 + yy * w + xx + i * h * w
    rgb = np.stack([yy, xx, np.full_like(yy, i)], -1).astype(np.uint8)
    out.append(example(depth, f'pos{i}', rgb=rgb, norm=float(n * h * w + 1)))
  return ListSource(out), w, float(n * h * w + 1)


def test_crop_alignment_hr_rgb_lr_under_flips_and_rotations():
  src, w, norm = position_source()
  c = small_config(augment=True)
  orientations = set()
  for b in take(pipeline.train_dataset(c, src, process_index=0, process_count=1), 16):
    for k in range(b['hr_depth'].shape[0]):
      hr = b['hr_depth'][k, ..., 0]
      rgb = np.round(b['rgb'][k] * 255).astype(int)
      pos = np.round(hr.astype(np.float64) * norm).astype(int) - 1
      i = rgb[..., 2]
      np.testing.assert_array_equal(pos, i * 40 * w + rgb[..., 0] * w + rgb[..., 1])
      # The LR is the degradation of exactly this HR crop.
      np.testing.assert_allclose(b['lr_depth'][k, ..., 0], degradation.downsample(hr, 4), atol=1e-6)
      # Orientation: which way source x (green) and y (red) grow along the crop's columns and rows.
      orientations.add(tuple(int(np.sign(rgb[a, b, ch] - rgb[0, 0, ch]))
                             for ch in (0, 1) for a, b in ((0, 1), (1, 0))))
  assert len(orientations) == 8  # all flips / rot90s occurred


def test_crop_alignment_step_edge():
  # A vertical depth step and an rgb step at the same column; the LR step sits at column / scale.
  depth = np.where(np.arange(64)[None, :] < 32, 0.2, 0.8) * np.ones((64, 1))
  rgb = np.zeros((64, 64, 3), np.uint8)
  rgb[:, 32:, 0] = 255
  c = small_config(augment=False, crop=32)
  b = take(pipeline.train_dataset(c, ListSource([example(depth, 'step', rgb=rgb)]), process_index=0,
                                  process_count=1), 2)
  edges = 0
  for batch in b:
    for k in range(4):
      hr, red = batch['hr_depth'][k, ..., 0], batch['rgb'][k, ..., 0]
      np.testing.assert_array_equal(hr > 0.5, red > 0.5)
      cols = np.flatnonzero(np.diff((hr[0] > 0.5).astype(int)))
      if cols.size:  # the edge is inside the crop: the LR edge lies on the HR edge / scale
        lr_row = batch['lr_depth'][k, 0, :, 0]
        lr_edge = np.interp(0.5, lr_row, np.arange(8) * 4 + 1.5)  # LR pixel centres in HR coordinates
        assert abs(lr_edge - (cols[0] + 0.5)) < 1.0
        edges += 1
  assert edges >= 4


def test_same_batches_whatever_the_worker_count_and_restore():
  flags.FLAGS.mark_as_parsed()  # grain's spawned workers read absl flags
  src = synthetic.SyntheticSource(10, 24, 24)
  ref = take(pipeline.train_dataset(small_config(), src, process_index=0, process_count=1), 5)
  ds2 = pipeline.train_dataset(small_config(workers=2), src, process_index=0, process_count=1)
  it = iter(ds2)
  try:
    got = [next(it) for _ in range(3)]
    state = it.get_state()
  finally:
    it.close()
  for a, b in zip(ref, got):
    assert_batches_equal(a, b)
  # A fresh worker iterator restored from the state continues with batch 4.
  it = iter(ds2)
  try:
    it.set_state(state)
    assert_batches_equal(next(it), ref[3])
  finally:
    it.close()


def test_iterator_state_restore_in_process_and_through_orbax(tmp_path):
  ocp = pytest.importorskip('orbax.checkpoint')
  c = small_config()
  src = synthetic.SyntheticSource(7, 20, 20)
  ds = pipeline.train_dataset(c, src, process_index=0, process_count=1)
  ref = take(ds, 6)
  it = iter(ds)
  for _ in range(3):
    next(it)
  state = it.get_state()
  it2 = iter(pipeline.train_dataset(c, src, process_index=0, process_count=1))
  it2.set_state(state)
  assert_batches_equal(next(it2), ref[3])

  mngr = ocp.CheckpointManager(tmp_path / 'ckpt')
  mngr.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
  mngr.wait_until_finished()
  it3 = iter(pipeline.train_dataset(c, src, process_index=0, process_count=1))
  mngr.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(it3)))
  mngr.close()
  assert_batches_equal(next(it3), ref[3])
  assert_batches_equal(next(it3), ref[4])


def test_process_shards_are_disjoint_and_make_the_global_batch():
  n = 8
  c = small_config(augment=False)
  glob = take(pipeline.train_dataset(c, constant_source(n), process_index=0, process_count=1), 4)
  shards = [take(pipeline.train_dataset(c, constant_source(n), process_index=p, process_count=2), 4)
            for p in range(2)]
  assert shards[0][0]['hr_depth'].shape[0] == 2
  # One epoch = two global batches: the shards are disjoint and together cover every example.
  epoch = [ids(b) for p in range(2) for b in shards[p][:2]]
  flat = sum(epoch, [])
  assert sorted(flat) == list(range(n))
  # Step by step, the processes' shares are exactly the single-process global batch.
  for k in range(4):
    assert sorted(ids(shards[0][k]) + ids(shards[1][k])) == sorted(ids(glob[k]))
  # The second epoch is reshuffled.
  assert ids(glob[0]) + ids(glob[1]) != ids(glob[2]) + ids(glob[3])


def test_eval_padding_counts_every_image_once():
  rng = np.random.default_rng(0)
  exs = [example(rng.random((22, 30)) + 0.1, f'a{i}') for i in range(3)]
  exs += [example(rng.random((20, 20)) + 0.1, f'b{i}') for i in range(2)]
  exs.insert(2, example(np.zeros((20, 20)), 'dead'))  # all-invalid: present once, mask 0
  src = ListSource(exs)
  for eval_batch in (1, 2, 4):
    c = small_config(eval_batch=eval_batch)
    ds = pipeline.eval_dataset(c, source=src)
    counts = {}
    for b in ds:
      bsz = b['mask'].shape[0]
      assert bsz == eval_batch
      h, w = b['hr_depth'].shape[1:3]
      assert b['lr_depth'].shape == (bsz, -(-h // 4), -(-w // 4), 1)
      assert b['rgb'].shape == (bsz, h, w, 3) and b['valid'].shape == (bsz, h, w, 1)
      assert b['norm'].shape == (bsz,) and b['mask'].dtype == np.float32
      for k in range(bsz):
        if b['name'][k]:
          counts[b['name'][k]] = counts.get(b['name'][k], 0) + 1
          np.testing.assert_allclose(b['lr_depth'][k, ..., 0],
                                     degradation.downsample(b['hr_depth'][k, ..., 0], 4), atol=1e-6)
        else:
          assert b['mask'][k] == 0
        assert b['mask'][k] == (b['name'][k] not in ('', 'dead'))
    assert counts == {e['name']: 1 for e in exs}, eval_batch
  b = pipeline.eval_dataset(small_config(), source=src)[0]
  np.testing.assert_allclose(b['hr_depth'][0, ..., 0], exs[0]['depth'], atol=1e-6)


def test_eval_noise_is_deterministic_per_image():
  src = ListSource([example(np.full((16, 16), 100.0), 'n', norm=200.0)])
  c = small_config(noise_sigma=10.0)
  a, b = pipeline.eval_dataset(c, source=src)[0], pipeline.eval_dataset(c, source=src)[0]
  np.testing.assert_array_equal(a['lr_depth'], b['lr_depth'])
  assert 0.02 < np.std(a['lr_depth']) < 0.08  # sigma / norm = 0.05


@pytest.mark.parametrize('bad', [dict(crop=18), dict(crop=0)])
def test_crop_not_multiple_of_scale(bad):
  with pytest.raises(ConfigError, match='data.crop'):
    pipeline.train_dataset(small_config(**bad), constant_source(2), process_index=0, process_count=1)


def test_bad_scale_batch_and_small_images():
  c = small_config()
  c.model.scale = 3
  with pytest.raises(ConfigError, match='model.scale'):
    pipeline.train_dataset(c, constant_source(2), process_index=0, process_count=1)
  with pytest.raises(ConfigError, match='model.scale'):
    pipeline.eval_dataset(c, source=constant_source(2))
  c = small_config()
  c.train.batch_size = 6
  with pytest.raises(ConfigError, match='train.batch_size'):
    pipeline.train_dataset(c, constant_source(2), process_index=0, process_count=4)
  with pytest.raises(ConfigError, match='data.degrade'):
    pipeline.train_dataset(small_config(degrade='lanczos'), constant_source(2), process_index=0,
                           process_count=1)
  small = ListSource([example(np.ones((12, 40)), 'tiny_one')])
  with pytest.raises(DataError, match='tiny_one.*data.crop=16'):
    take(pipeline.train_dataset(small_config(), small, process_index=0, process_count=1), 1)


def test_all_invalid_example_is_skipped_and_counted_never_nan():
  exs = [example(np.full((16, 16), (i + 1) / 32), f'ex{i}') for i in range(5)]
  exs[1]['depth'] = np.zeros((16, 16), np.float32)
  exs[3]['depth'] = np.full((16, 16), np.nan, np.float32)
  ds = pipeline.train_dataset(small_config(), ListSource(exs), process_index=0, process_count=1)
  it = iter(ds)
  seen = set()
  for _ in range(10):
    b = next(it)
    for v in b.values():
      assert np.isfinite(v).all()
    assert b['valid'].all()
    seen.update(ids(b))
  assert seen == {0, 2, 4}
  assert pipeline.skipped_examples(ds) == {1, 3}
  dead = ListSource([example(np.zeros((16, 16)), 'dead')])
  with pytest.raises(DataError, match='entirely invalid'):
    take(pipeline.train_dataset(small_config(), dead, process_index=0, process_count=1), 1)


def test_holes_are_filled_for_the_lr_but_masked():
  depth = np.full((32, 32), 0.5, np.float32)
  depth[10:20, 12:22] = 0  # a 100-pixel hole: any 16x16 crop stays >= 60% valid
  valid = np.ones((32, 32), np.uint8)
  valid[0:4, 0:4] = 0  # flagged invalid although depth is set
  depth[30, 30] = np.nan
  src = ListSource([example(depth, 'holes', valid=valid)])
  for b in take(pipeline.train_dataset(small_config(), src, process_index=0, process_count=1), 3):
    np.testing.assert_allclose(b['hr_depth'], 0.5)  # holes filled from their valid neighbours
    np.testing.assert_allclose(b['lr_depth'], 0.5, atol=1e-6)  # no zero-hole bleeding
    assert b['valid'].mean() >= 0.5  # crops re-drawn until at least half of them is valid
  out = transforms.Normalize().map(example(depth, 'holes', valid=valid))
  assert out['valid'][15, 15] == 0 and out['valid'][2, 2] == 0 and out['valid'][30, 30] == 0
  assert out['valid'].sum() == 32 * 32 - 100 - 16 - 1


def test_low_valid_crops_are_redrawn_deterministically():
  depth = np.full((16, 64), 0.5, np.float32)
  depth[:, :44] = 0  # only crops with x0 >= 36 reach the 50% threshold
  src = ListSource([example(depth, 'mostly_empty')])
  c = small_config(augment=False)
  a = take(pipeline.train_dataset(c, src, process_index=0, process_count=1), 3)
  b = take(pipeline.train_dataset(c, src, process_index=0, process_count=1), 3)
  for x, y in zip(a, b):
    assert_batches_equal(x, y)
  assert min(x['valid'].mean() for x in a) >= 0.5


def test_min_edge_prefers_crops_with_depth_edges():
  depth = np.full((16, 128), 0.2, np.float32)
  depth[:, 120:] = 0.8  # one step edge at x = 120: only crops starting at x0 >= 105 contain it
  src = ListSource([example(depth, 'one_edge')])
  def edge_share(batches):
    return np.mean([(np.abs(np.diff(x['hr_depth'][..., 0], axis=-1)) > 0.1).any(axis=(1, 2)).mean()
                    for x in batches])
  plain = take(pipeline.train_dataset(small_config(augment=False), src, process_index=0, process_count=1), 8)
  c = small_config(augment=False, min_edge=0.01, crop_tries=100)
  edgy = take(pipeline.train_dataset(c, src, process_index=0, process_count=1), 8)
  again = take(pipeline.train_dataset(c, src, process_index=0, process_count=1), 8)
  for x, y in zip(edgy, again):
    assert_batches_equal(x, y)
  assert edge_share(plain) < 0.4 and edge_share(edgy) > 0.9, (edge_share(plain), edge_share(edgy))


def test_lr_on_device_and_noise():
  src = synthetic.SyntheticSource(4, 24, 24)
  host = take(pipeline.train_dataset(small_config(), src, process_index=0, process_count=1), 1)[0]
  dev = take(pipeline.train_dataset(small_config(lr_on_device=True), src, process_index=0,
                                    process_count=1), 1)[0]
  assert 'lr_depth' not in dev
  np.testing.assert_array_equal(dev['hr_depth'], host['hr_depth'])
  lr = degradation.downsample(jnp.asarray(dev['hr_depth']), 4, xp=jnp)
  np.testing.assert_allclose(np.asarray(lr), host['lr_depth'], atol=1e-5)
  noisy = take(pipeline.train_dataset(small_config(noise_sigma=0.05), src, process_index=0,
                                      process_count=1), 1)[0]
  np.testing.assert_array_equal(noisy['hr_depth'], host['hr_depth'])
  assert 0.03 < np.std(noisy['lr_depth'] - host['lr_depth']) < 0.07


def test_bench_pipeline_runs_and_is_reproducible():
  p = argparse.ArgumentParser()
  bench_pipeline.add_args(p)
  args = p.parse_args(['--crop', '32', '--batch', '4', '--iters', '2', '--warmup', '1'])
  r1, r2 = bench_pipeline.run(args), bench_pipeline.run(args)
  assert r1['samples_per_s'] > 0
  assert r1['first_batch_sha256'] == r2['first_batch_sha256'] and len(r1['first_batch_sha256']) == 64
  assert {k: r1[k] for k in ('dataset', 'crop', 'scale', 'batch', 'workers')} == {
      'dataset': 'synthetic_rgbd', 'crop': 32, 'scale': 4, 'batch': 4, 'workers': 0}


def test_eval_middlebury2005_through_the_pipeline_keeps_the_protocol(shared_data_dir):
  """eval_dataset's float32 LR + bicubic upsampling still gives the paper's x4 Bicubic MAD."""
  pytest.importorskip('dsr_jax.input_pipeline.sources')
  c = small_config(name='middlebury2005', dir=str(shared_data_dir), eval_batch=4)
  mad = {}
  for b in pipeline.eval_dataset(c, 'test'):
    for k in np.flatnonzero(b['mask']):
      norm = b['norm'][k]
      gt = np.round(b['hr_depth'][k, ..., 0] * norm)
      h, w = gt.shape
      pred = degradation.upsample_bicubic(b['lr_depth'][k, ..., 0], 4)[:h, :w] * norm
      mad[b['name'][k]] = round(float(np.abs(np.round(np.clip(pred, 0, 255)) - gt).mean()), 2)
  assert len(mad) == 6
  assert (mad['art'], mad['books'], mad['moebius']) == (0.97, 0.29, 0.30)


def test_mix_repeats_weight_train_only():
  from dsr_jax.input_pipeline import readers, sources  # pylint: disable=g-import-not-at-top
  assert readers.parse_mix('middlebury_lu*8+rgbdd') == [('middlebury_lu', 8), ('rgbdd', 1)]
  c = default.get_config()
  c.data.synthetic.num_train, c.data.synthetic.num_val = 5, 3
  c.data.name = 'synthetic_rgbd*3'
  train = sources.get_source(c.data, 'train')
  assert len(train) == 15
  np.testing.assert_array_equal(train[1]['depth'], train[6]['depth'])  # a repeat, not a new scene
  assert len(sources.get_source(c.data, 'validation')) == 3  # evaluation sees every image once
  for bad in ('synthetic_rgbd*0', 'synthetic_rgbd*two', 'synthetic_rgbd*'):
    with pytest.raises(DataError, match='repeat count'):
      readers.parse_mix(bad)
  with pytest.raises(DataError, match="unknown dataset 'nope'"):
    readers.parse_mix('synthetic_rgbd*2+nope')


def test_val_name_validates_on_another_dataset(shared_data_dir):
  from dsr_jax import train  # pylint: disable=g-import-not-at-top
  c = default.get_config()
  c.data.dir = str(shared_data_dir)
  c.data.name = 'middlebury_lu*8+rgbdd'
  c.data.val_name = 'middlebury_lu'
  names = [n for b in train.val_dataset(c) for n, m in zip(b['name'], b['mask']) if m]
  assert len(names) == 4 and all(n.startswith(('Middlebury', 'RGBD')) for n in names), names
  c.data.val_name = ''
  assert sum(int(b['mask'].sum()) for b in train.val_dataset(c)) == 44  # 4 middlebury_lu + 40 rgbdd
