"""Table-driven bad inputs for every entry point: one line on stderr, exit status 2, nothing written.

Each case builds its (tiny, fake) inputs under its own directory, runs one subprocess of
`python -m dsr_jax.main`, `python -m dsr_jax.predict` or `python -m dsr_jax.input_pipeline.tfds_builders`, and checks:
  - exit status 2 and no 'Traceback' anywhere in the output;
  - after dropping absl / TF log lines, stderr is exactly one line, starting with 'error:', that names the
    offending file, directory or config field;
  - the case directory (inputs, and where the workdir / output would go) is unchanged: no file created,
    removed or touched.
The subprocesses run two at a time in a module fixture (they are mostly interpreter start-up).

A failed TFDS build removes the directories it created, so the builder cases hold to the same rule.
"""
import concurrent.futures
import dataclasses
import os
import pathlib
import re
import shutil
import subprocess
import sys
from typing import Callable

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT = 180  # seconds per subprocess
PREDICT = REPO / 'dsr_jax' / 'predict.py'

# absl / TF C++ log lines ('I1121 14:42:17.326519 ...', 'I0000 00:00:...') and TF's logging preamble.
_LOG_LINE = re.compile(r'^([IWEF]\d{4} \d\d:\d\d:\d\d|WARNING: All log messages before absl)')
# tfds' tqdm progress bars ('Generating splits...:   0%|   | 0/3 [00:00<?, ? splits/s]') and their
# cursor-up / clearing leftovers: progress, not messages.
_PROGRESS = re.compile(r'\[\d\d:\d\d[<,]|^[\s\x1b\[A]*$')

# The builder cases that leave empty directories behind (see the report in the module docstring).


# ------------------------------------------------------------------------------------------ fake data


