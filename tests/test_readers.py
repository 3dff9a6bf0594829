"""Manual-directory readers and in-memory sources: splits, units, masks and one-line errors."""
import logging
import pickle

import ml_collections
import numpy as np
import pytest
from PIL import Image

from dsr_jax.errors import ConfigError
from dsr_jax.errors import DataError
from dsr_jax.input_pipeline import readers
from dsr_jax.input_pipeline import sources

EXCLUDED_IDS = ('_02', '_06', '_14', '_18', '_21', '_24')


def _one_line_error(fn, *args, match=()):
  """Runs fn(*args), expecting a one-line DataError containing every string in `match`."""
  with pytest.raises(DataError) as info:
    fn(*args)
  message = str(info.value)
  assert '\n' not in message, message
  for part in match:
    assert part in message, (part, message)
  return message


def _png(path, array):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path)


def _fake_middlebury_lu(root, ids=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), lu_ids=(1, 2), size=(12, 16)):
  """A tiny middlebury_lu layout: constant disparity id*10, RGB of the same size."""
  h, w = size
  for i in ids:
    base = root / 'middlebury_lu' / 'Middlebury'
    _png(base / 'Depth' / f'Middlebury_{i:02d}_output_depth.png', np.full((h, w), 10 * i, np.uint8))
    _png(base / 'RGB' / f'Middlebury_{i:02d}_output_color.png', np.full((h, w, 3), i, np.uint8))
  for i in lu_ids:
    base = root / 'middlebury_lu' / 'Lu'
    _png(base / 'Depth' / f'RGBD_{i:02d}_output_depth.png', np.full((h, w), 200 + i, np.uint8))
    _png(base / 'RGB' / f'RGBD_{i:02d}_ouput_color.png', np.zeros((h, w, 3), np.uint8))
  return root


def _fake_middlebury2005(root, size=(8, 10)):
  h, w = size
  for scene in readers.BENCHMARK_SCENES:
    _png(root / 'middlebury2005' / 'depth' / f'{scene}.bmp', np.full((h, w), 100, np.uint8))
    _png(root / 'middlebury2005' / 'rgb' / f'{scene}.png', np.zeros((h, w, 3), np.uint8))
  return root


def _data_config(name, data_dir='', tfds_dir=''):
  c = ml_collections.ConfigDict()
  c.name, c.dir, c.tfds_dir = name, str(data_dir), str(tfds_dir)
  c.synthetic = ml_collections.ConfigDict({'num_train': 5, 'num_val': 2, 'size': (16, 24)})
  return c


def _check_common(example, unit_norm):
  depth, rgb, valid = example['depth'], example['rgb'], example['valid']
  assert depth.dtype == np.float32 and depth.ndim == 2
  assert rgb.dtype == np.uint8 and rgb.shape == depth.shape + (3,)
  assert valid.dtype == np.uint8 and valid.shape == depth.shape
  np.testing.assert_array_equal(valid, (depth > 0).astype(np.uint8))
  assert example['norm'].dtype == np.float32 and example['norm'] == unit_norm
  assert isinstance(example['name'], str)


# ------------------------------------------------------------------------------------------- real data


def test_middlebury_lu_splits_exclude_benchmark(shared_data_dir):
  train = readers.list_records(shared_data_dir, 'middlebury_lu', 'train')
  val = readers.list_records(shared_data_dir, 'middlebury_lu', 'validation')
  train_names, val_names = [r.name for r in train], [r.name for r in val]
  assert (len(train), len(val)) == (26, 4)
  assert readers.list_records(shared_data_dir, 'middlebury_lu', 'test') == val
  assert val_names == ['Middlebury_07', 'Middlebury_16', 'Middlebury_27', 'RGBD_05']
  assert not set(train_names) & set(val_names)
  for name in train_names + val_names:
    assert not (name.startswith('Middlebury') and name.endswith(EXCLUDED_IDS)), name
  assert sum(n.startswith('RGBD_') for n in train_names + val_names) == 6
  # The Lu colour files keep their original misspelling.
  assert all('ouput_color' in r.rgb_path for r in train + val if r.name.startswith('RGBD_'))


def test_middlebury_lu_examples(shared_data_dir):
  examples = readers.load_split(shared_data_dir, 'middlebury_lu', 'validation')
  assert [e['name'] for e in examples] == ['Middlebury_07', 'Middlebury_16', 'Middlebury_27', 'RGBD_05']
  for e in examples:
    _check_common(e, 255.0)
    assert 0 <= e['depth'].min() and e['depth'].max() <= 255
    np.testing.assert_array_equal(e['depth'], np.round(e['depth']))  # 8-bit disparity, unscaled
  assert readers.DATASETS['middlebury_lu'].unit == 'disparity_0_255'


