"""Super-resolves depth maps of any size with a trained DSRNet checkpoint.

  python -m dsr_jax.predict --checkpoint C --input FILE_OR_DIR --output DIR [--scale S]
      [--tile 512] [--overlap 32] [--ensemble] [--overwrite] [--norm N]

Inputs: an 8- or 16-bit single-channel (single-frame) PNG, or a 2-D (or (H, W, 1)) float or integer .npy
depth map, of any size; a directory processes every *.png / *.npy in it, sorted by name (a symbolic link
among them that leads nowhere is an unreadable input, like a corrupt file). The checkpoint is anything
`dsr_jax.restore.resolve_checkpoint` accepts (a training workdir, its checkpoints/ directory or one step).

Units: the network works on depth / norm in [0, 1], with the norm it was trained with. The norm is read
from the checkpoint config's data.name (`dsr_jax.input_pipeline.readers.DATASETS`): 255 for the 0-255 disparity
sets (middlebury*), 4000 for rgbdd (16-bit PNG millimetres), 10 for nyu_v2 (.npy metres), 1 for
synthetic_rgbd (relative depth). An 8-bit PNG is always divided by 255 (its full range, the disparity
convention). So give depth in the unit of the training data, or set --norm to the value that maps your
depth onto [0, 1]. Without --norm, an input whose valid depth exceeds 2x the norm is refused: that is a
unit mismatch (millimetres given to a disparity checkpoint), whose output would look plausible and be
wrong. The output is in the same unit and storage type as the input: 16-bit PNG -> 16-bit
PNG and 8-bit PNG -> 8-bit PNG (rounded, clipped to the type's range; valid pixels are at least 1 so that
0 always means a hole), .npy -> .npy of the same dtype and shape ((H, W, 1) -> (sH, sW, 1); floats clipped
below at 0).

Which network: the shipped `dsrnet_x2`, `dsrnet_x4`, `dsrnet_x8` and `dsrnet_x16` were trained on LR drawn
from a mixture of degradations (data.degrade='random': resizers with and without antialiasing, area and point
sampling at random sub-pixel offsets, blur, Gaussian and depth-proportional noise, 8/16-bit quantisation, filled holes),
so they tolerate the LR that image libraries and sensors make. The `_protocol` names (`dsrnet_x4_protocol`, ...)
expect exactly the paper's LR (MATLAB-style antialiased bicubic, float, no noise); there they score best, and
on any other LR they may do worse than bicubic upsampling (README, "Results"; docs/method.md, "Degradations").

Holes: zero, negative or non-finite (NaN, inf) input pixels are holes. For the network they are filled
with the nearest valid depth; in the output they stay holes at the upsampled positions (nearest-neighbour
upsampling of the hole mask: output pixel (i, j) is a hole when input pixel (i // s, j // s) is), with the
input's hole value: 0, or NaN for NaN holes of a float .npy.

Outputs, for input <stem>.<ext> at scale s: <stem>_x<s>.<ext> (exactly s times the input size) and a
colourised preview <stem>_x<s>_color.png (viridis over the valid output range, holes black). Every output
is written to a temporary name in the output directory and all are renamed at the end, so a run that fails
or is interrupted while writing (a full disk) leaves no output and any older ones (--overwrite) intact.
The output directory may not lie inside a checkpoint directory (its files would become part of it).

Large inputs are tiled: --tile counts input (LR) pixels per tile side, --overlap input pixels of context
per side (raised to the network's receptive field, 6 x model.stages; at most 256, and capped at each image's
size, beyond which it is only the image's reflection); the result is identical to untiled inference, and
memory is bounded by the tile size (see dsr_jax/inference.py). --tile 0 runs whole images; a tile has at
least 8 input pixels.
--ensemble averages the 8 flip/transpose variants (8x the time).

Only regular files are read, and only when their content is what their header declares: every PNG chunk's
CRC holds and the image data inflate to exactly the size IHDR declares (Pillow alone zero-fills missing rows),
grey PNGs have 8 or 16 bits, and a .npy's size is its header's shape x item size (checked before allocating).
SIGINT and SIGTERM remove the temporary outputs and the directories predict created, print one line and exit
with 128 + the signal's number.

Errors (bad input file, corrupt PNG, truncated .npy, a multi-channel image given as depth, a --scale that
contradicts the checkpoint's, a missing or incomplete checkpoint, an output that already exists without
--overwrite or cannot be written, a depth map without any valid pixel, depth far outside the checkpoint's
range) print one line to stderr and exit with status 2. All inputs and outputs are checked before anything
is written, so a refused run writes nothing.
"""
import argparse
import contextlib
import logging
import os
import pathlib
import signal
import sys
import threading
import time