def _rgb(h, w, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _depth_m(h, w, seed=0):
  return np.random.default_rng(seed).uniform(1.0, 4.0, (h, w)).astype(np.float32)


def _nyu(root: pathlib.Path, ids=(1, 2, 3, 9), size=(24, 32), depth=None, rgb_size=None) -> pathlib.Path:
  """nyu_v2/{Depth/ID.npy (float32 m), RGB/ID.jpg}; ids < 1000 are train (x9: validation)."""
  data = root / 'data'
  for sub in ('Depth', 'RGB'):
    (data / 'nyu_v2' / sub).mkdir(parents=True)
  for i in ids:
    d = _depth_m(*size, seed=i) if depth is None else depth(i, size)
    np.save(data / 'nyu_v2' / 'Depth' / f'{i}.npy', d)
    Image.fromarray(_rgb(*(rgb_size or {}).get(i, size), seed=i)).save(data / 'nyu_v2' / 'RGB' / f'{i}.jpg')
  return data


def _middlebury_lu(root: pathlib.Path, numbers=(1, 3, 4, 5, 7), size=(24, 32)) -> pathlib.Path:
  """middlebury_lu/{Middlebury,Lu}/{Depth,RGB}: 8-bit disparity PNGs (Lu left empty)."""
  data = root / 'data'
  base = data / 'middlebury_lu'
  for sub in ('Middlebury/Depth', 'Middlebury/RGB', 'Lu/Depth', 'Lu/RGB'):
    (base / sub).mkdir(parents=True)
  for n in numbers:
    disp = np.random.default_rng(n).integers(20, 250, size, dtype=np.uint8)
    Image.fromarray(disp, mode='L').save(base / 'Middlebury/Depth' / f'Middlebury_{n:02d}_output_depth.png')
    Image.fromarray(_rgb(*size, seed=n)).save(
        base / 'Middlebury/RGB' / f'Middlebury_{n:02d}_output_color.png')
  return data


def _rgbdd(root: pathlib.Path, depth_mode='I;16', size=(24, 32)) -> pathlib.Path:
  """rgbdd/{Depth/ID_HR_gt.png (16-bit mm), RGB/ID_RGB.jpg}."""
  data = root / 'data'
  for sub in ('Depth', 'RGB'):
    (data / 'rgbdd' / sub).mkdir(parents=True)
  mm = np.random.default_rng(0).integers(500, 3500, size).astype(np.uint16)
  depth = Image.fromarray(mm) if depth_mode == 'I;16' else Image.fromarray((mm // 16).astype(np.uint8))
  depth.save(data / 'rgbdd' / 'Depth' / 'scene1_HR_gt.png')
  Image.fromarray(_rgb(*size)).save(data / 'rgbdd' / 'RGB' / 'scene1_RGB.jpg')
  return data


def _corrupt_png(path: pathlib.Path):
  # A real PNG signature, then garbage: it is recognised as a PNG and fails while decoding.
  path.write_bytes(b'\x89PNG\r\n\x1a\n' + np.random.default_rng(0).bytes(200))


def _truncate(path: pathlib.Path, keep: int = 100):
  with open(path, 'r+b') as f:
    f.truncate(keep)


# ------------------------------------------------------------------------------------------ the cases


@dataclasses.dataclass(frozen=True)
class Case:
  """setup(case_dir, checkpoint) builds the inputs and returns (argv after the module, needles).

  Every needle must appear in the error line (the file, directory or field it should name).
  """
  id: str
  tool: str  # 'main' | 'predict' | 'export' | 'builder'
  setup: Callable[[pathlib.Path, pathlib.Path], tuple[list[str], list[str]]]
  xfail: str = ''
  env: tuple = ()  # (name, value) pairs over the usual environment


def _train(*overrides, data=None):
  def argv(root):
    a = ['--config', 'configs/test.py', '--workdir', str(root / 'work')]
    if data is not None:
      name, path = data
      a += [f'--config.data.name={name}', f'--config.data.dir={path}']
    return a + list(overrides)
  return argv


def _main_corrupt_png(root, _):
  data = _middlebury_lu(root)
  bad = data / 'middlebury_lu/Middlebury/Depth/Middlebury_01_output_depth.png'
  _corrupt_png(bad)
  return _train(data=('middlebury_lu', data))(root), [str(bad)]


def _main_truncated_npy(root, _):
  data = _nyu(root)
  bad = data / 'nyu_v2/Depth/2.npy'
  _truncate(bad)
  return _train(data=('nyu_v2', data))(root), [str(bad)]


def _main_size_mismatch(root, _):
  data = _nyu(root, rgb_size={3: (24, 30)})
  return _train(data=('nyu_v2', data))(root), [str(data / 'nyu_v2/Depth/3.npy'),
                                                str(data / 'nyu_v2/RGB/3.jpg')]


def _main_all_zero_depth(root, _):
  data = _nyu(root, depth=lambda i, size: np.zeros(size, np.float32))
  return _train(data=('nyu_v2', data))(root), [str(data), "'train'"]


def _main_all_nan_depth(root, _):
  data = _nyu(root, depth=lambda i, size: np.full(size, np.nan, np.float32))
  return _train(data=('nyu_v2', data))(root), [str(data), "'train'"]


def _main_16bit_expected(root, _):
  data = _rgbdd(root, depth_mode='L')  # an 8-bit PNG where rgbdd stores 16-bit millimetres
  return (_train(data=('rgbdd', data))(root),
          [str(data / 'rgbdd/Depth/scene1_HR_gt.png'), "'L'", 'mm'])


def _main_8bit_expected(root, _):
  data = _middlebury_lu(root)
  bad = data / 'middlebury_lu/Middlebury/Depth/Middlebury_03_output_depth.png'
  Image.fromarray(np.full((24, 32), 3000, np.uint16)).save(bad)  # 16-bit where 8-bit disparity belongs
  return _train(data=('middlebury_lu', data))(root), [str(bad)]


def _main_scale_3(root, _):
  return _train('--config.model.scale=3')(root), ['model.scale', '3']


def _main_crop_not_multiple_of_scale(root, _):
  # The HR crop must give a whole LR crop: 18 at x4 has no integer LR size.
  return _train('--config.model.scale=4', '--config.data.crop=18')(root), ['data.crop', '18']


def _main_missing_data_dir(root, _):
  return _train(data=('middlebury_lu', '/nonexistent'))(root), ['/nonexistent']


def _main_empty_train_split(root, _):
  data = _nyu(root, ids=(1000, 1001))  # test ids only
  return _train(data=('nyu_v2', data))(root), [str(data), "'train'"]


def _main_empty_validation_split(root, _):
  data = _middlebury_lu(root, numbers=(1, 3, 4))  # 3 scenes: every one of them is train
  return _train(data=('middlebury_lu', data))(root), [str(data), "'validation'"]


def _main_config_typo(root, _):
  return _train('--config.train.num_step=3')(root), ['train.num_step']


def _main_cpu_convolutions(root, _):
  return _train('--config.cpu_convolutions=mkl')(root), ['cpu_convolutions', "'mkl'"]


def _main_workdir_is_a_file(root, _):
  (root / 'work').write_text('notes')
  return _train()(root), [str(root / 'work'), 'is not a directory']


def _main_crop_larger_than_images(root, _):
  data = _nyu(root)  # 24x32 images
  return _train('--config.data.crop=40', data=('nyu_v2', data))(root), ['24x32', 'data.crop=40']


def _main_resume_with_other_model(root, ckpt):
  shutil.copytree(ckpt, root / 'work')  # an x2 run of configs/test.py (channels 4)
  return _train('--config.model.channels=8')(root), [str(root / 'work' / 'checkpoints'),
                                                       'model.channels=4 there, 8 now']


def _main_unknown_dataset(root, _):
  return _train('--config.data.name=nyu')(root), ["'nyu'", 'data.name']


def _main_lr_nan(root, _):
  return _train('--config.optim.dsr.lr=nan')(root), ['optim.dsr.lr=nan', 'finite']


def _main_lr_negative(root, _):
  return _train('--config.optim.denet.lr=-1')(root), ['optim.denet.lr=-1']


# Root passes access() on /sys, which refuses writes even to root (EPERM, or EROFS in a container): refused as
# a system directory before any write is tried.
_UNWRITABLE = pathlib.Path('/sys/dsr_jax_test_workdir')


def _main_workdir_unwritable(root, _):
  return ['--config', 'configs/test.py', '--workdir', str(_UNWRITABLE)], [str(_UNWRITABLE), 'system directory /sys']


def _eval_workdir_unwritable(root, ckpt):
  return (['--config', 'configs/eval.py:middlebury2005', '--workdir', str(_UNWRITABLE),
           f'--config.eval.checkpoint_dir={ckpt}'], [str(_UNWRITABLE), 'system directory /sys'])


def _eval_one_corrupt_file(root, ckpt):
  data = _nyu(root, ids=(1, 2, 1001, 1002, 1003), size=(48, 64))
  bad = data / 'nyu_v2/Depth/1002.npy'
  _truncate(bad)
  return (['--config', 'configs/eval.py:nyu_v2', '--workdir', str(root / 'eval'), f'--config.data.dir={data}',
           f'--config.eval.checkpoint_dir={ckpt}'], [str(bad)])


def _predict(ckpt, inp, out, *extra):
  return ['--checkpoint', str(ckpt), '--input', str(inp), '--output', str(out), *extra]


def _depth_npy(path, a=None):
  path.parent.mkdir(parents=True, exist_ok=True)
  # Relative depth in [0.25, 1]: the test checkpoint trained on synthetic_rgbd (norm 1).
  np.save(path, _depth_m(12, 16) / 4 if a is None else a)
  return path


def _predict_corrupt_png(root, ckpt):
  bad = root / 'in' / 'scan.png'
  bad.parent.mkdir()
  _corrupt_png(bad)
  return _predict(ckpt, bad, root / 'out'), [str(bad)]


def _predict_truncated_npy(root, ckpt):
  bad = _depth_npy(root / 'in' / 'scan.npy')
  _truncate(bad)
  return _predict(ckpt, bad, root / 'out'), [str(bad)]


def _predict_all_nan(root, ckpt):
  bad = _depth_npy(root / 'in' / 'scan.npy', np.full((12, 16), np.nan, np.float32))
  return _predict(ckpt, bad, root / 'out'), [str(bad)]


def _predict_all_zero(root, ckpt):
  bad = root / 'in' / 'scan.png'
  bad.parent.mkdir()
  Image.fromarray(np.zeros((12, 16), np.uint16)).save(bad)
  return _predict(ckpt, bad, root / 'out'), [str(bad)]


def _predict_rgb_as_depth(root, ckpt):
  bad = root / 'in' / 'photo.png'
  bad.parent.mkdir()
  Image.fromarray(_rgb(12, 16)).save(bad)
  return _predict(ckpt, bad, root / 'out'), [str(bad)]


def _predict_existing_output(root, ckpt):
  inp = _depth_npy(root / 'in' / 'scan.npy')
  existing = _depth_npy(root / 'out' / 'scan_x2.npy', np.ones((24, 32), np.float32))
  return _predict(ckpt, inp, root / 'out'), [str(existing), '--overwrite']


def _predict_other_scale(root, ckpt):
  inp = _depth_npy(root / 'in' / 'scan.npy')
  return _predict(ckpt, inp, root / 'out', '--scale', '8'), ['--scale 8', 'scale 2']


def _predict_mm_for_relative_checkpoint(root, ckpt):
  bad = root / 'in' / 'scan.png'
  bad.parent.mkdir()
  Image.fromarray(np.full((12, 16), 1500, np.uint16)).save(bad)  # millimetres; the checkpoint's norm is 1
  return _predict(ckpt, bad, root / 'out'), [str(bad), '1500', "'synthetic_rgbd'", '--norm']


def _predict_output_under_a_file(root, ckpt):
  inp = _depth_npy(root / 'in' / 'scan.npy')
  (root / 'notes').write_text('x')
  return _predict(ckpt, inp, root / 'notes' / 'out'), [str(root / 'notes'), 'which is not a directory']


def _predict_norm_overflows(root, ckpt):
  inp = _depth_npy(root / 'in' / 'scan.npy')
  return _predict(ckpt, inp, root / 'out', '--norm', '1e-40'), ['--norm 1e-40', str(inp)]


def _predict_tile_too_small(root, ckpt):
  inp = _depth_npy(root / 'in' / 'scan.npy')
  return _predict(ckpt, inp, root / 'out', '--tile', '4'), ['--tile 4', '>= 8']


def _predict_output_is_input_dir(root, ckpt):
  inp = _depth_npy(root / 'in' / 'scan.npy')
  return _predict(ckpt, inp.parent, inp.parent), ['is the --input directory']


def _predict_missing_checkpoint(root, _):
  inp = _depth_npy(root / 'in' / 'scan.npy')
  return _predict(root / 'no_such_run', inp, root / 'out'), [str(root / 'no_such_run')]


def _predict_norm_zero(root, ckpt):
  inp = _depth_npy(root / 'in' / 'scan.npy')
  return _predict(ckpt, inp, root / 'out', '--norm', '0'), ['--norm 0', 'positive number']


def _predict_scale_zero(root, ckpt):
  inp = _depth_npy(root / 'in' / 'scan.npy')
  return _predict(ckpt, inp, root / 'out', '--scale', '0'), ['--scale', "'0'", 'positive integer']


def _run_copy(root, ckpt):
  # A copy inside the case directory, so that anything predict writes into it is seen.
  shutil.copytree(ckpt, root / 'run')
  return root / 'run'


def _predict_output_new_step_dir(root, ckpt):
  run = _run_copy(root, ckpt)
  inp = _depth_npy(root / 'in' / 'scan.npy')
  out = run / 'checkpoints' / '9'  # would be taken for step 9
  return _predict(run, inp, out), [f'--output {out}', f'lies inside the checkpoint directory {out.parent}']


def _predict_output_in_step_dir(root, ckpt):
  run = _run_copy(root, ckpt)
  inp = _depth_npy(root / 'in' / 'scan.npy')
  out = run / 'checkpoints' / '1'
  return _predict(ckpt, inp, out), [f'--output {out}', str(out.parent)]


def _predict_output_is_exported_checkpoint(root, ckpt):
  exported = root / 'dsrnet_x2'  # the layout of dsr_jax.export's output: <dir>/<step>/{params,config}
  shutil.copytree(ckpt / 'checkpoints', exported)
  inp = _depth_npy(root / 'in' / 'scan.npy')
  return _predict(exported, inp, exported), [f'--output {exported}', 'is the checkpoint directory']


def _predict_dangling_link_in_dir(root, ckpt):
  inp = _depth_npy(root / 'in' / 'a.npy')
  bad = inp.parent / 'b.png'
  bad.symlink_to(root / 'gone.png')
  return _predict(ckpt, inp.parent, root / 'out'), [str(bad), 'does not resolve']


def _predict_link_loop_in_dir(root, ckpt):
  inp = _depth_npy(root / 'in' / 'a.npy')
  bad = inp.parent / 'b.npy'
  bad.symlink_to(bad)
  return _predict(ckpt, inp.parent, root / 'out'), [str(bad), 'does not resolve']


def _predict_animated_png(root, ckpt):
  bad = root / 'in' / 'scan.png'
  bad.parent.mkdir()
  frames = [Image.fromarray(np.full((12, 16), v, np.uint8)) for v in (100, 200)]
  frames[0].save(bad, save_all=True, append_images=frames[1:])
  return _predict(ckpt, bad, root / 'out'), [str(bad), 'animated', '2 frames']


def _predict_mm_in_dir(root, ckpt):
  inp = _depth_npy(root / 'in' / 'a.npy')
  bad = inp.parent / 'b.png'
  Image.fromarray(np.full((12, 16), 1500, np.uint16)).save(bad)
  return _predict(ckpt, inp.parent, root / 'out'), [str(bad), '1500', '--norm']


# ---------------------------------------------------------------- issue 37: the third black-box pass
# 1. Unbounded sizes, a lying .npy header, a backend that cannot start, integer fields.


def _depth_70x90(root):
  return _depth_npy(root / 'in' / 'scan.npy', _depth_m(70, 90) / 4)


def _predict_overlap_huge(root, ckpt):
  # It asked for 149 GiB: windows of 8 + 2 x 100000 pixels a side.
  inp = _depth_70x90(root)
  return _predict(ckpt, inp, root / 'out', '--tile', '8', '--overlap', '100000'), ['--overlap 100000', '256']


def _eval_overlap_huge(root, ckpt):
  return (['--config', 'configs/eval.py:middlebury2005', '--workdir', str(root / 'eval'),
           f'--config.eval.checkpoint_dir={ckpt}', '--config.eval.tile=16', '--config.eval.overlap=1000000'],
          ['eval.overlap=1000000', '256'])


def _npy_with_header(path, shape, payload: bytes, descr='<f4'):
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, 'wb') as f:
    np.lib.format.write_array_header_1_0(f, {'descr': descr, 'fortran_order': False, 'shape': shape})
    f.write(payload)
  return path


def _predict_npy_header_too_large(root, ckpt):
  bad = _npy_with_header(root / 'in' / 'scan.npy', (100000, 100000), bytes(100))
  return _predict(ckpt, bad, root / 'out'), [str(bad), 'truncated', '(100000, 100000)']


def _predict_npy_trailing_bytes(root, ckpt):
  a = (_depth_m(12, 16) / 4).astype(np.float32)
  bad = _npy_with_header(root / 'in' / 'scan.npy', a.shape, a.tobytes() + bytes(64))
  return _predict(ckpt, bad, root / 'out'), [str(bad), '64 bytes beyond']


def _main_jax_platforms_gpu(root, _):
  return _train()(root), ["JAX_PLATFORMS='gpu'", 'cpu']


def _predict_jax_platforms_cuda(root, ckpt):
  inp = _depth_npy(root / 'in' / 'scan.npy')
  return _predict(ckpt, inp, root / 'out'), ["JAX_PLATFORMS='cuda'", 'this machine offers: cpu']


def _export_jax_platforms_cuda(root, ckpt):
  return ['--checkpoint', str(ckpt), '--output', str(root / 'exported')], ["JAX_PLATFORMS='cuda'", 'cpu']


def _main_seed_beyond_int32(root, _):
  return _train('--config.seed=4294967296')(root), ['seed=4294967296', 'int32']


def _main_adam_b2_one(root, _):
  return _train('--config.optim.dsr.b2=1.0')(root), ['optim.dsr.b2=1.0', '< 1.0']


def _main_synthetic_size_huge(root, _):
  return _train('--config.data.synthetic.size=(100000,100000)')(root), ['data.synthetic.size', '8192']


# 2. Inputs that decode but are not what they claim; files that are not regular files.


def _png_chunk(kind: bytes, data: bytes) -> bytes:
  import struct  # pylint: disable=g-import-not-at-top
  import zlib  # pylint: disable=g-import-not-at-top
  return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))