def test_middlebury2005_is_the_benchmark(shared_data_dir):
  examples = readers.load_split(shared_data_dir, 'middlebury2005', 'test')
  assert tuple(e['name'] for e in examples) == readers.BENCHMARK_SCENES
  for e in examples:
    _check_common(e, 255.0)
    assert e['depth'].shape == (1080, 1320)
    assert 9 <= e['depth'].min() and e['depth'].max() <= 231  # Holes filled (README).
    assert e['valid'].all()


def test_rgbdd_splits_and_mm(shared_data_dir):
  split = {s: readers.list_records(shared_data_dir, 'rgbdd', s)
           for s in ('train', 'validation', 'test', 'full', 'realscene')}
  names = {s: [r.name for r in recs] for s, recs in split.items()}
  assert {s: len(v) for s, v in names.items()} == {
      'train': 362, 'validation': 40, 'test': 40, 'full': 405, 'realscene': 3}
  assert names['test'] == names['validation']
  assert not set(names['train']) & set(names['validation'])
  assert not set(names['realscene']) & set(names['train'] + names['validation'])
  assert set(names['train'] + names['validation'] + names['realscene']) == set(names['full'])

  record = split['validation'][0]
  example = readers.load_example(record)
  _check_common(example, 4000.0)
  raw = np.asarray(Image.open(record.depth_path))
  assert raw.dtype == np.uint16
  np.testing.assert_array_equal(example['depth'], raw.astype(np.float32))  # mm, unscaled
  assert example['depth'].max() > 255 and example['depth'].max() <= 4000
  lr = readers.load_depth_lr(split['realscene'][0])
  assert lr.shape == (144, 192) and lr.dtype == np.float32 and lr.max() > 255


def test_nyu_v2_metres(shared_data_dir):
  records = readers.list_records(shared_data_dir, 'nyu_v2', 'test')
  assert [r.name for r in records] == ['1000', '1001', '1002']
  for record in records:
    example = readers.load_example(record)
    _check_common(example, 10.0)
    np.testing.assert_array_equal(example['depth'], np.load(record.depth_path, allow_pickle=False))
    assert 0.5 < example['depth'].min() and example['depth'].max() < 10.0
  _one_line_error(readers.list_records, shared_data_dir, 'nyu_v2', 'train', match=("'train'", 'empty'))


def test_in_memory_source_and_mix(shared_data_dir, monkeypatch):
  monkeypatch.setenv(readers.ENV_DATA_DIR, str(shared_data_dir))
  # data.dir is empty, so $DSR_DATA_DIR is read.
  mixed = sources.get_source(_data_config('middlebury2005+nyu_v2'), 'test')
  assert len(mixed) == 9
  assert [mixed[i]['name'] for i in range(len(mixed))] == list(readers.BENCHMARK_SCENES) + [
      '1000', '1001', '1002']
  assert (mixed[0]['norm'], mixed[6]['norm'], mixed[-1]['norm']) == (255.0, 10.0, 10.0)
  with pytest.raises(ValueError):
    mixed[0]['depth'][0, 0] = 1.0  # Cached arrays are read-only.
  with pytest.raises(IndexError):
    mixed[9]  # pylint: disable=pointless-statement
  # Pickles as a file list (for grain workers) and decodes the same examples again.
  restored = pickle.loads(pickle.dumps(mixed))
  assert len(pickle.dumps(mixed)) < 100_000
  for i in (0, 8):
    np.testing.assert_array_equal(restored[i]['depth'], mixed[i]['depth'])
    assert restored[i]['name'] == mixed[i]['name']


# ------------------------------------------------------------------------------------------- sources


def test_synthetic_source_from_config():
  config = _data_config('synthetic_rgbd')
  train, val = sources.get_source(config, 'train'), sources.get_source(config, 'validation')
  assert (len(train), len(val)) == (5, 2)
  example = train[0]
  assert example['depth'].shape == (16, 24) and example['rgb'].shape == (16, 24, 3)
  assert {train[i]['name'] for i in range(5)}.isdisjoint(val[i]['name'] for i in range(2))
  _one_line_error(sources.get_source, config, 'realscene', match=('synthetic_rgbd', 'realscene'))
  for field, value in (('size', (5,)), ('size', 0), ('num_train', 0)):
    bad = _data_config('synthetic_rgbd')
    bad.synthetic = ml_collections.ConfigDict({**bad.synthetic.to_dict(), field: value})
    with pytest.raises(ConfigError) as info:
      sources.get_source(bad, 'train')
    assert str(info.value).startswith(f'data.synthetic.{field}={value!r}: expected a positive')


