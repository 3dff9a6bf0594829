"""Helpers for notebooks (colab/dsr_jax_quickstart.ipynb): the notebook itself only calls these.

Kept free of logic that training or evaluation need, so nothing here is on a hot path. This module imports
only the standard library and numpy at load time: it runs right after a `--no-deps` install of dsr_jax,
before the rest of the requirements are in place.
"""
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from dsr_jax import resize

# The runtime's own builds stay: Colab's jax/jaxlib are built for its accelerator (a PyPI jax would be a
# CPU build), and its TensorFlow carries its CUDA setup (tensorflow-cpu would replace it).
_KEEP = ('jax', 'jaxlib')
_TF_DISTS = ('tensorflow', 'tensorflow-cpu', 'tf-nightly', 'tensorflow-intel', 'tensorflow-macos')


def in_colab() -> bool:
  return 'google.colab' in sys.modules


def _canon(name: str) -> str:
  return name.lower().replace('_', '-')


def _installed(dist: str):
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  try:
    return metadata.version(dist)
  except metadata.PackageNotFoundError:
    return None


def _applies(req) -> bool:
  """Whether a requirement holds for a plain install (no extras) on this interpreter."""
  return not req.marker or req.marker.evaluate({'extra': ''})


def missing_requirements(package: str = 'dsr_jax') -> list[str]:
  """`package`'s requirements that the runtime does not satisfy, less those the runtime must keep."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  from packaging.requirements import Requirement  # pylint: disable=g-import-not-at-top
  has_tf = any(_installed(d) for d in _TF_DISTS)
  missing = []
  for req in map(Requirement, metadata.requires(package) or []):
    name = _canon(req.name)
    if not _applies(req) or name in _KEEP:
      continue
    if name == 'tensorflow-cpu' and has_tf:
      continue
    version = _installed(req.name)
    if version is None or not req.specifier.contains(version, prereleases=True):
      missing.append(str(req))
  return missing


def install_requirements(package: str = 'dsr_jax') -> list[str]:
  """pip-installs what `package` requires and the runtime lacks (see missing_requirements); returns it."""
  missing = missing_requirements(package)
  if missing:
    print('installing:', ' '.join(missing), flush=True)
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', *missing], check=True)
  else:
    print(f'{package}: every requirement is already installed (the runtime keeps its jax and TensorFlow)')
  return missing


def _has_gpu() -> bool:
  smi = shutil.which('nvidia-smi')
  return bool(smi) and subprocess.run([smi, '-L'], capture_output=True, check=False).returncode == 0


def _has_tpu() -> bool:
  return bool(os.environ.get('TPU_NAME') or os.environ.get('COLAB_TPU_ADDR')) or os.path.exists('/dev/accel0')


def runtime_problems() -> list[str]:
  """What stops this runtime's jax from training dsr_jax, as sentences that say what to do."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  from packaging.requirements import Requirement  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  found = {'jax': jax.__version__, 'jaxlib': _installed('jaxlib') or jax.__version__}
  problems = []
  for dist in ('flax', 'optax', 'orbax-checkpoint', 'chex'):
    version = _installed(dist)
    if version is None:
      continue
    for req in map(Requirement, metadata.requires(dist) or []):
      name = _canon(req.name)
      if name in found and _applies(req) and not req.specifier.contains(found[name], prereleases=True):
        problems.append(f'{dist} {version} needs {name}{req.specifier} but the runtime has {name} '
                        f'{found[name]}: pin an older {dist} that accepts it (pip install "{dist}<{version}") '
                        'or upgrade jax, then restart the runtime')
  kind = None
  if jax.devices()[0].platform == 'cpu':  # each probe once (nvidia-smi is a subprocess)
    kind = 'a GPU' if _has_gpu() else 'a TPU' if _has_tpu() else None
  if kind:
    problems.append(f'the runtime has {kind} but jax {jax.__version__} sees only the CPU (a CPU build of jax '
                    'replaced the runtime\'s): reinstall the accelerator build of jax, or factory-reset the '
                    'runtime, and do not pip-install jax over it')
  return problems


def check_runtime() -> str:
  """Prints what jax sees; stops the notebook with one sentence per problem (see runtime_problems)."""
  import jax  # pylint: disable=g-import-not-at-top
  problems = runtime_problems()
  if problems:
    raise SystemExit('; '.join(problems))
  devices = jax.devices()
  line = (f'jax {jax.__version__}, flax {_installed("flax")}, optax {_installed("optax")}: {len(devices)} '
          f'{devices[0].platform} device(s) ({devices[0].device_kind})')
  if devices[0].platform == 'cpu':
    line += '; no accelerator, so training is slow (Runtime > Change runtime type picks a GPU or TPU)'
  print(line)
  return line


