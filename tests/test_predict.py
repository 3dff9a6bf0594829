"""The predict CLI: PNG16 / PNG8 / npy round trips with holes, tiling, --overwrite, one-line refusals."""
import io
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from dsr_jax import predict
from dsr_jax.input_pipeline import degradation

REPO = pathlib.Path(__file__).resolve().parents[1]
SCALE = 2  # configs/test.py


pytestmark = pytest.mark.usefixtures('fast_xla')


def _grid(h=37, w=53):
  yy, xx = np.mgrid[:h, :w]
  return 0.5 + 0.2 * np.sin(yy / 6.0) * np.cos(xx / 8.0)  # smooth, in (0.3, 0.7)


def write_inputs(d: pathlib.Path) -> dict:
  """a16.png (mm-like uint16), b8.png (uint8 disparity), c.npy (float32 relative depth), all with holes."""
  d.mkdir(parents=True, exist_ok=True)
  g = _grid()
  a16 = np.round(g * 4000).astype(np.uint16)
  a16[5:8, 10:14] = 0
  b8 = np.round(g * 255).astype(np.uint8)
  b8[0, 0] = b8[20, 30] = 0
  c = g.astype(np.float32)
  c[3, 4] = np.nan
  c[10, 10] = 0
  c[36, 52] = np.nan
  Image.fromarray(a16).save(d / 'a16.png')
  Image.fromarray(b8).save(d / 'b8.png')
  np.save(d / 'c.npy', c)
  return {'a16': a16, 'b8': b8, 'c': c}


def _up(mask):
  return np.repeat(np.repeat(mask, SCALE, axis=0), SCALE, axis=1)


def _check_colour(path: pathlib.Path, holes_hr):
  rgb = np.asarray(Image.open(path))
  assert rgb.dtype == np.uint8 and rgb.shape == holes_hr.shape + (3,)
  assert (rgb[holes_hr] == 0).all() and rgb[~holes_hr].any()


def test_round_trip_png16_png8_npy(ckpt, tmp_path, capsys):
  arrays = write_inputs(tmp_path / 'in')
  out = tmp_path / 'out'
  # The checkpoint trained on synthetic_rgbd (norm 1): 16-bit mm-like values need --norm; the 8-bit
  # PNG is divided by 255 and the float .npy (relative depth) by 1 by default.
  assert predict.main(['--checkpoint', str(ckpt), '--input', str(tmp_path / 'in' / 'a16.png'),
                       '--output', str(out), '--norm', '4000']) == 0
  os.remove(tmp_path / 'in' / 'a16.png')
  assert predict.main(['--checkpoint', str(ckpt), '--input', str(tmp_path / 'in'), '--output', str(out),
                       '--scale', str(SCALE)]) == 0
  printed = capsys.readouterr().out
  for name in ('a16.png', 'b8.png', 'c.npy'):
    assert f'{name} -> ' in printed
  assert printed.count(' s)') == 3

  for stem, norm in (('a16', 4000.0), ('b8', 255.0)):
    src = arrays[stem]
    img = Image.open(out / f'{stem}_x2.png')
    got = np.asarray(img)
    assert got.dtype == src.dtype and got.shape == (SCALE * src.shape[0], SCALE * src.shape[1])
    holes = _up(src == 0)
    assert (got[holes] == 0).all() and (got[~holes] >= 1).all()
    # Units survive the round trip: the tiny model stays near bicubic of the input (in input units).
    ref = degradation.upsample_bicubic(src.astype(np.float64), SCALE)
    assert np.abs(got[~holes] - ref[~holes]).mean() < 0.1 * norm
    _check_colour(out / f'{stem}_x2_color.png', holes)

  src = arrays['c']
  got = np.load(out / 'c_x2.npy', allow_pickle=False)
  assert got.dtype == np.float32 and got.shape == (74, 106)
  nan_hr, zero_hr = _up(np.isnan(src)), _up(src == 0)
  assert np.isnan(got[nan_hr]).all() and (got[zero_hr] == 0).all()
  valid = ~(nan_hr | zero_hr)
  assert np.isfinite(got[valid]).all() and (got[valid] > 0).all()
  assert nan_hr.sum() == 8 and zero_hr.sum() == 4
  _check_colour(out / 'c_x2_color.png', ~valid)


