"""Readers for the real RGB-D sets in a manual directory (the layout of ../shared/data, see its README).

Listing is cheap (names and paths only); decoding happens one record at a time in `load_example`. Every
loaded example has the common format shared by all sources of the project:

  'depth': float32 (H, W) in the dataset's unit; invalid pixels are 0.
  'rgb':   uint8 (H, W, 3), aligned pixel-for-pixel with 'depth'.
  'valid': uint8 (H, W), 1 where the stored depth was finite and > 0.
  'norm':  float32 scalar; depth / norm lies in [0, 1] (see `DATASETS`).
  'name':  str scene id (file stem without its suffix, e.g. 'Middlebury_05', 'art', '1000').

Splits (all deterministic, from sorted file names; none depends on a random seed):

  middlebury_lu  train (26) / validation (4) / test (= validation): the 30 Middlebury pairs minus the six
                 benchmark scenes at third size (_02 art, _06 books, _14 dolls, _18 laundry, _21 moebius,
                 _24 reindeer), plus the 6 Lu pairs. Of the 30 eligible names, sorted, those at positions
                 i % 8 == 4 are held out (Middlebury_07, _16, _27, RGBD_05 with the stock data).
  middlebury2005 test (6): the benchmark scenes art, books, dolls, laundry, moebius, reindeer.
  rgbdd          train (362) / validation (40) / test (= validation) / full (405) / realscene (3).
                 The 405 pairs are the published RGB-D-D test split; the 3 scenes of realscene/ are taken
                 out of train/validation so that 'realscene' (real LR inputs) stays unseen. Of the
                 remaining 402, sorted, positions i % 10 == 9 are validation. 'test' is the held-out
                 validation pairs, so that a model trained on 'train' is never tested on its own training
                 images; 'full' is the literature protocol (RMSE over all 405) and is only fair for models
                 that never trained on rgbdd.
  nyu_v2         DKN numbering: ids < 1000 train (ids % 10 == 9 of those: validation), ids >= 1000 test
                 (the 449 test images 1000..1448). The 3 stock samples (1000..1002) are all 'test'.

Norm constants: 255 for the 0-255 disparity sets; 4000 mm for rgbdd (largest value over its 405 HR maps is
3830 mm); 10 m for nyu_v2 (the Kinect range cap used by the NYU literature); 1 for synthetic_rgbd.
"""
import dataclasses
import os
import pathlib
import re
from typing import Callable, Iterable, Iterator

from absl import logging
import numpy as np
from PIL import Image

from dsr_jax.errors import DataError
from dsr_jax.protocol import Protocol

ENV_DATA_DIR = 'DSR_DATA_DIR'
SYNTHETIC = 'synthetic_rgbd'

# The paper's Middlebury 2005 benchmark scenes and their third-size copies in middlebury_lu; neither may
# ever reach a train or validation split.
BENCHMARK_SCENES = ('art', 'books', 'dolls', 'laundry', 'moebius', 'reindeer')
MIDDLEBURY_LU_EXCLUDED = ('Middlebury_02', 'Middlebury_06', 'Middlebury_14', 'Middlebury_18',
                          'Middlebury_21', 'Middlebury_24')
_EXCLUDED_NUMBERS = frozenset(int(n.split('_')[1]) for n in MIDDLEBURY_LU_EXCLUDED)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """Everything about one dataset: the readers, the TFDS builders (generated from these) and evaluation
  read it. A dataset with an existing layout is one entry of DATASETS.

  Attributes:
    unit: unit of 'depth': 'disparity_0_255', 'mm', 'm' or 'relative'.
    norm: constant with depth / norm in [0, 1].
    splits: split names `list_records` accepts.
    layout: the expected manual-directory layout, relative to data.dir (quoted in error messages).
    protocol: how evaluation scores it (dsr_jax/protocol.py).
    description: one line for the TFDS builder.
    lister: (root, split) -> sorted records of that split; None for a generated dataset.
  """
  unit: str
  norm: float
  splits: tuple[str, ...]
  layout: str
  protocol: Protocol
  description: str = ''
  lister: Callable[[pathlib.Path, str], list] | None = None

  @property
  def convention(self) -> str:
    """'disparity' (near = large) or 'depth' (near = small): what DENet must learn to predict from RGB."""
    return 'disparity' if self.unit.startswith('disparity') else 'depth'