def workdir(path: str, drive: bool = False) -> str:
  """The training directory; with `drive`, on a mounted Google Drive so a reconnect resumes the run."""
  if drive:
    if not in_colab():
      raise SystemExit('USE_DRIVE needs Colab (google.colab.drive); set USE_DRIVE = False elsewhere')
    from google.colab import drive as gdrive  # pylint: disable=g-import-not-at-top
    gdrive.mount('/content/drive')
    if not path.startswith('/content/drive/'):
      path = os.path.join('/content/drive/MyDrive', path.lstrip('/'))
  os.makedirs(path, exist_ok=True)
  print(f'workdir: {path}' + (' (re-running the train cell resumes from its last checkpoint)' if drive else ''))
  return path


def tensorboard(workdir: str) -> str:
  """Inline TensorBoard in Colab; elsewhere (e.g. headless runs) prints the command instead."""
  cmd = f'--logdir {workdir}'
  if in_colab():
    from IPython import get_ipython  # pylint: disable=g-import-not-at-top
    ip = get_ipython()
    ip.run_line_magic('load_ext', 'tensorboard')
    ip.run_line_magic('tensorboard', cmd)
  else:
    print(f'tensorboard {cmd}')
  return cmd


def demo_scene(config, seed: int = 10**6, size=(128, 128)):
  """A held-out synthetic scene (the validation seeds): normalised HR depth (H, W) in [0, 1]."""
  from dsr_jax.input_pipeline import synthetic  # pylint: disable=g-import-not-at-top
  return synthetic.make_scene(seed, *size)['depth'].astype(np.float32)


def load_depth(path: str, norm: float) -> np.ndarray:
  """A depth map file (8/16-bit PNG or .npy) normalised by `norm` (e.g. 255 for Middlebury disparity)."""
  from dsr_jax import depth_io  # pylint: disable=g-import-not-at-top
  depth, _ = depth_io.read_depth(pathlib.Path(path))
  return np.asarray(depth, np.float32) / np.float32(norm)


def compare(checkpoint: str, hr: np.ndarray, *, tile: int = 0, ensemble: bool = False):
  """Degrades `hr` (normalised, (H, W)) by the checkpoint's scale and super-resolves it.

  Returns a dict of (H, W) maps: lr (nearest-upsampled for display), bicubic, ours, gt, and the MADs.
  """
  from dsr_jax import inference  # pylint: disable=g-import-not-at-top
  from dsr_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  from dsr_jax import restore  # pylint: disable=g-import-not-at-top
  config, params = restore.load_for_inference(checkpoint)
  s = int(config.model.scale)
  dsr = models_lib.build(config.model).dsr
  h, w = hr.shape
  lr = resize.downsample(hr.astype(np.float64), s).astype(np.float32)
  ours = inference.super_resolve(dsr, params, lr, tile=tile, ensemble=ensemble)[:h, :w]
  bic = resize.upsample_bicubic(lr.astype(np.float64), s)[:h, :w].astype(np.float32)
  lr_big = np.kron(lr, np.ones((s, s), np.float32))[:h, :w]
  return {'scale': s, 'lr': lr_big, 'bicubic': bic, 'ours': ours, 'gt': hr,
          'mad_bicubic': float(np.abs(bic - hr).mean()), 'mad_ours': float(np.abs(ours - hr).mean())}