import numpy as np
from PIL import Image

from dsr_jax import depth_io
from dsr_jax import paths
from dsr_jax import staging as staging_lib
from dsr_jax.config_lib import MAX_OVERLAP
from dsr_jax.errors import ArgumentParser
from dsr_jax.errors import UserError
from dsr_jax.errors import check_backend
from dsr_jax.errors import one_line
from dsr_jax.errors import positive_int

CMAP = 'viridis'
# Smaller tiles are all overlap (each side gets >= 6 x model.stages of context): thousands of windows.
MIN_TILE = 8
# Inputs whose valid depth exceeds RANGE_SLACK x the norm are refused unless --norm is given (check_range).
RANGE_SLACK = 2.0


def _finite_ratio(peak: float, norm: float) -> bool:
  with np.errstate(over='ignore', divide='ignore', invalid='ignore'):
    return bool(np.isfinite(np.float32(peak) / np.float32(norm)))


def check_range(inp: depth_io.DepthInput, norm: float, config) -> None:
  """Refuses depth far above the training range: the network only ever saw depth / norm in [0, 1].

  The usual cause is a unit mismatch (a 16-bit millimetre PNG for a checkpoint trained on 0-255
  disparity: values up to ~16x the range), which would otherwise give a plausible-looking but wrong map.
  """
  if inp.peak > RANGE_SLACK * norm:
    raise UserError(f'{inp.path}: depth up to {inp.peak:g} is {inp.peak / norm:.1f}x the norm {norm:g} of '
                    f'the checkpoint\'s training data ({config.data.get("name")!r}: depth / norm in [0, 1]); '
                    f'give depth in that unit, or pass --norm (--norm {norm:g} runs it as it is)')


def input_norm(config, kind: str, override: float) -> float:
  """depth / norm in [0, 1] for the network (see the module docstring)."""
  from dsr_jax.input_pipeline import readers  # pylint: disable=g-import-not-at-top
  if override is not None:
    return float(override)
  if kind == 'png8':
    return 255.0
  try:
    names = [n for n, _ in readers.parse_mix(config.data.name)]
  except readers.DataError as e:
    raise UserError(f'checkpoint config data.name={config.data.get("name")!r}: unknown dataset, so its depth '
                    'norm is unknown; pass --norm') from e
  norms = sorted({readers.DATASETS[n].norm for n in names})
  if len(norms) > 1:
    raise UserError(f'checkpoint trained on {config.data.name!r}, whose datasets use different depth norms '
                    f'({", ".join(map(str, norms))}); pass --norm')
  return float(norms[0])


def output_paths(inp: depth_io.DepthInput, out_dir: pathlib.Path, scale: int) -> tuple[pathlib.Path, pathlib.Path]:
  ext = 'npy' if inp.kind == 'npy' else 'png'
  stem = inp.path.stem
  return out_dir / f'{stem}_x{scale}.{ext}', out_dir / f'{stem}_x{scale}_color.png'


def check_outputs(inputs, out_dir: pathlib.Path, scale: int, overwrite: bool):
  paths.check_dir_target(out_dir, '--output', writable=True)
  seen = {}
  for inp in inputs:
    for p in output_paths(inp, out_dir, scale):
      if p in seen:
        raise UserError(f'inputs {seen[p]} and {inp.path} would both write {p}; give them different names')
      seen[p] = inp.path
      if p.exists() and not overwrite:
        raise UserError(f'{p}: already exists (pass --overwrite to replace it)')
      if p.exists() and p.is_dir():
        raise UserError(f'{p}: exists and is a directory')
      if p.resolve() == inp.path.resolve():
        raise UserError(f'{p}: would overwrite its own input')


def colourise(depth, holes_hr) -> np.ndarray:
  """The preview: viridis over the valid output range, holes black."""
  from dsr_jax import pictures  # pylint: disable=g-import-not-at-top
  return pictures.colourise(depth, CMAP, holes=holes_hr)