DATASETS = {
    'middlebury_lu': DatasetSpec(
        unit='disparity_0_255', norm=255.0, splits=('train', 'validation', 'test'),
        layout=('middlebury_lu/Middlebury/{Depth/Middlebury_XX_output_depth.png,'
                'RGB/Middlebury_XX_output_color.png} and '
                'middlebury_lu/Lu/{Depth/RGBD_0X_output_depth.png,RGB/RGBD_0X_ouput_color.png}, '
                '8-bit disparity'),
        protocol=Protocol('0-255 disparity', 1.0, border=6, crop_multiple=True,
                          reference='DKN/FDSR/DCTNet midd_calc_rmse'),
        description='Middlebury (Lu et al. 2014 third-size copies, minus the benchmark scenes) + Lu: '
                    'train/validation/test.',
        lister=lambda root, split: _list_middlebury_lu_split(root, split)),
    'middlebury2005': DatasetSpec(
        unit='disparity_0_255', norm=255.0, splits=('test',),
        layout='middlebury2005/{depth/SCENE.bmp,rgb/SCENE.png}, 8-bit disparity',
        protocol=Protocol('0-255 disparity', 1.0, round_uint8=True, all_pixels=True,
                          reference='Sun et al. CVPR 2021 Table 1; shared/data/README.md'),
        description='The six Middlebury 2005 benchmark scenes (test only).',
        lister=lambda root, split: _list_middlebury2005(root)),
    'rgbdd': DatasetSpec(
        unit='mm', norm=4000.0, splits=('train', 'validation', 'test', 'full', 'realscene'),
        layout=('rgbdd/{Depth/ID_HR_gt.png,RGB/ID_RGB.jpg} (16-bit mm), optional '
                'rgbdd/realscene/{Depth/ID_HR_gt.png,DepthLR/ID_LR_fill_depth.png,RGB/ID_RGB.jpg}'),
        protocol=Protocol('cm', 0.1, reference='He et al. CVPR 2021 (RGB-D-D), no border crop'),
        description='RGB-D-D time-of-flight depth (mm): train/validation/test/full/realscene.',
        lister=lambda root, split: _list_rgbdd(root, split)),
    'nyu_v2': DatasetSpec(
        unit='m', norm=10.0, splits=('train', 'validation', 'test'),
        layout=('nyu_v2/{Depth/ID.npy,RGB/ID.jpg} (or nyu_v2_samples/), float32 metres, '
                'numeric ids: < 1000 train, >= 1000 test'),
        protocol=Protocol('cm', 100.0, border=6, reference='DKN/FDSR/DCTNet calc_rmse'),
        description='NYU Depth v2 in the DKN layout (metres).',
        lister=lambda root, split: _list_nyu_v2(root, split)),
}

# Datasets read from files by this module (the synthetic one is procedural, input_pipeline/synthetic.py).
MANUAL_DATASETS = tuple(sorted(DATASETS))

DATASETS[SYNTHETIC] = DatasetSpec(
    unit='relative', norm=1.0, splits=('train', 'validation', 'test'),
    layout='procedural scenes (input_pipeline/synthetic.py), depth in [0.05, 1]; no files',
    protocol=Protocol('relative depth', 1.0, reference='project smoke tests'),
    description='Procedural scenes (input_pipeline/synthetic.py) at fixed counts and size.')

KNOWN_DATASETS = tuple(sorted(DATASETS))
# How eval mode and validation score each dataset (eval.dataset, or data.name).
PROTOCOLS = {name: spec.protocol for name, spec in DATASETS.items()}


@dataclasses.dataclass(frozen=True)
class Record:
  """One listed example: paths only, nothing decoded yet."""
  dataset: str
  name: str
  depth_path: str
  rgb_path: str
  lr_path: str = ''  # Real LR depth (rgbdd 'realscene' only).


def unknown_dataset_error(name: str) -> DataError:
  return DataError(f"unknown dataset {name!r} in data.name (known: {', '.join(KNOWN_DATASETS)}; "
                   "join names with '+' to mix them, 'name*K' repeats one K times in the train split)")


def parse_mix(value: str) -> list[tuple[str, int]]:
  """data.name -> [(dataset, repeats)]: 'middlebury_lu*4+rgbdd' -> [('middlebury_lu', 4), ('rgbdd', 1)].

  Repeats weight a small set against a large one in the training mix without copying any data.
  """
  mix = []
  for part in str(value).split('+'):
    name, star, count = part.strip().partition('*')
    name = name.strip()
    if name not in DATASETS:
      raise unknown_dataset_error(name)
    repeats = 1
    if star:
      try:
        repeats = int(count)
      except ValueError:
        repeats = 0
      if repeats < 1:
        raise DataError(f'data.name={value!r}: {part.strip()!r} needs a positive whole repeat count after *')
    mix.append((name, repeats))
  return mix