def _png_bytes(w, h, idat: bytes, depth=8, colour=0) -> bytes:
  import struct  # pylint: disable=g-import-not-at-top
  ihdr = struct.pack('>IIBBBBB', w, h, depth, colour, 0, 0, 0)
  return b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IHDR', ihdr) + _png_chunk(b'IDAT', idat) + _png_chunk(b'IEND', b'')


def _predict_png_short_data(root, ckpt):
  # 100 bytes whose IHDR says 6000 x 6000 and whose well-ended zlib stream holds two rows: Pillow decodes it,
  # zero-filled, to 36 megapixels.
  import zlib  # pylint: disable=g-import-not-at-top
  bad = root / 'in' / 'scan.png'
  bad.parent.mkdir()
  bad.write_bytes(_png_bytes(6000, 6000, zlib.compress(b''.join(b'\0' + bytes([100]) * 6000 for _ in range(2)))))
  return _predict(ckpt, bad, root / 'out'), [str(bad), '6000x6000']


def _predict_png_bad_data_crc(root, ckpt):
  # A flipped byte in stored (uncompressed) image data: Pillow skips IDAT CRCs and decodes other depth.
  import zlib  # pylint: disable=g-import-not-at-top
  good = _png_bytes(16, 12, zlib.compress(b''.join(b'\0' + bytes([100]) * 16 for _ in range(12)), 0))
  at = good.index(b'IDAT') + 4 + 20
  bad = root / 'in' / 'scan.png'
  bad.parent.mkdir()
  bad.write_bytes(good[:at] + bytes([good[at] ^ 0x40]) + good[at + 1:])
  return _predict(ckpt, bad, root / 'out'), [str(bad), "'IDAT' chunk fails its CRC"]