def _stage(path: pathlib.Path, write, staged: staging_lib.Staging) -> None:
  """Writes `path`'s content under a temporary name beside it (staging.Staging.file); the run's commit puts
  every output in place once all are written."""
  try:
    staged.file(path, write)
  except OSError as e:
    raise UserError(f'{path}: cannot write it ({one_line(e)})') from e


def _save_png(array: np.ndarray, path: pathlib.Path, staged: staging_lib.Staging) -> None:
  _stage(path, lambda tmp: Image.fromarray(array).save(tmp, format='PNG'), staged)


def _save_npy(array: np.ndarray, path: pathlib.Path, staged: staging_lib.Staging) -> None:
  def write(tmp):
    with open(tmp, 'wb') as f:
      np.save(f, array, allow_pickle=False)
  _stage(path, write, staged)


def commit(staged: staging_lib.Staging) -> None:
  """Renames every staged output onto its name (same directory: each rename is atomic, needs no space)."""
  try:
    staged.commit()
  except staging_lib.CommitError as e:
    raise UserError(f'{e.path}: cannot rename {e.staged} onto it ({one_line(e.cause)}); {e.done} of {e.total} '
                    'output files were put in place, the others are unchanged') from e


def process(inp: depth_io.DepthInput, dsr, params, *, scale: int, norm: float, out_dir: pathlib.Path,
            tile: int, overlap: int, ensemble: bool, staged: staging_lib.Staging,
            progress=None) -> tuple[pathlib.Path, float]:
  """Super-resolves one input and stages its two outputs (see _stage); returns (output path, seconds)."""
  from dsr_jax import inference  # pylint: disable=g-import-not-at-top  (JAX: after the inputs are checked)
  from dsr_jax.input_pipeline import transforms  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  a = inp.data if inp.data is not None else depth_io.read_depth(inp.path)[0]
  inp.data = None
  holes = depth_io.hole_mask(a)
  nan_holes = np.isnan(a) if np.issubdtype(a.dtype, np.floating) and np.isnan(a).any() else None
  x = np.where(holes, 0, a).astype(np.float32) / np.float32(norm)
  x = transforms.fill_invalid(x, ~holes)  # the network never sees a hole
  # Context beyond the image's own size is only its reflection: capped there, the result is the same and
  # memory stays bounded by the image (an --overlap of 100000 would ask for windows of 200000 pixels a side).
  overlap = min(overlap, max(a.shape))
  pred = inference.super_resolve(dsr, params, x, tile=tile, overlap=overlap, ensemble=ensemble,
                                 progress=progress)
  del x
  pred *= np.float32(norm)
  up = lambda m: np.repeat(np.repeat(m, scale, axis=0), scale, axis=1)
  holes_hr = up(holes)
  nan_hr = up(nan_holes) if nan_holes is not None else None
  out = depth_io.to_output(pred, holes_hr, nan_hr, inp.dtype)
  del pred
  path, colour_path = output_paths(inp, out_dir, scale)
  if inp.kind == 'npy':
    _save_npy(out[..., None] if inp.channel_axis else out, path, staged)
  else:
    _save_png(out, path, staged)
  _save_png(colourise(out, holes_hr), colour_path, staged)
  return path, time.perf_counter() - t0


class TileProgress:
  """'[2/5] scene.png: tile 14/40' on stdout, beside the per-file lines (stderr holds errors only): rewritten
  in place on a terminal; elsewhere (a notebook, a log file) at most one line per tenth of the tiles. Silent
  for an image done in one window."""

  def __init__(self, label: str, stream=None):
    self.label, self.stream = label, stream or sys.stdout
    self.tty = bool(getattr(self.stream, 'isatty', lambda: False)())
    self.shown = 0

  def __call__(self, done: int, total: int) -> None:
    if total <= 1:
      return
    if self.tty:
      end = '\n' if done == total else ''
      print(f'\r{self.label}: tile {done}/{total}', end=end, file=self.stream, flush=True)
    elif done * 10 // total > self.shown * 10 // total or done == total:
      self.shown = done
      print(f'{self.label}: tile {done}/{total}', file=self.stream, flush=True)


