"""TFDS builders: ArrayRecord builds read back (without TensorFlow) equal to the manual readers."""
import os
import pathlib
import shutil
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from PIL import Image
import tensorflow_datasets as tfds

from dsr_jax.errors import DataError
from dsr_jax.input_pipeline import readers
from dsr_jax.input_pipeline import sources
from dsr_jax.input_pipeline import synthetic
from dsr_jax.input_pipeline import tfds_builders

_REPO = pathlib.Path(__file__).resolve().parents[1]
KEYS = ('depth', 'rgb', 'valid', 'norm')


def _data_config(name, data_dir='', tfds_dir=''):
  c = ml_collections.ConfigDict()
  c.name, c.dir, c.tfds_dir = name, str(data_dir), str(tfds_dir)
  c.synthetic = ml_collections.ConfigDict({'num_train': 3, 'num_val': 2, 'size': (16, 24)})
  return c


def _assert_same(got, want):
  assert len(got) == len(want)
  for i in range(len(want)):
    a, b = sources.to_common(got[i]), want[i]
    assert a['name'] == b['name']
    for key in KEYS:
      assert a[key].dtype == b[key].dtype, key
      np.testing.assert_array_equal(a[key], b[key], err_msg=f"{b['name']} {key}")


def _png(path, array):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path)


@pytest.fixture(scope='module')
def real_build(shared_data_dir, tmp_path_factory):
  """middlebury2005 (6 full-size scenes) and the nyu_v2 samples, built once for this module."""
  data_dir = tmp_path_factory.mktemp('tfds')
  for name in ('middlebury2005', 'nyu_v2'):
    tfds_builders.build(name, str(data_dir), str(shared_data_dir))
  return data_dir


def test_real_build_is_array_record_and_matches_readers(real_build, shared_data_dir):
  for name in ('middlebury2005', 'nyu_v2'):
    files = sorted(p.name for p in (real_build / name / '1.0.0').iterdir())
    assert any('-test.array_record-' in f for f in files), files
    source = tfds.data_source(name, split='test', data_dir=str(real_build), download=False)
    _assert_same(source, readers.load_split(shared_data_dir, name, 'test'))
  # Splits without any example are not written (the samples hold only NYU test ids).
  info = tfds.builder('nyu_v2', data_dir=str(real_build)).info
  assert list(info.splits) == ['test']


def test_get_source_from_tfds_equals_manual(real_build, shared_data_dir):
  name = 'middlebury2005+nyu_v2'
  from_tfds = sources.get_source(_data_config(name, tfds_dir=real_build), 'test')
  manual = sources.get_source(_data_config(name, data_dir=shared_data_dir), 'test')
  assert 'TfdsSource' in repr(from_tfds) and len(from_tfds) == 9
  _assert_same(from_tfds, [manual[i] for i in range(len(manual))])
  example = from_tfds[0]
  assert isinstance(example['name'], str) and example['norm'].dtype == np.float32


def test_reading_needs_no_tensorflow(real_build):
  code = (
      'import sys\n'
      'from dsr_jax.input_pipeline import sources\n'
      'import ml_collections\n'
      f"c = ml_collections.ConfigDict(dict(name='nyu_v2', dir='', tfds_dir={str(real_build)!r}))\n"
      "s = sources.get_source(c, 'test')\n"
      "assert s[2]['name'] == '1002' and s[2]['depth'].shape == (480, 640)\n"
      "assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'\n")
  env = dict(os.environ, PYTHONPATH=str(_REPO))
  result = subprocess.run([sys.executable, '-c', code], cwd=_REPO, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr[-2000:]


def test_missing_tfds_build_is_one_line(tmp_path):
  with pytest.raises(DataError) as info:
    sources.get_source(_data_config('middlebury_lu', tfds_dir=tmp_path), 'train')
  message = str(info.value)
  assert '\n' not in message and str(tmp_path) in message and 'middlebury_lu' in message


def _fake_middlebury_lu(manual, offset=0):
  """10 Middlebury + 2 Lu pairs of 6x7 PNGs; Middlebury_03 has no valid pixel."""
  for i in range(1, 11):
    base = manual / 'middlebury_lu' / 'Middlebury'
    _png(base / 'Depth' / f'Middlebury_{i:02d}_output_depth.png',
         np.full((6, 7), 0 if i == 3 else 10 * i + offset, np.uint8))
    _png(base / 'RGB' / f'Middlebury_{i:02d}_output_color.png', np.full((6, 7, 3), i, np.uint8))
  for i in (1, 2):
    base = manual / 'middlebury_lu' / 'Lu'
    _png(base / 'Depth' / f'RGBD_{i:02d}_output_depth.png', np.full((6, 7), 200 + i, np.uint8))
    _png(base / 'RGB' / f'RGBD_{i:02d}_ouput_color.png', np.zeros((6, 7, 3), np.uint8))
  return manual


def test_fake_manual_dir_build_skips_invalid(tmp_path):
  # Middlebury_03 has no valid pixel: skipped by the builder exactly as by the readers.
  manual = _fake_middlebury_lu(tmp_path / 'manual')
  data_dir = tmp_path / 'tfds'
  builder = tfds_builders.build('middlebury_lu', str(data_dir), str(manual))
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      'train': 8, 'validation': 1, 'test': 1}
  assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
  for split in ('train', 'validation'):
    got = sources.get_source(_data_config('middlebury_lu', tfds_dir=data_dir), split)
    _assert_same(got, readers.load_split(manual, 'middlebury_lu', split))