def _predict_png_2bit(root, ckpt):
  # Pillow rescales 2-bit grey to 0-255: the output would be an 8-bit PNG of other values.
  import zlib  # pylint: disable=g-import-not-at-top
  bad = root / 'in' / 'scan.png'
  bad.parent.mkdir()
  bad.write_bytes(_png_bytes(16, 12, zlib.compress(b''.join(b'\0' + bytes([0b01101101]) * 4 for _ in range(12))),
                             depth=2))
  return _predict(ckpt, bad, root / 'out'), [str(bad), '2-bit']


def _predict_fifo_input(root, ckpt):
  bad = root / 'in' / 'scan.npy'
  bad.parent.mkdir()
  os.mkfifo(bad)  # reading it would block for ever
  return _predict(ckpt, bad, root / 'out'), [str(bad), 'FIFO', 'not a regular file']


def _predict_fifo_in_dir(root, ckpt):
  inp = _depth_npy(root / 'in' / 'a.npy')
  bad = inp.parent / 'b.png'
  os.mkfifo(bad)
  return _predict(ckpt, inp.parent, root / 'out'), [str(bad), 'not a regular file']


def _predict_device_input(root, ckpt):
  link = root / 'in' / 'zeros.npy'
  link.parent.mkdir()
  link.symlink_to('/dev/zero')  # never ends
  return _predict(ckpt, link, root / 'out'), [str(link), 'a device']


# 3. Writes that must not happen.


def _shipped_copy(root):
  # A copy of a shipped checkpoint, so that a broken guard cannot damage the real one.
  return pathlib.Path(shutil.copytree(REPO / 'checkpoints' / 'dsrnet_x4', root / 'dsrnet_x4'))


def _export_into_shipped_checkpoint(root, ckpt):
  shipped = _shipped_copy(root)
  out = shipped / 'newexp'
  return ['--checkpoint', str(ckpt), '--output', str(out)], [f'--output {out}', 'lies inside the checkpoint '
                                                               f'directory {shipped}']