def test_tiled_and_ensemble_cli(ckpt, tmp_path, capsys):
  write_inputs(tmp_path / 'in')
  src = tmp_path / 'in' / 'c.npy'
  runs, err = {}, {}
  for name, extra in (('whole', ['--tile', '0']), ('tiled', ['--tile', '8', '--overlap', '3']),
                      ('ens', ['--ensemble', '--tile', '16'])):
    assert predict.main(['--checkpoint', str(ckpt), '--input', str(src), '--output',
                         str(tmp_path / name)] + extra) == 0
    runs[name] = np.load(tmp_path / name / 'c_x2.npy', allow_pickle=False)
    err[name] = capsys.readouterr().out
  # Tile progress (stdout is not a terminal here: at most one line per tenth, ending at n/n).
  assert ': tile ' not in err['whole']
  tiles = [ln for ln in err['tiled'].splitlines() if ': tile ' in ln]
  assert tiles and tiles[-1].startswith('[1/1] ') and tiles[-1].endswith('tile 35/35'), err['tiled']
  assert len(tiles) <= 11
  assert [ln for ln in err['ens'].splitlines() if ': tile ' in ln][-1].endswith('tile 96/96'), err['ens']  # 3 x 4 windows, 8 ensemble passes
  np.testing.assert_allclose(runs['tiled'], runs['whole'], atol=1e-4)
  ens, whole = runs['ens'], runs['whole']
  assert ens.shape == whole.shape and ens.dtype == np.float32
  np.testing.assert_array_equal(np.isnan(ens), np.isnan(whole))
  assert np.nanmean(np.abs(ens - whole)) < 0.05


def test_tile_progress_rewrites_one_line_on_a_terminal():
  class Tty(io.StringIO):
    def isatty(self):
      return True
  out = Tty()
  show = predict.TileProgress('[1/2] a.png', out)
  for i in range(1, 5):
    show(i, 4)
  assert out.getvalue() == ''.join(f'\r[1/2] a.png: tile {i}/4' for i in range(1, 5)) + '\n'


def _cli(*args, **popen):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.Popen([sys.executable, '-m', 'dsr_jax.predict', *map(str, args)], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _assert_one_line_refusal(proc, stdout, stderr, expect):
  assert proc.returncode == 2, (stdout, stderr)
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), stderr
  assert 'Traceback' not in stderr
  assert expect in lines[0], lines[0]


def test_overwrite(ckpt, tmp_path):
  write_inputs(tmp_path / 'in')
  src, out = tmp_path / 'in' / 'b8.png', tmp_path / 'out'
  assert predict.main(['--checkpoint', str(ckpt), '--input', str(src), '--output', str(out)]) == 0
  files = sorted(out.iterdir())
  assert [f.name for f in files] == ['b8_x2.png', 'b8_x2_color.png']
  before = {f: (f.read_bytes(), f.stat().st_mtime_ns) for f in files}
  proc = _cli('--checkpoint', ckpt, '--input', src, '--output', out)
  _assert_one_line_refusal(proc, *proc.communicate(timeout=120), 'b8_x2.png: already exists')
  assert {f: (f.read_bytes(), f.stat().st_mtime_ns) for f in sorted(out.iterdir())} == before
  assert predict.main(['--checkpoint', str(ckpt), '--input', str(src), '--output', str(out),
                       '--overwrite']) == 0
  after = sorted(out.iterdir())
  assert after == files and all(f.stat().st_mtime_ns != before[f][1] for f in after)
  assert not [f for f in out.iterdir() if f.name.startswith('.')]  # no temporary file left behind


