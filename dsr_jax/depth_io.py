"""Depth files: decoding and validation of the inputs predict reads, and the stored type of its outputs.

Inputs: an 8- or 16-bit single-channel (single-frame) PNG, or a 2-D (or (H, W, 1)) float or integer .npy
depth map. Only regular files are read, and only when their content is what their header declares: every
PNG chunk's CRC holds and the image data inflate to exactly the size IHDR declares (Pillow alone zero-fills
missing rows), grey PNGs have 8 or 16 bits, and a .npy's size is its header's shape x item size (checked
before allocating). Anything else raises UserError with one line naming the file.

Holes: zero, negative or non-finite (NaN, inf) pixels (`hole_mask`).
"""
import dataclasses
import os
import pathlib
import stat
import struct
import warnings
import zlib

import numpy as np
from PIL import Image

from dsr_jax.errors import UserError
from dsr_jax.errors import one_line

SUFFIXES = ('.png', '.npy')
PNG_MODES = {'L': 'png8', 'I;16': 'png16', 'I;16L': 'png16', 'I;16B': 'png16', 'I': 'png16'}
# Inputs whose decoded arrays stay in memory between the check pass and the run (pixels); larger sets are
# decoded twice rather than held.
_KEEP_PIXELS = 64 * 2 ** 20


@dataclasses.dataclass
class DepthInput:
  """One validated input file."""
  path: pathlib.Path
  kind: str  # 'png8' | 'png16' | 'npy'
  dtype: np.dtype  # storage type of the input (and of the output)
  shape: tuple[int, int]
  data: np.ndarray | None = None  # decoded values, kept for small inputs
  peak: float = 0.0  # largest valid depth, in stored units
  channel_axis: bool = False  # an (H, W, 1) .npy: its output keeps the axis


def read_depth(path: pathlib.Path) -> tuple[np.ndarray, str]:
  """Decodes one input file: ((H, W) array in its stored dtype, kind); UserError for anything but depth."""
  a, kind, _ = _read_depth(path)
  return a, kind


def _check_npy(path: pathlib.Path) -> None:
  """Refuses a .npy whose header does not describe the file: np.load would allocate what the header declares
  (a 100000 x 100000 header over 100 bytes: MemoryError) or ignore bytes the header does not account for."""
  fmt = np.lib.format
  try:
    with open(path, 'rb') as f:
      version = fmt.read_magic(f)
      read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
      shape, _, dtype = read(f)
      offset = f.tell()
  except (OSError, ValueError, EOFError, SyntaxError, TypeError) as e:
    raise UserError(f'{path}: cannot read .npy depth ({one_line(e)}); expected a complete 2-D numeric '
                    'array saved with numpy.save') from e
  if dtype.hasobject:
    raise UserError(f'{path}: a .npy of Python objects (dtype {dtype}); expected a float or integer depth array')
  want = offset + int(np.prod(shape, dtype=object)) * dtype.itemsize
  size = os.path.getsize(path)
  if size != want:
    what = 'truncated: it ends before' if size < want else f'it holds {size - want} bytes beyond'
    raise UserError(f'{path}: cannot read .npy depth ({what} the {shape} {dtype} array its header declares: '
                    f'{want} bytes, the file has {size}); expected a complete array saved with numpy.save')