def test_no_data_dir(monkeypatch):
  monkeypatch.delenv(readers.ENV_DATA_DIR, raising=False)
  _one_line_error(sources.get_source, _data_config('middlebury_lu'), 'train',
                  match=('data.dir', 'DSR_DATA_DIR'))


def test_unknown_dataset_lists_known(tmp_path):
  for fn, args in ((sources.get_source, (_data_config('middlebury_lu+kitti', tmp_path), 'train')),
                   (readers.list_records, (tmp_path, 'kitti', 'train'))):
    _one_line_error(fn, *args, match=("'kitti'",) + readers.KNOWN_DATASETS)
  assert 'synthetic_rgbd' in readers.KNOWN_DATASETS


def test_unknown_split(tmp_path):
  _one_line_error(readers.list_records, tmp_path, 'middlebury2005', 'train',
                  match=("'train'", 'test'))


# ------------------------------------------------------------------------------------------- bad inputs


def test_missing_directory_names_layout(tmp_path):
  _one_line_error(readers.list_records, tmp_path, 'middlebury_lu', 'train',
                  match=(str(tmp_path), "'middlebury_lu/Middlebury/Depth'",
                         'expected the middlebury_lu layout', 'ouput_color'))
  _one_line_error(readers.list_records, tmp_path, 'nyu_v2', 'test', match=('nyu_v2', 'Depth/ID.npy'))
  _one_line_error(readers.resolve_data_dir, tmp_path / 'nope', match=(str(tmp_path / 'nope'),))


def test_fake_middlebury_lu_split_rule(tmp_path):
  root = _fake_middlebury_lu(tmp_path)
  train = [r.name for r in readers.list_records(root, 'middlebury_lu', 'train')]
  val = [r.name for r in readers.list_records(root, 'middlebury_lu', 'validation')]
  # Eligible, sorted: M01 M03 M04 M05 M07 M08 M09 M10 RGBD_01 RGBD_02; position 4 is held out.
  assert val == ['Middlebury_07']
  # Unpadded numbering of an excluded scene is still excluded.
  base = root / 'middlebury_lu' / 'Middlebury'
  _png(base / 'Depth' / 'Middlebury_6_output_depth.png', np.ones((12, 16), np.uint8))
  _png(base / 'RGB' / 'Middlebury_6_output_color.png', np.ones((12, 16, 3), np.uint8))
  assert 'Middlebury_6' not in [r.name for r in readers.list_records(root, 'middlebury_lu', 'train')]
  (base / 'Depth' / 'Middlebury_6_output_depth.png').unlink()
  assert train == ['Middlebury_01', 'Middlebury_03', 'Middlebury_04', 'Middlebury_05', 'Middlebury_08',
                   'Middlebury_09', 'Middlebury_10', 'RGBD_01', 'RGBD_02']


def test_corrupt_png_names_file(tmp_path):
  root = _fake_middlebury_lu(tmp_path)
  bad = root / 'middlebury_lu' / 'Middlebury' / 'Depth' / 'Middlebury_07_output_depth.png'
  bad.write_bytes(np.random.default_rng(0).bytes(300))
  _one_line_error(readers.load_split, root, 'middlebury_lu', 'validation', match=(str(bad),))
  # A truncated real PNG fails at decode time, still naming the file.
  good = root / 'middlebury_lu' / 'Middlebury' / 'Depth' / 'Middlebury_01_output_depth.png'
  _png(good, np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8))
  good.write_bytes(good.read_bytes()[:200])
  record = readers.list_records(root, 'middlebury_lu', 'train')[0]
  _one_line_error(readers.load_example, record, match=(str(good),))


def test_corrupt_npy_names_file(tmp_path):
  depth_dir, rgb_dir = tmp_path / 'nyu_v2' / 'Depth', tmp_path / 'nyu_v2' / 'RGB'
  depth_dir.mkdir(parents=True)
  _png(rgb_dir / '1000.jpg', np.zeros((4, 5, 3), np.uint8))
  _png(rgb_dir / '1001.jpg', np.zeros((4, 5, 3), np.uint8))
  (depth_dir / '1000.npy').write_bytes(b'not a numpy file')
  # An object-dtype .npy (a pickle inside), written by hand: the reader must refuse it, not unpickle it.
  with open(depth_dir / '1001.npy', 'wb') as f:
    np.lib.format.write_array_header_1_0(f, {'descr': '|O', 'fortran_order': False, 'shape': (1,)})
    f.write(pickle.dumps([{'a': 1}]))
  bad_bytes, pickled = readers.list_records(tmp_path, 'nyu_v2', 'test')
  _one_line_error(readers.load_example, bad_bytes, match=(bad_bytes.depth_path,))
  _one_line_error(readers.load_example, pickled, match=(pickled.depth_path,))