def test_synthetic_builder_matches_source(tmp_path, monkeypatch):
  monkeypatch.setattr(tfds_builders.SyntheticRgbd, 'NUM_TRAIN', 3)
  monkeypatch.setattr(tfds_builders.SyntheticRgbd, 'NUM_VAL', 2)
  monkeypatch.setattr(tfds_builders.SyntheticRgbd, 'SIZE', (16, 24))
  tfds_builders.build('synthetic_rgbd', str(tmp_path))
  for split, num, offset in (('train', 3, sources.SYNTHETIC_TRAIN_SEED_OFFSET),
                             ('validation', 2, sources.SYNTHETIC_VAL_SEED_OFFSET)):
    want = synthetic.SyntheticSource(num, 16, 24, offset)
    got = tfds.data_source('synthetic_rgbd', split=split, data_dir=str(tmp_path), download=False)
    _assert_same(got, [want[i] for i in range(num)])


def test_main(tmp_path, shared_data_dir, capsys):
  assert tfds_builders.main(['--dataset', 'nyu_v2', '--manual_dir', str(shared_data_dir),
                             '--data_dir', str(tmp_path)]) == 0
  assert 'nyu_v2: test=3' in capsys.readouterr().out
  assert tfds_builders.main(['--dataset', 'kitti', '--data_dir', str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip()
  assert '\n' not in err and 'kitti' in err and 'middlebury_lu' in err
  assert tfds_builders.main(['--dataset', 'rgbdd', '--manual_dir', str(tmp_path / 'none'),
                             '--data_dir', str(tmp_path)]) == 2
  assert str(tmp_path / 'none') in capsys.readouterr().err


def _snapshot(root):
  return {p.relative_to(root): (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
          for p in root.rglob('*')}


def _one_line_error(capsys, *expect):
  # tfds' progress bars may come first (a failure inside generation); the error is the last line.
  err = capsys.readouterr().err
  last = err.strip().splitlines()[-1]
  assert last.startswith('error: ') and 'Traceback' not in err, err
  assert all(e in last for e in expect), last


def test_failed_overwrite_keeps_the_previous_build(tmp_path, capsys):
  good = _fake_middlebury_lu(tmp_path / 'good')
  truncated = _fake_middlebury_lu(tmp_path / 'truncated')
  png = truncated / 'middlebury_lu' / 'Lu' / 'Depth' / 'RGBD_02_output_depth.png'
  png.write_bytes(png.read_bytes()[:40])
  no_lu = _fake_middlebury_lu(tmp_path / 'no_lu')
  shutil.rmtree(no_lu / 'middlebury_lu' / 'Lu')
  data_dir = tmp_path / 'tfds'
  args = ['--dataset', 'middlebury_lu', '--data_dir', str(data_dir), '--overwrite']
  assert tfds_builders.main(args + ['--manual_dir', str(good)]) == 0
  before = _snapshot(data_dir)
  for bad, expect in ((truncated, png.name), (no_lu, str(no_lu))):
    capsys.readouterr()
    assert tfds_builders.main(args + ['--manual_dir', str(bad)]) == 2
    _one_line_error(capsys, expect)
    assert _snapshot(data_dir) == before  # no staging directory left, the old build untouched
  # A good rebuild replaces the old one (its depth differs) and leaves nothing else behind.
  assert tfds_builders.main(args + ['--manual_dir', str(_fake_middlebury_lu(tmp_path / 'new', 5))]) == 0
  assert sorted(p.name for p in data_dir.iterdir()) == sorted(p.name for p in data_dir.iterdir()
                                                              if not p.name.startswith('.'))
  got = sources.get_source(_data_config('middlebury_lu', tfds_dir=data_dir), 'train')
  _assert_same(got, readers.load_split(tmp_path / 'new', 'middlebury_lu', 'train'))


def test_data_dir_that_is_a_file(tmp_path, capsys):
  manual = _fake_middlebury_lu(tmp_path / 'manual')
  afile = tmp_path / 'afile'
  afile.write_text('keep me\n')
  for data_dir, expect in ((afile, f'{afile}: is not a directory'),
                           (afile / 'sub', f'lies under {afile}, which is not a directory')):
    assert tfds_builders.main(['--dataset', 'middlebury_lu', '--manual_dir', str(manual),
                               '--data_dir', str(data_dir)]) == 2
    _one_line_error(capsys, '--data_dir', expect)
  assert afile.read_text() == 'keep me\n'
  with pytest.raises(SystemExit) as info:  # argparse usage errors are one line too
    tfds_builders.main(['--dataset', 'middlebury_lu'])
  assert info.value.code == 2
  _one_line_error(capsys, '--data_dir')