@pytest.fixture(scope='module')
def refusals(ckpt, tmp_path_factory):
  """Every bad-input case run as a real CLI subprocess, all at once (they are independent)."""
  d = tmp_path_factory.mktemp('refusals')
  good = write_inputs(d / 'good')
  (d / 'notes.txt').write_text('not a depth map\n')
  (d / 'text.png').write_text('not a png either\n')
  data = (d / 'good' / 'a16.png').read_bytes()
  (d / 'corrupt.png').write_bytes(data[:len(data) // 2])
  npy = (d / 'good' / 'c.npy').read_bytes()
  (d / 'truncated.npy').write_bytes(npy[:len(npy) - 100])
  Image.fromarray(np.zeros((10, 12, 3), np.uint8) + 50).save(d / 'rgb.png')
  np.save(d / 'rgb.npy', np.ones((10, 12, 3), np.float32))
  Image.fromarray(np.zeros((10, 12), np.uint16)).save(d / 'zeros.png')
  np.save(d / 'nans.npy', np.full((10, 12), np.nan, np.float32))
  mixed = d / 'mixed'
  mixed.mkdir()
  Image.fromarray(good['b8']).save(mixed / 'a.png')
  (mixed / 'b.png').write_bytes(data[:len(data) // 2])
  incomplete = d / 'incomplete' / 'checkpoints' / '8'
  shutil.copytree(ckpt / 'checkpoints' / '8' / 'config', incomplete / 'config')
  unreadable = d / 'unreadable' / 'checkpoints' / '8'
  shutil.copytree(ckpt / 'checkpoints' / '8', unreadable)
  for f in (unreadable / 'params').rglob('*'):
    if f.is_file() and f.parent.name == 'd':  # the array data files
      f.write_bytes(f.read_bytes()[:50])
  b8 = d / 'good' / 'b8.png'
  cases = {
      'not_image': (['--input', d / 'notes.txt'], "unsupported file type '.txt'"),
      'png_is_text': (['--input', d / 'text.png'], 'text.png: cannot read PNG'),
      'corrupt_png': (['--input', d / 'corrupt.png'], 'corrupt.png: cannot read PNG'),
      'truncated_npy': (['--input', d / 'truncated.npy'], 'truncated.npy: cannot read .npy'),
      'rgb_png': (['--input', d / 'rgb.png'], 'rgb.png: a 3-channel (RGB) image given as depth'),
      'rgb_npy': (['--input', d / 'rgb.npy'], 'rgb.npy: a 3-channel array'),
      'all_zero': (['--input', d / 'zeros.png'], 'zeros.png: no valid depth pixel'),
      'all_nan': (['--input', d / 'nans.npy'], 'nans.npy: no valid depth pixel'),
      'bad_file_in_dir': (['--input', mixed], 'b.png: cannot read PNG'),
      'scale': (['--input', b8, '--scale', 4], "--scale 4 contradicts the checkpoint's scale 2"),
      'missing_ckpt': (['--input', b8, '--checkpoint', d / 'nope'], 'nope: no such file or directory'),
      'incomplete_ckpt': (['--input', b8, '--checkpoint', incomplete.parent.parent],
                          'incomplete, missing params'),
      'unreadable_ckpt': (['--input', b8, '--checkpoint', unreadable], 'cannot restore params dsr'),
      'missing_input': (['--input', d / 'absent.png'], 'absent.png: no such file'),
      'bad_tile': (['--input', b8, '--tile', -4], '--tile -4'),
      'usage': (['--input', b8, '--tile', 'many'], 'invalid int value'),
  }
  procs = {}
  for name, (args, expect) in cases.items():
    if '--checkpoint' not in args:
      args = ['--checkpoint', ckpt] + args
    out = d / f'out_{name}'
    procs[name] = (_cli(*args, '--output', out), out, expect)
  return {name: (p, *p.communicate(timeout=180), out, expect) for name, (p, out, expect) in procs.items()}


@pytest.mark.parametrize('case', ['not_image', 'png_is_text', 'corrupt_png', 'truncated_npy', 'rgb_png',
                                  'rgb_npy', 'all_zero', 'all_nan', 'bad_file_in_dir', 'scale',
                                  'missing_ckpt', 'incomplete_ckpt', 'unreadable_ckpt', 'missing_input',
                                  'bad_tile', 'usage'])
def test_refusal(refusals, case):
  proc, stdout, stderr, out, expect = refusals[case]
  _assert_one_line_refusal(proc, stdout, stderr, expect)
  assert not out.exists()  # nothing written, not even the output directory


def test_export_is_dsrnet_only_and_predicts_the_same(ckpt, tmp_path, capsys):
  from dsr_jax import export, restore  # pylint: disable=g-import-not-at-top
  out = tmp_path / 'dsrnet_x2'
  assert export.main(['--checkpoint', str(ckpt), '--output', str(out)]) == 0
  config, params, info = restore.load_params(out, ('dsr', 'denet', 'spnet'))
  assert set(params) == {'dsr'} and not config.model.use_denet and config.export.use_denet
  _, full, _ = restore.load_params(ckpt, ('dsr',))
  for a, b in zip(jax_leaves(params['dsr']), jax_leaves(full['dsr'])):
    np.testing.assert_array_equal(a, b)
  inputs = tmp_path / 'in'
  write_inputs(inputs)
  for name, source in (('w', ckpt), ('e', out)):
    assert predict.main(['--checkpoint', str(source), '--input', str(inputs / 'b8.png'),
                         '--output', str(tmp_path / name)]) == 0
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / 'w' / 'b8_x2.png')),
                                np.asarray(Image.open(tmp_path / 'e' / 'b8_x2.png')))
  before = sorted(p.relative_to(out) for p in out.rglob('*'))
  capsys.readouterr()
  assert export.main(['--checkpoint', str(ckpt), '--output', str(out)]) == 2  # no silent replacement
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and str(out) in err[0] and '--overwrite' in err[0]
  assert sorted(p.relative_to(out) for p in out.rglob('*')) == before
  assert export.main(['--checkpoint', str(tmp_path / 'nope'), '--output', str(tmp_path / 'x')]) == 2
  assert not (tmp_path / 'x').exists()
  # --overwrite swaps the new export in and leaves no staging directory beside it.
  assert export.main(['--checkpoint', str(ckpt), '--output', str(out), '--overwrite']) == 0
  assert restore.resolve_checkpoint(out) == (str(out), 8)
  assert not [p for p in tmp_path.iterdir() if p.name.startswith('.export')]


def _listing(root: pathlib.Path) -> dict:
  return {p.relative_to(root): (p.is_dir(), p.stat().st_mtime_ns) for p in root.rglob('*')}


def test_export_refuses_to_touch_its_source(ckpt, tmp_path, capsys, monkeypatch):
  from dsr_jax import export, restore  # pylint: disable=g-import-not-at-top
  run = tmp_path / 'runs' / 'x2'
  shutil.copytree(ckpt, run)  # a copy: a broken guard must not delete the session's checkpoint
  (tmp_path / 'afile').write_text('keep me\n')
  (tmp_path / 'link').symlink_to(run)

  def no_restore(*args, **kwargs):
    raise AssertionError(f'parameters restored before the output was checked: {args} {kwargs}')

  monkeypatch.setattr(restore, 'load_params', no_restore)
  step = run / 'checkpoints' / '8'
  cases = [  # (--checkpoint, --output, what the one-line error names)
      (run, run, f'{run}: is the source checkpoint'),
      (run, tmp_path / 'runs', f'{tmp_path / "runs"}: contains the source checkpoint {run}'),
      (run, tmp_path, f'{tmp_path}: contains'),
      (step, run, f'{run}: is the source checkpoint {run}'),
      (run, run / 'checkpoints', f'is the source checkpoint {run / "checkpoints"}'),
      (run, run / 'checkpoints_best', f'is the source checkpoint {run / "checkpoints_best"}'),
      (run, step, f'{step}: lies inside the source checkpoint directory'),
      (run, run / 'checkpoints' / '99', 'lies inside the source checkpoint directory'),
      (run / 'checkpoints', run / 'checkpoints', 'is the source checkpoint'),
      (step, step, f'{step}: is the source checkpoint {step}'),
      (run, tmp_path / 'link', 'link: is a symbolic link'),
      (run, tmp_path / 'afile' / 'sub', f'lies under {tmp_path / "afile"}, which is not a directory'),
  ]
  before = _listing(tmp_path)
  capsys.readouterr()
  for source, output, expect in cases:
    assert export.main(['--checkpoint', str(source), '--output', str(output), '--overwrite']) == 2, output
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and expect in err[0], (output, err)
    assert _listing(tmp_path) == before, output
  assert (tmp_path / 'afile').read_text() == 'keep me\n'
  with pytest.raises(SystemExit) as info:  # argparse usage errors are one line too
    export.main(['--checkpoint', str(run)])
  err = capsys.readouterr().err.strip().splitlines()
  assert info.value.code == 2 and len(err) == 1 and err[0].startswith('error: ') and '--output' in err[0]


def jax_leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return [np.asarray(x) for x in jax.tree.leaves(tree)]