def test_size_mismatch_names_both(tmp_path):
  root = _fake_middlebury2005(tmp_path)
  rgb = root / 'middlebury2005' / 'rgb' / 'books.png'
  _png(rgb, np.zeros((9, 10, 3), np.uint8))
  record = readers.list_records(root, 'middlebury2005', 'test')[1]
  _one_line_error(readers.load_example, record,
                  match=(record.depth_path, str(rgb), '(8, 10)', '(9, 10, 3)'))


def test_missing_rgb_and_wrong_depth_type(tmp_path):
  root = _fake_middlebury2005(tmp_path)
  (root / 'middlebury2005' / 'rgb' / 'dolls.png').unlink()
  _one_line_error(readers.list_records, root, 'middlebury2005', 'test', match=('dolls.png',))
  root = _fake_middlebury2005(tmp_path / 'b')
  depth = root / 'middlebury2005' / 'depth' / 'art.bmp'
  _png(depth, np.zeros((8, 10, 3), np.uint8))  # A colour image where 8-bit disparity belongs.
  record = readers.list_records(root, 'middlebury2005', 'test')[0]
  _one_line_error(readers.load_example, record, match=(str(depth), "'RGB'", 'disparity_0_255'))


def test_all_invalid_depth_is_skipped_and_counted(tmp_path, absl_caplog):
  caplog = absl_caplog
  root = _fake_middlebury_lu(tmp_path)
  dead = root / 'middlebury_lu' / 'Middlebury' / 'Depth' / 'Middlebury_03_output_depth.png'
  _png(dead, np.zeros((12, 16), np.uint8))
  with caplog.at_level(logging.WARNING):
    examples = readers.load_split(root, 'middlebury_lu', 'train')
  assert len(examples) == 8 and 'Middlebury_03' not in [e['name'] for e in examples]
  assert 'skipped 1 depth map(s) with no valid pixel' in caplog.text and str(dead) in caplog.text


def test_partially_invalid_depth_masked(tmp_path):
  depth_dir = tmp_path / 'nyu_v2' / 'Depth'
  depth_dir.mkdir(parents=True)
  _png(tmp_path / 'nyu_v2' / 'RGB' / '1005.png', np.zeros((2, 3, 3), np.uint8))
  np.save(depth_dir / '1005.npy', np.array([[1.0, np.nan, 0.0], [-2.0, np.inf, 3.5]], np.float32))
  example = readers.load_split(tmp_path, 'nyu_v2', 'test')[0]
  np.testing.assert_array_equal(example['valid'], [[1, 0, 0], [0, 0, 1]])
  np.testing.assert_array_equal(example['depth'], [[1.0, 0, 0], [0, 0, 3.5]])


def test_empty_split(tmp_path):
  root = _fake_middlebury_lu(tmp_path)
  for path in (root / 'middlebury_lu' / 'Middlebury' / 'Depth').iterdir():
    _png(path, np.zeros((12, 16), np.uint8))
  for path in (root / 'middlebury_lu' / 'Lu' / 'Depth').iterdir():
    _png(path, np.zeros((12, 16), np.uint8))
  _one_line_error(readers.load_split, root, 'middlebury_lu', 'validation',
                  match=("'validation'", 'middlebury_lu', 'empty'))
  _one_line_error(sources.get_source, _data_config('middlebury_lu', root), 'train',
                  match=("'train'", 'middlebury_lu', 'empty', str(root)))
  empty = tmp_path / 'empty'
  for sub in ('Depth', 'RGB'):
    (empty / 'rgbdd' / sub).mkdir(parents=True)
  _one_line_error(readers.list_records, empty, 'rgbdd', 'train', match=("'train'", 'rgbdd', 'empty'))


def test_rgbdd_realscene_is_optional(tmp_path):
  for sub in ('Depth', 'RGB'):
    (tmp_path / 'rgbdd' / sub).mkdir(parents=True)
  assert readers.list_records(tmp_path, 'rgbdd', 'realscene', allow_empty=True) == []
  _one_line_error(readers.list_records, tmp_path, 'rgbdd', 'realscene',
                  match=("'realscene'", 'empty', 'optional rgbdd/realscene/'))
  (tmp_path / 'rgbdd' / 'realscene').mkdir()  # Present but incomplete: name the missing folder.
  _one_line_error(readers.list_records, tmp_path, 'rgbdd', 'realscene',
                  match=("'rgbdd/realscene/Depth'",))