def dataset_info(name: str) -> DatasetSpec:
  """Metadata of any known dataset (manual or synthetic); DataError for unknown names."""
  if name not in DATASETS:
    raise unknown_dataset_error(name)
  return DATASETS[name]


def resolve_data_dir(data_dir: str | os.PathLike | None) -> pathlib.Path:
  """data.dir, or $DSR_DATA_DIR when it is empty; the directory must exist."""
  value = str(data_dir or '') or os.environ.get(ENV_DATA_DIR, '')
  if not value:
    raise DataError(f'no data directory: data.dir is empty and ${ENV_DATA_DIR} is not set (point one of '
                    'them at a directory laid out like shared/data, see its README)')
  path = pathlib.Path(value).expanduser()
  if not path.is_dir():
    raise DataError(f'data.dir {path}: not a directory (expected the manual data root, laid out like '
                    'shared/data)')
  return path


# ------------------------------------------------------------------------------------------- listing


def _need_dir(root: pathlib.Path, rel: str, name: str) -> pathlib.Path:
  path = root / rel
  if not path.is_dir():
    raise DataError(f"data.dir {root}: no '{rel}' (expected the {name} layout: "
                    f'{DATASETS[name].layout})')
  return path


def _match(directory: pathlib.Path, pattern: str) -> dict[str, pathlib.Path]:
  """{id: path} of the files whose name fully matches `pattern` (group 1 = id); others are ignored."""
  regex = re.compile(pattern)
  out = {}
  for path in directory.iterdir():
    m = regex.fullmatch(path.name)
    if m and path.is_file():
      out[m.group(1)] = path
  return out


def _first_existing(candidates: Iterable[pathlib.Path]) -> pathlib.Path:
  candidates = list(candidates)
  for path in candidates:
    if path.is_file():
      return path
  raise DataError(f'missing RGB file {candidates[0]} (expected beside its depth map)')


def _list_middlebury_lu(root: pathlib.Path) -> list[Record]:
  name = 'middlebury_lu'
  mid_depth = _need_dir(root, 'middlebury_lu/Middlebury/Depth', name)
  mid_rgb = _need_dir(root, 'middlebury_lu/Middlebury/RGB', name)
  lu_depth = _need_dir(root, 'middlebury_lu/Lu/Depth', name)
  lu_rgb = _need_dir(root, 'middlebury_lu/Lu/RGB', name)
  records = []
  for scene, path in _match(mid_depth, r'(Middlebury_\d+)_output_depth\.png').items():
    if int(scene.split('_')[1]) in _EXCLUDED_NUMBERS:  # Also catches 'Middlebury_2' spellings.
      continue
    rgb = _first_existing([mid_rgb / f'{scene}_output_color.png'])
    records.append(Record(name, scene, str(path), str(rgb)))
  for scene, path in _match(lu_depth, r'(RGBD_\d+)_output_depth\.png').items():
    # The original release misspells 'output' in the Lu colour file names; accept both spellings.
    rgb = _first_existing([lu_rgb / f'{scene}_ouput_color.png', lu_rgb / f'{scene}_output_color.png'])
    records.append(Record(name, scene, str(path), str(rgb)))
  return sorted(records, key=lambda r: r.name)


def _list_middlebury_lu_split(root: pathlib.Path, split: str) -> list[Record]:
  held_out = split in ('validation', 'test')
  return [r for i, r in enumerate(_list_middlebury_lu(root)) if (i % 8 == 4) == held_out]


def _list_middlebury2005(root: pathlib.Path) -> list[Record]:
  name = 'middlebury2005'
  depth_dir = _need_dir(root, 'middlebury2005/depth', name)
  rgb_dir = _need_dir(root, 'middlebury2005/rgb', name)
  records = []
  for scene in BENCHMARK_SCENES:
    depth = depth_dir / f'{scene}.bmp'
    if not depth.is_file():
      raise DataError(f'missing depth file {depth} (expected the six benchmark scenes '
                      f"{', '.join(BENCHMARK_SCENES)} as middlebury2005/depth/SCENE.bmp)")
    rgb = _first_existing([rgb_dir / f'{scene}.png'])
    records.append(Record(name, scene, str(depth), str(rgb)))
  return records