def build_parser() -> argparse.ArgumentParser:
  p = ArgumentParser(
      prog='python -m dsr_jax.predict',
      description='Super-resolve depth maps (8/16-bit single-channel PNG or 2-D .npy) with a trained DSRNet. '
                  'Output: <stem>_x<s>.<ext> (same unit and type as the input, exactly s times its size) '
                  'and <stem>_x<s>_color.png. Holes: zero, negative or NaN input pixels are filled '
                  '(nearest valid depth) for the network and stay holes (0, or NaN in float .npy) at the '
                  'upsampled positions of the output (nearest-neighbour upsampling of the hole mask).',
      epilog='Units: depth is divided by the norm of the checkpoint\'s training data (255 for 8-bit PNGs '
             'and disparity sets, 4000 for rgbdd mm, 10 for nyu_v2 m, 1 for synthetic) unless --norm is '
             'given. Any error prints one line and exits with status 2; nothing is written then.')
  p.add_argument('--checkpoint', required=True,
                 help='a shipped checkpoint by name (checked against its SHA256SUMS): dsrnet_x4, dsrnet_x8 '
                      'were trained on LR made in many ways (antialiased or aliasing resizers, area, point '
                      'sampling, blur, noise, 8/16-bit files, holes) and suit any LR you have; '
                      'dsrnet_x4_protocol, dsrnet_x8_protocol were trained on MATLAB-style antialiased '
                      'bicubic LR kept in float alone (the paper\'s protocol, where they score best) and do '
                      'worse than bicubic upsampling on LR made otherwise or with noise. Or a training '
                      'workdir, its checkpoints/ directory, or one step directory')
  p.add_argument('--input', required=True, help='a .png/.npy depth map, or a directory of them')
  p.add_argument('--output', required=True, help='output directory (created if missing)')
  p.add_argument('--scale', type=positive_int, default=None,
                 help="upsampling factor; must equal the checkpoint's (default: the checkpoint's)")
  p.add_argument('--tile', type=int, default=512,
                 help='input (LR) pixels per tile side for bounded memory; 0 = whole image (default 512)')
  p.add_argument('--overlap', type=int, default=32,
                 help=f'input pixels of context on each tile side, 0 to {MAX_OVERLAP}; raised to the receptive '
                      "field and capped at the image's size (default 32)")
  p.add_argument('--ensemble', action='store_true', help='8-way flip/transpose self-ensemble (8x slower)')
  p.add_argument('--overwrite', action='store_true', help='replace outputs that already exist')
  p.add_argument('--norm', type=float, default=None,
                 help='divide input depth by this to get [0, 1] (default: from the checkpoint, see below)')
  return p