_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _png_data_size(w: int, h: int, bits_per_pixel: int, interlaced: bool) -> int:
  """Bytes of filtered scanlines (a filter byte per row) that IHDR's size implies."""
  passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
  total = 0
  for x0, y0, dx, dy in passes:
    pw, ph = -(-(w - x0) // dx), -(-(h - y0) // dy)
    if pw > 0 and ph > 0:
      total += ph * (1 + (pw * bits_per_pixel + 7) // 8)
  return total


def _check_png(path: pathlib.Path) -> None:
  """Refuses a PNG whose content is not the image its header declares, before Pillow decodes it.

  Pillow skips the CRCs of image data and fills rows that a short (but well-ended) data stream lacks with
  zeros: a 100-byte file would decode as a 6000 x 6000 map. Here every chunk's CRC must hold and the image
  data must inflate, to the end of the zlib stream (its Adler-32 checked), to exactly the bytes IHDR's size
  implies. Inflated data are counted, not kept; more than declared stops the count.
  """
  def bad(why):
    return UserError(f'{path}: cannot read PNG ({why}); expected an 8- or 16-bit single-channel PNG')
  with open(path, 'rb') as f:
    if f.read(8) != _PNG_SIGNATURE:
      raise bad('not a PNG file (no PNG signature)')
    header, inflater, got, want, idat = None, zlib.decompressobj(), 0, 0, 'none'
    while True:
      head = f.read(8)
      if len(head) < 8:
        raise bad('truncated: the file ends before its IEND chunk')
      length, kind = struct.unpack('>I4s', head)
      data, crc = f.read(length), f.read(4)
      if len(data) < length or len(crc) < 4:
        raise bad(f'truncated inside its {kind!r} chunk')
      if zlib.crc32(kind + data) != struct.unpack('>I', crc)[0]:
        raise bad(f'damaged: its {kind.decode("latin-1")!r} chunk fails its CRC')
      if header is None:
        if kind != b'IHDR' or length != 13:
          raise bad('damaged: the first chunk is not IHDR')
        w, h, depth, colour, _, _, interlace = header = struct.unpack('>IIBBBBB', data)
        if not (w and h) or colour not in _PNG_CHANNELS or interlace not in (0, 1):
          raise bad(f'damaged: IHDR declares {w}x{h}, colour type {colour}, interlace {interlace}')
        want = _png_data_size(w, h, depth * _PNG_CHANNELS[colour], bool(interlace))
      elif kind == b'IDAT':
        if idat == 'done':
          raise bad('damaged: its image data (IDAT) chunks are not consecutive')
        idat = 'open'
        try:
          while data and not inflater.eof:
            got += len(inflater.decompress(data, 1 << 20))
            data = inflater.unconsumed_tail
            if got > want:
              raise bad(f'damaged: its image data inflate to more than the {want} bytes its header\'s '
                        f'{w}x{h} declares')
        except zlib.error as e:
          raise bad(f'damaged: its image data are not a valid zlib stream ({e})') from e
      elif kind == b'IEND':
        break
      elif idat == 'open':
        idat = 'done'
  if idat == 'none':
    raise bad('no image data (IDAT) chunk')
  if got != want or not inflater.eof:
    raise bad(f'damaged: its image data hold {got} of the {want} bytes its header\'s {w}x{h} declares'
              + ('' if inflater.eof else ', and their zlib stream does not end'))
  if colour == 0 and depth not in (8, 16):
    # Pillow would rescale 1/2/4-bit grey to 0-255, and the output would be 8-bit: not the input's type.
    raise UserError(f'{path}: a {depth}-bit greyscale PNG (Pillow would rescale its values, and its output would '
                    'be stored in another type); expected an 8- or 16-bit single-channel PNG')


def _check_regular(path: pathlib.Path) -> None:
  """Only regular files are read: a FIFO blocks forever, /dev/zero never ends, a directory is no image."""
  if path.is_symlink() and not path.exists():
    raise UserError(f'{path}: symbolic link to {os.readlink(path)!r}, which does not resolve (dangling or a '
                    'loop); expected a .png or .npy depth map')
  try:
    mode = os.stat(path).st_mode
  except OSError as e:
    raise UserError(f'{path}: cannot read it ({one_line(e)})') from e
  if not stat.S_ISREG(mode):
    what = ('a directory' if stat.S_ISDIR(mode) else 'a FIFO' if stat.S_ISFIFO(mode) else
            'a device' if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else 'a socket' if stat.S_ISSOCK(mode)
            else 'not a regular file')
    raise UserError(f'{path}: is {what}, not a regular file; expected a .png or .npy depth map')


def _read_depth(path: pathlib.Path) -> tuple[np.ndarray, str, bool]:
  """read_depth, and whether the stored array had a trailing channel axis of 1."""
  _check_regular(path)
  suffix = path.suffix.lower()
  channel_axis = False
  if suffix == '.npy':
    _check_npy(path)
    try:
      a = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
      raise UserError(f'{path}: cannot read .npy depth ({one_line(e)}); expected a complete 2-D numeric '
                      'array saved with numpy.save') from e
    if not isinstance(a, np.ndarray):
      raise UserError(f'{path}: not a single .npy array (expected a 2-D depth array)')
    if a.ndim == 3 and a.shape[-1] == 1:
      a, channel_axis = a[..., 0], True
    if a.ndim == 3 and a.shape[-1] in (3, 4):
      raise UserError(f'{path}: a {a.shape[-1]}-channel array {a.shape} given as depth; expected one '
                      'channel (H, W)')
    if a.ndim != 2 or min(a.shape) < 1:
      raise UserError(f'{path}: expected a 2-D depth array (H, W), got shape {a.shape}')
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
      raise UserError(f'{path}: expected a float or integer depth array, got dtype {a.dtype}')
    return a, 'npy', channel_axis
  if suffix != '.png':
    raise UserError(f'{path}: unsupported file type {path.suffix!r} (expected a .png or .npy depth map)')
  _check_png(path)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      image = Image.open(path)
      image.load()  # decode now: a truncated or corrupt file fails here
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise UserError(f'{path}: cannot read PNG ({one_line(e)}); expected an 8- or 16-bit single-channel '
                    'PNG') from e
  if image.format != 'PNG':
    raise UserError(f'{path}: is a {image.format} image, not a PNG (expected an 8- or 16-bit single-channel '
                    'PNG)')
  if getattr(image, 'n_frames', 1) > 1:  # Pillow decodes the first frame only: the rest would be lost
    raise UserError(f'{path}: an animated PNG ({image.n_frames} frames); expected a single-frame depth PNG')
  kind = PNG_MODES.get(image.mode)
  if kind is None:
    bands = len(image.getbands())
    what = f'a {bands}-channel ({image.mode})' if bands > 1 else f'a {image.mode!r}-mode'
    raise UserError(f'{path}: {what} image given as depth; expected a single-channel 8- or 16-bit PNG')
  a = np.asarray(image)
  if image.mode == 'I':  # older Pillow spelling of 16-bit greyscale
    if a.min() < 0 or a.max() > 65535:
      raise UserError(f'{path}: 32-bit integer PNG values outside 0..65535 (expected 8- or 16-bit depth)')
    a = a.astype(np.uint16)
  return a, kind, channel_axis


def hole_mask(a: np.ndarray) -> np.ndarray:
  """True where the stored depth is a hole: zero, negative or non-finite."""
  if np.issubdtype(a.dtype, np.floating):
    with np.errstate(invalid='ignore'):
      return ~(np.isfinite(a) & (a > 0))
  return a <= 0


def list_inputs(path: str) -> list[pathlib.Path]:
  p = pathlib.Path(path).expanduser()
  if p.is_dir():
    # Every entry with a depth suffix is kept, to fail in read_depth unless it is a regular file (a link
    # that leads nowhere, a FIFO, a directory): skipping them would drop inputs silently.
    files = sorted(q for q in p.iterdir() if q.suffix.lower() in SUFFIXES)
    if not files:
      raise UserError(f'--input {p}: directory has no .png or .npy files')
    return files
  if not p.exists() and not p.is_symlink():
    raise UserError(f'--input {p}: no such file or directory')
  return [p]


def check_inputs(files: list[pathlib.Path]) -> list[DepthInput]:
  """Decodes every input once (all errors surface before anything is written)."""
  out, kept = [], 0
  for path in files:
    a, kind, channel_axis = _read_depth(path)
    holes = hole_mask(a)
    if holes.all():
      raise UserError(f'{path}: no valid depth pixel (every pixel is 0, negative or NaN)')
    keep = kept + a.size <= _KEEP_PIXELS
    kept += a.size if keep else 0
    peak = float(np.max(a, where=~holes, initial=0))
    out.append(DepthInput(path, kind, a.dtype, a.shape, a if keep else None, peak, channel_axis))
  return out


def to_output(pred, holes_hr, nan_hr, dtype: np.dtype) -> np.ndarray:
  """Prediction (input units, float32) -> stored output of `dtype` with the holes put back."""
  if np.issubdtype(dtype, np.integer):
    info = np.iinfo(dtype)
    # Valid pixels stay >= 1, so that 0 marks holes only.
    out = np.clip(np.round(pred), max(info.min, 1), info.max).astype(dtype)
    out[holes_hr] = 0
    return out
  # As above: a valid pixel stays positive (at least the smallest normal float), so 0 marks holes only.
  out = np.maximum(pred, np.finfo(dtype).tiny).astype(dtype)
  out[holes_hr] = 0
  if nan_hr is not None:
    out[nan_hr] = np.nan
  return out