def _list_rgbdd_dir(depth_dir: pathlib.Path, rgb_dir: pathlib.Path,
                    lr_dir: pathlib.Path | None = None) -> list[Record]:
  records = []
  for scene, path in _match(depth_dir, r'(.+)_HR_gt\.png').items():
    rgb = _first_existing([rgb_dir / f'{scene}_RGB.jpg', rgb_dir / f'{scene}_RGB.png'])
    lr = ''
    if lr_dir is not None:
      lr_path = lr_dir / f'{scene}_LR_fill_depth.png'
      if not lr_path.is_file():
        raise DataError(f'missing real LR depth {lr_path} (expected beside realscene/Depth/{path.name})')
      lr = str(lr_path)
    records.append(Record('rgbdd', scene, str(path), str(rgb), lr))
  return sorted(records, key=lambda r: r.name)


def _list_rgbdd(root: pathlib.Path, split: str) -> list[Record]:
  name = 'rgbdd'
  if split == 'realscene':
    real = 'rgbdd/realscene'
    if not (root / real).is_dir() and (root / 'rgbdd').is_dir():
      return []  # The split is optional (layout): absent means empty, which list_records reports.
    return _list_rgbdd_dir(_need_dir(root, f'{real}/Depth', name), _need_dir(root, f'{real}/RGB', name),
                           _need_dir(root, f'{real}/DepthLR', name))
  records = _list_rgbdd_dir(_need_dir(root, 'rgbdd/Depth', name), _need_dir(root, 'rgbdd/RGB', name))
  if split == 'full':  # ('all' is reserved by TFDS.)
    return records
  real_depth = root / 'rgbdd/realscene/Depth'
  real = set(_match(real_depth, r'(.+)_HR_gt\.png')) if real_depth.is_dir() else set()
  eligible = [r for r in records if r.name not in real]
  held_out = split in ('validation', 'test')
  return [r for i, r in enumerate(eligible) if (i % 10 == 9) == held_out]


def _list_nyu_v2(root: pathlib.Path, split: str) -> list[Record]:
  name = 'nyu_v2'
  # The full DKN layout lives in nyu_v2/; the shared data ships three samples in nyu_v2_samples/.
  base = 'nyu_v2' if (root / 'nyu_v2').is_dir() else 'nyu_v2_samples'
  if not (root / base).is_dir():
    raise DataError(f"data.dir {root}: no 'nyu_v2' or 'nyu_v2_samples' (expected the nyu_v2 layout: "
                    f'{DATASETS[name].layout})')
  depth_dir = _need_dir(root, f'{base}/Depth', name)
  rgb_dir = _need_dir(root, f'{base}/RGB', name)
  records = []
  for scene, path in _match(depth_dir, r'(.+)\.npy').items():
    if not scene.isdigit():
      raise DataError(f'nyu_v2 depth file {path}: expected a numeric id (DKN numbering, ID.npy)')
    idx = int(scene)
    if idx >= 1000:
      this = 'test'
    else:
      this = 'validation' if idx % 10 == 9 else 'train'
    if this == split:
      rgb = _first_existing([rgb_dir / f'{scene}.jpg', rgb_dir / f'{scene}.png'])
      records.append(Record(name, scene, str(path), str(rgb)))
  return sorted(records, key=lambda r: int(r.name))


def list_records(data_dir: str | os.PathLike, name: str, split: str,
                 allow_empty: bool = False) -> list[Record]:
  """Lists (name, depth path, RGB path) records of one split, sorted by name; nothing is decoded.

  Args:
    data_dir: the manual data root (already resolved, see `resolve_data_dir`).
    name: one of `MANUAL_DATASETS`.
    split: one of `DATASETS[name].splits`.
    allow_empty: return [] for an empty split instead of raising (TFDS builders skip such splits).

  Returns:
    The split's records (non-empty unless allow_empty).

  Raises:
    DataError: unknown dataset or split, missing directory or file, or an empty split.
  """
  info = dataset_info(name)
  if name not in MANUAL_DATASETS:
    raise DataError(f'dataset {name!r} has no files to list (it is generated: {info.layout})')
  if split not in info.splits:
    raise DataError(f"dataset {name!r} has no split {split!r} (splits: {', '.join(info.splits)})")
  root = pathlib.Path(data_dir)
  records = info.lister(root, split)
  if not records and not allow_empty:
    raise DataError(f'data.dir {root}: split {split!r} of {name} is empty (expected the {name} layout: '
                    f'{info.layout})')
  return records