def _main_workdir_in_shipped_checkpoint(root, _):
  shipped = _shipped_copy(root)
  return _train()(root)[:3] + [str(shipped / 'run')], [str(shipped / 'run'), 'lies inside the checkpoint']


def _main_workdir_is_root(root, _):
  return ['--config', 'configs/test.py', '--workdir', '/'], ['--workdir /', 'filesystem root']


def _predict_output_system_dir(root, ckpt):
  inp = _depth_npy(root / 'in' / 'scan.npy')
  return _predict(ckpt, inp, '/etc/dsr_jax_out'), ['--output /etc/dsr_jax_out', 'system directory /etc']


def _main_workdir_unexpanded_variable(root, _):
  work = f'{root}/$RUN/w'
  return _train()(root)[:3] + [work], ["'$RUN'", 'unexpanded']


def _predict_output_empty(root, ckpt):
  inp = _depth_npy(root / 'in' / 'scan.npy')
  return _predict(ckpt, inp, ''), ['--output is empty']


def _predict_output_trailing_space(root, ckpt):
  inp = _depth_npy(root / 'in' / 'scan.npy')
  return _predict(ckpt, inp, f'{root}/out '), ['--output', 'whitespace']


def _export_output_unexpanded_variable(root, ckpt):
  return ['--checkpoint', str(ckpt), '--output', f'{root}/${{OUT}}'], ["'${OUT}'"]


def _builder(dataset, manual, out):
  return ['--dataset', dataset, '--manual_dir', str(manual), '--data_dir', str(out)]


def _builder_missing_manual_dir(root, _):
  return _builder('middlebury_lu', '/nonexistent', root / 'tfds'), ['--manual_dir /nonexistent']


def _builder_empty_manual_dir(root, _):
  (root / 'data').mkdir()  # tfds itself asserts (a traceback) on an empty manual directory
  return _builder('middlebury_lu', root / 'data', root / 'tfds'), [f'--manual_dir {root / "data"}',
                                                                    'middlebury_lu/Middlebury/Depth']


def _builder_empty(root, _):
  data = _nyu(root, ids=())
  return _builder('nyu_v2', data, root / 'tfds'), [str(data), 'nyu_v2']


def _builder_corrupt_png(root, _):
  data = _middlebury_lu(root)
  bad = data / 'middlebury_lu/Middlebury/Depth/Middlebury_04_output_depth.png'
  _corrupt_png(bad)
  return _builder('middlebury_lu', data, root / 'tfds'), [str(bad)]


def _builder_16bit_expected(root, _):
  data = _rgbdd(root, depth_mode='L')  # No realscene/: the builder skips that optional split.
  return _builder('rgbdd', data, root / 'tfds'), [str(data / 'rgbdd/Depth/scene1_HR_gt.png')]


def _builder_unknown_dataset(root, _):
  return _builder('nyu', root, root / 'tfds'), ["'nyu'"]