def plot(result: dict, unit_scale: float = 1.0, title: str = ''):
  """LR | bicubic | ours | GT | |error of ours| side by side."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  panels = [('LR (nearest)', result['lr']), (f'bicubic  MAD {result["mad_bicubic"] * unit_scale:.3f}',
                                               result['bicubic']),
            (f'dsr_jax  MAD {result["mad_ours"] * unit_scale:.3f}', result['ours']), ('GT', result['gt'])]
  lo, hi = float(result['gt'].min()), float(result['gt'].max())
  fig, axes = plt.subplots(1, 5, figsize=(20, 4.4))
  for ax, (name, img) in zip(axes, panels):
    ax.imshow(img, cmap='viridis', vmin=lo, vmax=hi)
    ax.set_title(name)
    ax.axis('off')
  err = np.abs(result['ours'] - result['gt']) * unit_scale
  im = axes[4].imshow(err, cmap='inferno')
  axes[4].set_title('|ours - GT|')
  axes[4].axis('off')
  fig.colorbar(im, ax=axes[4], fraction=0.046)
  fig.suptitle(title or f'x{result["scale"]} depth super-resolution')
  fig.tight_layout(rect=(0, 0, 1, 0.92))  # room for the suptitle
  return fig


def depth_file(path: str = '', demo_size: int = 96) -> str:
  """The depth map to super-resolve: `path`, else a Colab upload, else a synthetic scene written as an 8-bit
  PNG of 0-255 disparity (what the shipped weights take as is)."""
  if path:
    return path
  if in_colab():
    from google.colab import files  # pylint: disable=g-import-not-at-top
    uploaded = files.upload()
    if uploaded:
      return os.path.abspath(next(iter(uploaded)))
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from dsr_jax.input_pipeline import synthetic  # pylint: disable=g-import-not-at-top
  depth = synthetic.make_scene(10**6, demo_size, demo_size)['depth']
  out = os.path.join(tempfile.mkdtemp(prefix='dsr_jax_demo_'), 'demo_depth.png')
  Image.fromarray(np.round(np.clip(depth, 0, 1) * 255).astype(np.uint8)).save(out)
  print(f'no depth file given: using a synthetic scene, {out}')
  return out


def super_resolve_file(path: str, checkpoint: str = 'dsrnet_x4', out_dir: str = 'dsr_jax_out',
                       tile: int = 256, norm: float = 0.0) -> dict:
  """Super-resolves the file at full size (predict's CLI: tiled, holes kept, outputs named <stem>_x<s>).

  Returns the input, its bicubic upsampling and ours (the file's own units), the scale and the output paths.
  """
  from dsr_jax import depth_io  # pylint: disable=g-import-not-at-top
  from dsr_jax import predict  # pylint: disable=g-import-not-at-top
  from dsr_jax import restore  # pylint: disable=g-import-not-at-top
  args = ['--checkpoint', checkpoint, '--input', path, '--output', out_dir, '--tile', str(tile), '--overwrite']
  if norm:
    args += ['--norm', str(norm)]
  if predict.main(args) != 0:
    raise SystemExit(f'predict could not super-resolve {path} (its error is printed above)')
  root, step = restore.resolve_checkpoint(checkpoint)
  s = int(restore.read_config(root, step).model.scale)
  (inp,) = depth_io.check_inputs([pathlib.Path(path)])
  x = depth_io.read_depth(inp.path)[0].astype(np.float32)
  x = x[..., 0] if x.ndim == 3 else x
  out, colour = predict.output_paths(inp, pathlib.Path(out_dir), s)
  ours = depth_io.read_depth(out)[0].astype(np.float32)
  ours = ours[..., 0] if ours.ndim == 3 else ours
  bic = resize.upsample_bicubic(x.astype(np.float64), s).astype(np.float32)
  return {'scale': s, 'input': x, 'bicubic': bic, 'ours': ours,
          'files': [str(out), str(colour)]}


def plot_sr(result: dict, title: str = ''):
  """Input (nearest-upsampled) | bicubic | ours, one colour scale."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  s = result['scale']
  panels = [(f'input {result["input"].shape[1]}x{result["input"].shape[0]} (nearest)',
             np.kron(result['input'], np.ones((s, s), np.float32))),
            ('bicubic', result['bicubic']), (f'dsr_jax x{s}', result['ours'])]
  valid = result['input'][result['input'] > 0]
  lo, hi = (float(valid.min()), float(valid.max())) if valid.size else (0.0, 1.0)
  fig, axes = plt.subplots(1, 3, figsize=(15, 5))
  for ax, (name, img) in zip(axes, panels):
    ax.imshow(img, cmap='viridis', vmin=lo, vmax=hi)
    ax.set_title(name)
    ax.axis('off')
  fig.suptitle(title or f'x{s} super-resolution at full size')
  fig.tight_layout(rect=(0, 0, 1, 0.92))
  return fig


def download(path: str) -> str:
  """Zips `path` (a directory) and offers it for download in Colab; elsewhere prints where the zip is."""
  archive = shutil.make_archive(os.path.abspath(path).rstrip('/'), 'zip', path)
  if in_colab():
    from google.colab import files  # pylint: disable=g-import-not-at-top
    files.download(archive)
  else:
    print(f'archive: {archive}')
  return archive