def predict(args) -> int:
  """Runs the CLI on parsed `args`; raises UserError for any user mistake."""
  if args.tile < 0 or 0 < args.tile < MIN_TILE:
    raise UserError(f'--tile {args.tile}: expected 0 (whole image) or >= {MIN_TILE} input pixels')
  if not 0 <= args.overlap <= MAX_OVERLAP:
    raise UserError(f'--overlap {args.overlap}: expected 0 to {MAX_OVERLAP} input pixels (context beyond the '
                    "network's receptive field, 6 x model.stages, never changes the output; it is also capped "
                    "at each image's size)")
  for field, text in (('--input', args.input), ('--output', args.output), ('--checkpoint', args.checkpoint)):
    paths.check_path_text(text, field)
  if args.norm is not None and not (np.isfinite(args.norm) and args.norm > 0):
    raise UserError(f'--norm {args.norm:g}: expected a positive number (the depth value that maps onto 1)')
  # Inputs first (no JAX needed), then the checkpoint's config; the parameters are restored only once
  # everything else is known to be fine.
  source = pathlib.Path(args.input).expanduser()
  if source.is_dir() and source.resolve() == pathlib.Path(args.output).expanduser().resolve():
    # Its outputs would be inputs of the next run over the same directory.
    raise UserError(f'--output {args.output}: is the --input directory (expected another directory)')
  inputs = depth_io.check_inputs(depth_io.list_inputs(args.input))
  from dsr_jax import restore  # pylint: disable=g-import-not-at-top  (JAX + Orbax: ~1 s to import)
  root, step = restore.resolve_checkpoint(args.checkpoint)
  check_backend()  # before Orbax starts it, which would blame the checkpoint for a bad JAX_PLATFORMS
  config = restore.read_config(root, step)
  restore.check_lr_only(config, os.path.join(root, str(step)))
  scale = int(config.model.scale)
  if args.scale is not None and args.scale != scale:
    raise UserError(f"--scale {args.scale} contradicts the checkpoint's scale {scale} "
                    f'({os.path.join(root, str(step))}); omit --scale or pass --scale {scale}')
  norms = []
  for inp in inputs:
    try:
      norms.append(input_norm(config, inp.kind, args.norm))
    except UserError as e:
      raise UserError(f'{inp.path}: {e}') from e
  for inp, norm in zip(inputs, norms):
    if args.norm is None:  # An explicit --norm is the user's statement of the unit.
      check_range(inp, norm, config)
    elif not _finite_ratio(inp.peak, norm):
      raise UserError(f'--norm {args.norm:g}: {inp.path} divided by it overflows float32 (expected the '
                      'depth value that maps onto 1)')
  out_dir = pathlib.Path(args.output).expanduser()
  check_outputs(inputs, out_dir, scale, args.overwrite)
  _, params, _ = restore.load_params(os.path.join(root, str(step)), ('dsr',))
  from dsr_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  dsr = models_lib.build(config.model).dsr
  created = [d for d in (out_dir, *out_dir.parents) if not d.exists()]  # removed again on failure
  total = time.perf_counter()
  staged, committed = staging_lib.Staging(), False
  try:
    try:
      os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
      raise UserError(f'--output {out_dir}: cannot create it ({one_line(e)})') from e
    try:
      for k, (inp, norm) in enumerate(zip(inputs, norms), 1):
        label = f'[{k}/{len(inputs)}] {inp.path}'
        path, seconds = process(inp, dsr, params['dsr'], scale=scale, norm=norm, out_dir=out_dir,
                                tile=args.tile, overlap=args.overlap, ensemble=args.ensemble, staged=staged,
                                progress=TileProgress(label))
        h, w = inp.shape
        print(f'{label} -> {path} ({h}x{w} -> {scale * h}x{scale * w}, {seconds:.2f} s)', flush=True)
    except UserError as e:
      raise UserError(f'{e}; no output was written (files already in --output {out_dir} are '
                      'unchanged)') from e
    commit(staged)  # all renames or none: a signal waits for the last one
    committed = True
  except Interrupted as e:
    e.outcome = (f'all {len(inputs)} file(s) were written to {out_dir}' if committed else
                 f'no output was written (files already in --output {out_dir} are unchanged)')
    raise
  finally:
    staged.discard()
    if not committed:
      for d in created:  # innermost first; a directory someone else wrote to stays
        with contextlib.suppress(OSError):
          os.rmdir(d)
  print(f'{len(inputs)} file(s) in {time.perf_counter() - total:.2f} s (checkpoint step {step}, x{scale})')
  return 0


class Interrupted(BaseException):
  """SIGINT or SIGTERM during predict: unwinds like an exception, so that the temporary outputs and the
  directories predict created are removed on the way (a BaseException: no `except Exception` swallows it)."""

  def __init__(self, signum: int):
    super().__init__(signum)
    self.signum = signum
    self.outcome = 'nothing was written'


@contextlib.contextmanager
def _signals_raise():
  """SIGINT and SIGTERM raise Interrupted in the main thread. Later ones are ignored: what they would
  interrupt is the clean-up, which takes milliseconds."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def handle(signum, frame):
    del frame
    for sig in staging_lib.STOP_SIGNALS:
      signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)
  old = {sig: signal.signal(sig, handle) for sig in staging_lib.STOP_SIGNALS}
  try:
    yield
  finally:
    for sig, handler in old.items():
      signal.signal(sig, handler)


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  # Orbax's read-only manager logs WARNINGs about options it adjusts; errors must stay one line.
  for name in ('absl', 'orbax'):
    logging.getLogger(name).setLevel(logging.ERROR)
  try:
    with _signals_raise():
      return predict(args)
  except UserError as e:
    print(f'error: {" ".join(str(e).split())}', file=sys.stderr, flush=True)
    return 2
  except Interrupted as e:
    print(f'interrupted ({signal.Signals(e.signum).name}): stopped; {e.outcome}', file=sys.stderr, flush=True)
    return 128 + e.signum


if __name__ == '__main__':
  sys.exit(main())