CASES = [
    Case('main-corrupt-png', 'main', _main_corrupt_png),
    Case('main-truncated-npy', 'main', _main_truncated_npy),
    Case('main-rgb-depth-size-mismatch', 'main', _main_size_mismatch),
    Case('main-all-zero-depth', 'main', _main_all_zero_depth),
    Case('main-all-nan-depth', 'main', _main_all_nan_depth),
    Case('main-8bit-png-for-16bit-rgbdd', 'main', _main_16bit_expected),
    Case('main-16bit-png-for-8bit-middlebury', 'main', _main_8bit_expected),
    Case('main-scale-3', 'main', _main_scale_3),
    Case('main-crop-not-multiple-of-scale', 'main', _main_crop_not_multiple_of_scale),
    Case('main-missing-data-dir', 'main', _main_missing_data_dir),
    Case('main-empty-train-split', 'main', _main_empty_train_split),
    Case('main-empty-validation-split', 'main', _main_empty_validation_split),
    Case('main-config-typo', 'main', _main_config_typo),
    Case('main-unknown-dataset', 'main', _main_unknown_dataset),
    Case('main-cpu-convolutions', 'main', _main_cpu_convolutions),
    Case('main-workdir-is-a-file', 'main', _main_workdir_is_a_file),
    Case('main-crop-larger-than-images', 'main', _main_crop_larger_than_images),
    Case('main-resume-with-other-model', 'main', _main_resume_with_other_model),
    Case('main-lr-nan', 'main', _main_lr_nan),
    Case('main-lr-negative', 'main', _main_lr_negative),
    Case('main-workdir-unwritable', 'main', _main_workdir_unwritable),
    Case('eval-workdir-unwritable', 'main', _eval_workdir_unwritable),
    Case('eval-one-corrupt-file', 'main', _eval_one_corrupt_file),
    Case('predict-corrupt-png', 'predict', _predict_corrupt_png),
    Case('predict-truncated-npy', 'predict', _predict_truncated_npy),
    Case('predict-all-nan', 'predict', _predict_all_nan),
    Case('predict-all-zero-16bit-png', 'predict', _predict_all_zero),
    Case('predict-rgb-png-as-depth', 'predict', _predict_rgb_as_depth),
    Case('predict-existing-output', 'predict', _predict_existing_output),
    Case('predict-checkpoint-of-other-scale', 'predict', _predict_other_scale),
    Case('predict-missing-checkpoint', 'predict', _predict_missing_checkpoint),
    Case('predict-output-under-a-file', 'predict', _predict_output_under_a_file),
    Case('predict-norm-overflows-float32', 'predict', _predict_norm_overflows),
    Case('predict-tile-too-small', 'predict', _predict_tile_too_small),
    Case('predict-output-is-input-dir', 'predict', _predict_output_is_input_dir),
    Case('predict-16bit-mm-for-relative-checkpoint', 'predict', _predict_mm_for_relative_checkpoint),
    Case('predict-16bit-mm-among-a-directory', 'predict', _predict_mm_in_dir),
    Case('predict-norm-zero', 'predict', _predict_norm_zero),
    Case('predict-scale-zero', 'predict', _predict_scale_zero),
    Case('predict-output-new-step-in-checkpoints', 'predict', _predict_output_new_step_dir),
    Case('predict-output-in-a-step-dir', 'predict', _predict_output_in_step_dir),
    Case('predict-output-is-an-exported-checkpoint', 'predict', _predict_output_is_exported_checkpoint),
    Case('predict-dangling-symlink-in-dir', 'predict', _predict_dangling_link_in_dir),
    Case('predict-symlink-loop-in-dir', 'predict', _predict_link_loop_in_dir),
    Case('predict-animated-png', 'predict', _predict_animated_png),
    Case('predict-overlap-beyond-the-image', 'predict', _predict_overlap_huge),
    Case('eval-overlap-beyond-any-image', 'main', _eval_overlap_huge),
    Case('predict-npy-header-larger-than-file', 'predict', _predict_npy_header_too_large),
    Case('predict-npy-trailing-bytes', 'predict', _predict_npy_trailing_bytes),
    Case('main-jax-platforms-gpu', 'main', _main_jax_platforms_gpu, env=(('JAX_PLATFORMS', 'gpu'),)),
    Case('predict-jax-platforms-cuda', 'predict', _predict_jax_platforms_cuda, env=(('JAX_PLATFORMS', 'cuda'),)),
    Case('export-jax-platforms-cuda', 'export', _export_jax_platforms_cuda, env=(('JAX_PLATFORMS', 'cuda'),)),
    Case('main-seed-beyond-int32', 'main', _main_seed_beyond_int32),
    Case('main-adam-b2-one', 'main', _main_adam_b2_one),
    Case('main-synthetic-size-huge', 'main', _main_synthetic_size_huge),
    Case('predict-png-short-image-data', 'predict', _predict_png_short_data),
    Case('predict-png-image-data-crc', 'predict', _predict_png_bad_data_crc),
    Case('predict-png-2bit-grey', 'predict', _predict_png_2bit),
    Case('predict-fifo-input', 'predict', _predict_fifo_input),
    Case('predict-fifo-among-a-directory', 'predict', _predict_fifo_in_dir),
    Case('predict-link-to-a-device', 'predict', _predict_device_input),
    Case('export-into-a-shipped-checkpoint', 'export', _export_into_shipped_checkpoint),
    Case('main-workdir-in-a-shipped-checkpoint', 'main', _main_workdir_in_shipped_checkpoint),
    Case('main-workdir-filesystem-root', 'main', _main_workdir_is_root),
    Case('predict-output-in-etc', 'predict', _predict_output_system_dir),
    Case('main-workdir-unexpanded-variable', 'main', _main_workdir_unexpanded_variable),
    Case('predict-output-empty', 'predict', _predict_output_empty),
    Case('predict-output-trailing-space', 'predict', _predict_output_trailing_space),
    Case('export-output-unexpanded-variable', 'export', _export_output_unexpanded_variable),
    Case('builder-missing-manual-dir', 'builder', _builder_missing_manual_dir),
    Case('builder-empty-manual-dir', 'builder', _builder_empty_manual_dir),
    Case('builder-empty-dataset', 'builder', _builder_empty),
    Case('builder-corrupt-png', 'builder', _builder_corrupt_png),
    Case('builder-8bit-png-for-16bit-rgbdd', 'builder', _builder_16bit_expected),
    Case('builder-unknown-dataset', 'builder', _builder_unknown_dataset),
]

MODULES = {'main': 'dsr_jax.main', 'predict': 'dsr_jax.predict', 'export': 'dsr_jax.export',
           'builder': 'dsr_jax.input_pipeline.tfds_builders'}


# ------------------------------------------------------------------------------------------ running


class FilesChanged(AssertionError):
  """The case created, removed or touched files (the xfail cases expect exactly this failure)."""


@dataclasses.dataclass
class Result:
  returncode: int
  stdout: str
  stderr: str
  needles: list[str]
  before: dict
  after: dict


def _snapshot(path: pathlib.Path) -> dict:
  """{relative path: (kind, size, mtime_ns)} of path itself and everything under it (path's own mtime moves
  when anything is created or removed in it, even a probe that is gone again)."""
  out = {}
  for p in [path, *sorted(path.rglob('*'))]:
    st = p.lstat()
    out[str(p.relative_to(path))] = ('dir' if p.is_dir() else 'file', st.st_size if p.is_file() else 0,
                                     st.st_mtime_ns)
  return out