# ------------------------------------------------------------------------------------------- loading


def _open_image(path: str) -> Image.Image:
  try:
    image = Image.open(path)
    image.load()  # Decode now, so that truncated files fail here with their name.
  except (OSError, ValueError, SyntaxError) as e:
    raise DataError(f'cannot read image {path}: {type(e).__name__}: {" ".join(str(e).split())}') from e
  return image


def read_depth(path: str, unit: str) -> np.ndarray:
  """Stored depth values of one file as float32 (H, W), in `unit`; the file type must fit the unit."""
  if path.endswith('.npy'):
    try:
      array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
      raise DataError(f'cannot read depth {path}: {type(e).__name__}: {" ".join(str(e).split())}') from e
    if array.ndim == 3 and array.shape[-1] == 1:
      array = array[..., 0]
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
      raise DataError(f'depth {path}: expected a 2-D numeric array, got {array.dtype} {array.shape}')
    return array.astype(np.float32)
  image = _open_image(path)
  if unit == 'disparity_0_255':
    allowed = ('L',)
  elif unit == 'mm':
    # Pillow opens 16-bit greyscale PNGs as 'I;16' (or as 32-bit 'I' on older versions).
    allowed = ('I;16', 'I;16L', 'I;16B', 'I')
  else:
    allowed = ('F', 'I;16', 'I;16L', 'I;16B', 'I', 'L')
  if image.mode not in allowed:
    raise DataError(f'depth {path}: image mode {image.mode!r} does not fit unit {unit!r} '
                    f"(expected mode {' or '.join(allowed)}, a single-channel depth map)")
  return np.asarray(image).astype(np.float32)


def read_rgb(path: str) -> np.ndarray:
  image = _open_image(path)
  if image.mode != 'RGB':
    image = image.convert('RGB')
  return np.asarray(image, dtype=np.uint8)


def load_example(record: Record) -> dict:
  """Decodes one record into the common format (see the module docstring).

  Raises:
    DataError: unreadable file, unexpected image type, or RGB/depth size mismatch.
  """
  info = dataset_info(record.dataset)
  depth = read_depth(record.depth_path, info.unit)
  rgb = read_rgb(record.rgb_path)
  if rgb.shape[:2] != depth.shape:
    raise DataError(f'RGB/depth size mismatch: depth {record.depth_path} has shape {depth.shape} but RGB '
                    f'{record.rgb_path} has shape {rgb.shape}')
  valid = np.isfinite(depth) & (depth > 0)
  # NaN or negative depths would poison bicubic resizing downstream; invalid pixels are stored as 0.
  depth = np.where(valid, depth, np.float32(0)).astype(np.float32)
  return {
      'depth': depth,
      'rgb': rgb,
      'valid': valid.astype(np.uint8),
      'norm': np.float32(info.norm),
      'name': record.name,
  }


def load_depth_lr(record: Record) -> np.ndarray:
  """The real low-resolution depth of an rgbdd 'realscene' record, float32 mm."""
  if not record.lr_path:
    raise DataError(f'{record.dataset} example {record.name!r} has no real LR depth (only rgbdd '
                    "split 'realscene' has one)")
  return read_depth(record.lr_path, dataset_info(record.dataset).unit)


def iter_examples(records: Iterable[Record]) -> Iterator[dict]:
  """Loads records in order, skipping depth maps without any valid pixel (counted in a warning)."""
  skipped, kept = [], 0
  for record in records:
    example = load_example(record)
    if not example['valid'].any():
      skipped.append(record.depth_path)
      continue
    kept += 1
    yield example
  if skipped and kept:  # none kept: the caller's error says so, and must be the only line
    logging.warning('skipped %d depth map(s) with no valid pixel: %s', len(skipped), ', '.join(skipped))


def load_split(data_dir: str | os.PathLike, name: str, split: str) -> list[dict]:
  """All examples of one split, decoded (these sets are small); DataError if none is usable."""
  examples = list(iter_examples(list_records(data_dir, name, split)))
  if not examples:
    raise DataError(f"data.dir {data_dir}: split {split!r} of {name} is empty (every depth map in it has "
                    'no valid pixel)')
  return examples