def _env(extra=()):
  env = {k: v for k, v in os.environ.items() if not k.startswith(('JAX_', 'XLA_', 'TF_', 'DSR_'))}
  env.update({'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': '--xla_force_host_platform_device_count=1',
              'TF_CPP_MIN_LOG_LEVEL': '3',
              'PYTHONPATH': os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH', '')]))})
  env.update(dict(extra))
  return env


def _make_checkpoint(workdir: pathlib.Path) -> pathlib.Path:
  """An x2 checkpoint (configs/test.py, untrained) written by the training code's own save()."""
  import jax  # pylint: disable=g-import-not-at-top
  from dsr_jax.configs import test as test_config  # pylint: disable=g-import-not-at-top
  from dsr_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from dsr_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  from dsr_jax import optim  # pylint: disable=g-import-not-at-top
  from dsr_jax import state as state_lib  # pylint: disable=g-import-not-at-top
  cfg = test_config.get_config()
  assert cfg.model.scale == 2
  models = models_lib.build(cfg.model)
  tx = optim.make(cfg, ('dsr', 'denet', 'spnet'))
  state = state_lib.create(models, tx, jax.random.key(0), cfg.model.scale)
  mngr = checkpointing.manager(str(workdir), keep=1)
  try:
    checkpointing.save(mngr, 1, state, state_lib.role_state(state), {'next_index': 0}, cfg)
    mngr.wait_until_finished()
  finally:
    mngr.close()
  return workdir


def _run_case(case: Case, root: pathlib.Path, ckpt: pathlib.Path | None) -> Result:
  root.mkdir(parents=True)
  argv, needles = case.setup(root, ckpt)
  before = _snapshot(root)
  try:
    p = subprocess.run([sys.executable, '-m', MODULES[case.tool], *argv], cwd=REPO, env=_env(case.env),
                       capture_output=True, text=True, timeout=TIMEOUT)
    rc, out, err = p.returncode, p.stdout, p.stderr
  except subprocess.TimeoutExpired as e:  # subprocess.run kills the child
    rc, out, err = -1, str(e.stdout or ''), f'timed out after {TIMEOUT} s\n{e.stderr or ""}'
  return Result(rc, out, err, needles, before, _snapshot(root))


@pytest.fixture(scope='module')
def x2_checkpoint(tmp_path_factory):
  return _make_checkpoint(tmp_path_factory.mktemp('x2_run'))


@pytest.fixture(scope='module')
def results(request, tmp_path_factory):
  """Runs every selected case (two at a time); {case id: Result}."""
  params = [getattr(getattr(item, 'callspec', None), 'params', {}) for item in request.session.items
            if item.module is request.module]
  selected = {p['case'].id for p in params if 'case' in p}
  cases = [c for c in CASES if c.id in selected and (c.tool != 'predict' or PREDICT.exists())]
  ckpt = None
  if any(c.tool in ('predict', 'export') or c.id in ('main-resume-with-other-model', 'eval-one-corrupt-file',
                                                      'eval-overlap-beyond-any-image') for c in cases):
    ckpt = request.getfixturevalue('x2_checkpoint')
  base = tmp_path_factory.mktemp('cases')
  with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    futures = {c.id: pool.submit(_run_case, c, base / c.id, ckpt) for c in cases}
    return {k: f.result() for k, f in futures.items()}


def _params():
  for c in CASES:
    marks = [pytest.mark.xfail(reason=c.xfail, raises=FilesChanged, strict=True)] if c.xfail else []
    yield pytest.param(c, id=c.id, marks=marks)


@pytest.mark.parametrize('case', list(_params()))
def test_bad_input(case, results):
  if case.tool == 'predict' and not PREDICT.exists():
    pytest.skip('dsr_jax/predict.py does not exist yet')
  r = results[case.id]
  everything = r.stdout + r.stderr
  assert 'Traceback' not in everything, everything[-4000:]
  assert r.returncode == 2, f'exit status {r.returncode}; stderr:\n{r.stderr[-4000:]}'
  lines = [l for l in r.stderr.splitlines() if not _LOG_LINE.match(l) and not _PROGRESS.search(l)]
  assert len(lines) == 1, f'expected one line on stderr, got {len(lines)}:\n' + '\n'.join(lines)
  line = lines[0]
  assert line.startswith('error:'), line
  if case.tool == 'main':  # and, unfiltered, the only line a user sees
    assert r.stderr.strip().splitlines() == [line] and not r.stdout.strip(), r.stdout + r.stderr
  missing = [n for n in r.needles if n not in line]
  assert not missing, f'{line!r} does not name {missing}'
  if case.tool == 'builder':
    # A build that fails while reading the data has created its output directory in the case directory and
    # removed it again (the module docstring): the case directory's own mtime records that, nothing else.
    r.before.pop('.', None)
    r.after.pop('.', None)
  if r.after != r.before:
    raise FilesChanged(
        f'files changed: created {sorted(r.after.keys() - r.before.keys())}, removed '
        f'{sorted(r.before.keys() - r.after.keys())}, touched '
        f'{sorted(k for k in r.before.keys() & r.after.keys() if r.before[k] != r.after[k])}')


def test_enough_cases():
  assert len(CASES) >= 12 and len({c.id for c in CASES}) == len(CASES)


# ------------------------------------------------------------------------------------------ in-process
# Failures no real input can cause on this machine (a full disk; a refused mkdir, when tests run as root),
# injected into `dsr_jax.predict.main`; the same rules: status 2, one error line, nothing changed.


def _files(snapshot: dict) -> dict:
  return {k: v for k, v in snapshot.items() if v[0] == 'file'}


def _main_in_process(capsys, argv) -> tuple[int, str]:
  from dsr_jax import predict  # pylint: disable=g-import-not-at-top
  capsys.readouterr()
  rc = predict.main([str(a) for a in argv])
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('error:'), err
  return rc, err[0]


def test_predict_npy_keeps_channel_axis(x2_checkpoint, tmp_path):
  from dsr_jax import predict  # pylint: disable=g-import-not-at-top
  inp = _depth_npy(tmp_path / 'in' / 'scan.npy', (_depth_m(12, 16) / 4)[..., None])
  assert predict.main(_predict(x2_checkpoint, inp, tmp_path / 'out')) == 0
  assert np.load(tmp_path / 'out' / 'scan_x2.npy').shape == (24, 32, 1)


def test_predict_disk_full_keeps_old_outputs(x2_checkpoint, tmp_path, capsys, monkeypatch):
  from dsr_jax import predict  # pylint: disable=g-import-not-at-top
  for name in ('a', 'b'):
    _depth_npy(tmp_path / 'in' / f'{name}.npy')
  argv = _predict(x2_checkpoint, tmp_path / 'in', tmp_path / 'out', '--overwrite')
  assert predict.main(argv) == 0
  before = _snapshot(tmp_path)
  stage, written = predict._stage, []  # pylint: disable=protected-access

  def filling(path, write, staged):
    def write_until_full(tmp):
      written.append(path)
      if len(written) == 3:  # a's two outputs are staged; the disk fills during b's
        pathlib.Path(tmp).write_bytes(b'half')
        raise OSError(28, 'No space left on device')
      write(tmp)
    stage(path, write_until_full, staged)

  monkeypatch.setattr(predict, '_stage', filling)
  rc, line = _main_in_process(capsys, argv)
  assert rc == 2
  for needle in (str(tmp_path / 'out' / 'b_x2.npy'), 'No space left on device', 'no output was written'):
    assert needle in line, line
  after = _snapshot(tmp_path)
  # The same entries (no temporary file left) and files (a's old outputs not replaced); only the output
  # directory's mtime moved, with the temporary files.
  assert after.keys() == before.keys()
  assert _files(after) == _files(before)


def test_predict_output_cannot_be_created(x2_checkpoint, tmp_path, capsys, monkeypatch):
  inp = _depth_npy(tmp_path / 'in' / 'scan.npy')
  out = tmp_path / 'new' / 'out'
  makedirs = os.makedirs

  def refused(name, *args, **kwargs):
    if pathlib.Path(name) == out:
      raise PermissionError(13, 'Permission denied', str(name))
    return makedirs(name, *args, **kwargs)

  monkeypatch.setattr(os, 'makedirs', refused)
  before = _snapshot(tmp_path)
  rc, line = _main_in_process(capsys, _predict(x2_checkpoint, inp, out))
  assert rc == 2
  for needle in (f'--output {out}', 'cannot create it', 'PermissionError'):
    assert needle in line, line
  assert _snapshot(tmp_path) == before


# ------------------------------------------------------------------------------------------ signals


def _user_lines(text: str) -> list[str]:
  return [l for l in text.splitlines() if l.strip() and not _LOG_LINE.match(l)]


def test_second_sigint_while_the_first_step_compiles(x2_checkpoint, tmp_path):
  """Two Ctrl-C, the second while the resumed run compiles its first step: one line each, status 130 at once,
  no traceback and no segfault, and the committed checkpoint as it was."""
  import signal  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  work = tmp_path / 'work'
  shutil.copytree(x2_checkpoint, work)  # step 1 of configs/test.py: the run resumes and compiles step 2
  before = _snapshot(work / 'checkpoints' / '1')
  p = subprocess.Popen([sys.executable, '-m', 'dsr_jax.main', '--config', 'configs/test.py', '--workdir', str(work)],
                       cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  out, resumed = [], threading.Event()

  def read():
    for line in p.stdout:
      out.append(line)
      if 'resumed from step 1' in line:
        resumed.set()
  reader = threading.Thread(target=read, daemon=True)
  reader.start()
  try:
    assert resumed.wait(TIMEOUT), ''.join(out)
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    err = p.stderr.read()
    rc = p.wait(60)
  finally:
    if p.poll() is None:
      p.kill()
  reader.join(10)
  everything = ''.join(out) + err
  assert 'Traceback' not in everything and 'Fatal Python error' not in everything, everything[-4000:]
  assert rc == 130, (rc, everything[-4000:])
  lines = _user_lines(err)
  assert lines[-1].startswith('SIGINT received again: stopped at once'), lines
  assert len(lines) <= 2, lines  # the first signal's line and the second's
  assert _snapshot(work / 'checkpoints' / '1') == before


@pytest.mark.parametrize('signame', ['SIGTERM', 'SIGINT'])
def test_predict_interrupted_leaves_nothing(x2_checkpoint, tmp_path, capsys, monkeypatch, signame):
  """A signal after the first of three files is done: its staged outputs and the directories predict made are
  removed, one line says so, status 128 + n."""
  import signal  # pylint: disable=g-import-not-at-top
  from dsr_jax import predict  # pylint: disable=g-import-not-at-top
  sig = getattr(signal, signame)
  for name in ('a', 'b', 'c'):
    _depth_npy(tmp_path / 'in' / f'{name}.npy')
  process, done = predict.process, []

  def process_then_signal(*args, **kwargs):
    result = process(*args, **kwargs)
    done.append(result)
    if len(done) == 1:
      os.kill(os.getpid(), sig)
    return result
  monkeypatch.setattr(predict, 'process', process_then_signal)
  # tmp_path's own mtime moves: predict made new/ in it and removed it again.
  listing = lambda: {k: v for k, v in _snapshot(tmp_path).items() if k != '.'}
  before, handler = listing(), signal.getsignal(sig)
  capsys.readouterr()
  rc = predict.main([str(a) for a in _predict(x2_checkpoint, tmp_path / 'in', tmp_path / 'new' / 'out')])
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 128 + sig and len(done) == 1, (rc, done)
  assert len(err) == 1 and err[0].startswith(f'interrupted ({signame})') and 'no output was written' in err[0], err
  assert listing() == before  # no .tmp file, no new directory
  assert signal.getsignal(sig) is handler  # handlers given back


def test_quiet_console_keeps_the_documented_warning_line_only():
  """After a corrupt newest checkpoint the console holds the `warning:` line that checkpointing prints; its
  absl copies (two 'W...' lines) go to the log only, unless --verbosity is given."""
  import logging  # pylint: disable=g-import-not-at-top
  from dsr_jax import main  # pylint: disable=g-import-not-at-top
  record = lambda path, level: logging.LogRecord('absl', level, path, 1, 'm', (), None)
  assert not main._quiet_filter(record(str(REPO / 'dsr_jax' / 'checkpointing.py'), logging.WARNING))  # pylint: disable=protected-access
  assert main._quiet_filter(record(str(REPO / 'dsr_jax' / 'checkpointing.py'), logging.ERROR))  # pylint: disable=protected-access
  assert main._quiet_filter(record(str(REPO / 'input_pipeline' / 'pipeline.py'), logging.WARNING))  # pylint: disable=protected-access


def test_predict_overlap_is_capped_at_the_image(x2_checkpoint, tmp_path):
  """--overlap beyond the image's size is capped there at use: the result is that of the receptive field's
  own margin, and the windows stay the image's size (a 12x16 map, not 2 x 256 pixels of reflection)."""
  from dsr_jax import inference  # pylint: disable=g-import-not-at-top
  from dsr_jax import predict  # pylint: disable=g-import-not-at-top
  inp = _depth_npy(tmp_path / 'in' / 'scan.npy')
  seen, real = [], inference.super_resolve

  def spy(*args, **kwargs):
    seen.append(kwargs['overlap'])
    return real(*args, **kwargs)
  inference.super_resolve = spy
  try:
    for overlap in (0, predict.MAX_OVERLAP):
      argv = _predict(x2_checkpoint, inp, tmp_path / f'out{overlap}', '--tile', '8', '--overlap', str(overlap))
      assert predict.main([str(a) for a in argv]) == 0
  finally:
    inference.super_resolve = real
  assert seen == [0, 16]
  a, b = (np.load(tmp_path / f'out{o}' / 'scan_x2.npy') for o in (0, predict.MAX_OVERLAP))
  np.testing.assert_allclose(a, b, atol=1e-4)
