"""grain random-access data sources for every dataset, all yielding the common example format.

`get_source(config.data, split)` picks, per dataset name (names joined by '+' are concatenated; 'name*K'
repeats that dataset K times in the train split):
  - 'synthetic_rgbd': procedural scenes (input_pipeline/synthetic.py), never read from disk;
  - data.tfds_dir set: the prepared TFDS ArrayRecords (`tfds.data_source`; numpy decoding, no TensorFlow);
  - otherwise: the manual directory (data.dir, else $DSR_DATA_DIR), decoded once into memory.

Mixing units in one source is fine: every example carries its own 'norm', and the pipeline normalises
depth / norm per example. Arrays served from memory or TFDS are read-only; transforms must not write
into them (a write would otherwise corrupt the cached copy for every later epoch).
"""
import bisect
from typing import Any, Sequence

import numpy as np

from dsr_jax.errors import ConfigError
from dsr_jax.errors import DataError
from dsr_jax.input_pipeline import readers
from dsr_jax.input_pipeline import synthetic

# A procedural scene is made whole in memory (RGB + depth in float32: 16 bytes a pixel, 1 GiB at this side).
MAX_SYNTHETIC_SIDE = 8192
# Offsets of the procedural seeds: train and validation scenes never share a seed.
SYNTHETIC_TRAIN_SEED_OFFSET = 0
SYNTHETIC_VAL_SEED_OFFSET = 1_000_000


def to_common(example: dict) -> dict:
  """Normalises dtypes of a decoded example (TFDS gives bytes names and 0-d arrays)."""
  name = example['name']
  if isinstance(name, (bytes, np.bytes_)):
    name = name.decode('utf-8')
  return {
      'depth': np.asarray(example['depth'], np.float32),
      'rgb': np.asarray(example['rgb'], np.uint8),
      'valid': np.asarray(example['valid'], np.uint8),
      'norm': np.float32(example['norm']),
      'name': str(name),
  }


class InMemorySource:
  """One split of a manual-directory dataset, decoded once into memory (these sets are small).

  Pickling (e.g. into grain worker processes) sends the file list, not the pixels; each process decodes
  its own copy, which is quicker than pickling a few hundred MB of arrays through a pipe.
  """

  def __init__(self, records: Sequence[readers.Record], description: str):
    self._records = list(records)
    self._description = description
    self._examples = self._load()

  def _load(self) -> list[dict]:
    examples = [to_common(e) for e in readers.iter_examples(self._records)]
    if not examples:
      raise DataError(f'{self._description}: empty (every depth map in it has no valid pixel)')
    for example in examples:
      for value in example.values():
        if isinstance(value, np.ndarray):
          value.flags.writeable = False
    return examples

  def __getstate__(self):
    return {'records': self._records, 'description': self._description}

  def __setstate__(self, state):
    self._records, self._description = state['records'], state['description']
    self._examples = self._load()

  def __len__(self) -> int:
    return len(self._examples)

  def __getitem__(self, index: int) -> dict:
    # A fresh dict per access, so that a transform replacing a key leaves the cache intact.
    return dict(self._examples[int(index)])

  def __repr__(self) -> str:
    return f'InMemorySource({self._description}, n={len(self)})'


class TfdsSource:
  """Wraps a `tfds.data_source` split so that it yields the common format."""

  def __init__(self, source: Any, description: str):
    self._source = source
    self._description = description

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict:
    return to_common(self._source[int(index)])

  def __repr__(self) -> str:
    return f'TfdsSource({self._description}, n={len(self)})'


class ConcatSource:
  """Several sources back to back (index i of the whole maps into exactly one part)."""

  def __init__(self, parts: Sequence[Any]):
    self._parts = list(parts)
    self._ends = np.cumsum([len(p) for p in self._parts]).tolist()

  def __len__(self) -> int:
    return self._ends[-1] if self._ends else 0

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if index < 0:
      index += len(self)
    if not 0 <= index < len(self):
      raise IndexError(f'ConcatSource index {index} out of range [0, {len(self)})')
    part = bisect.bisect_right(self._ends, index)
    start = self._ends[part - 1] if part else 0
    return self._parts[part][index - start]

  def __repr__(self) -> str:
    return f"ConcatSource({' + '.join(repr(p) for p in self._parts)})"


def _synthetic_source(data_config, split: str):
  cfg = data_config.synthetic
  size = cfg.size
  positive = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1
  if positive(size):
    height = width = size
  elif isinstance(size, (tuple, list)) and len(size) == 2 and all(map(positive, size)):
    height, width = size
  else:
    raise ConfigError(f'data.synthetic.size={size!r}: expected a positive int or (height, width)')
  if max(height, width) > MAX_SYNTHETIC_SIDE:
    raise ConfigError(f'data.synthetic.size={size!r}: expected sides up to {MAX_SYNTHETIC_SIDE} (a scene is made '
                      'whole in memory, 16 bytes a pixel)')
  if split not in ('train', 'validation', 'test'):
    raise DataError(f"dataset 'synthetic_rgbd' has no split {split!r} (splits: train, validation, test)")
  field = 'num_train' if split == 'train' else 'num_val'
  count = cfg[field]
  if not positive(count):
    raise ConfigError(f'data.synthetic.{field}={count!r}: expected a positive integer')
  offset = SYNTHETIC_TRAIN_SEED_OFFSET if split == 'train' else SYNTHETIC_VAL_SEED_OFFSET
  return synthetic.SyntheticSource(count, height, width, offset)


def _tfds_source(name: str, split: str, tfds_dir: str) -> TfdsSource:
  # TensorFlow's packages (seconds to import) only for data.tfds_dir.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (see above)
  info = readers.dataset_info(name)
  if split not in info.splits:
    raise DataError(f"dataset {name!r} has no split {split!r} (splits: {', '.join(info.splits)})")
  try:
    # download=False: a missing build is a user error, never a reason to fetch anything.
    source = tfds.data_source(name, split=split, data_dir=tfds_dir, download=False, try_gcs=False)
  except Exception as e:  # pylint: disable=broad-except
    # tfds reports a missing or partial build through several exception types; all mean the same here.
    # Only the first line: tfds appends the list of every registered dataset to 'not found'.
    detail = (str(e).strip().splitlines() or [''])[0][:200]
    raise DataError(
        f"data.tfds_dir {tfds_dir}: cannot open TFDS dataset {name!r} split {split!r} ({type(e).__name__}: "
        f'{detail}); build it with: python -m dsr_jax.input_pipeline.tfds_builders --dataset {name} '
        f'--manual_dir DATA_DIR --data_dir {tfds_dir}') from e
  if len(source) == 0:
    raise DataError(f'data.tfds_dir {tfds_dir}: TFDS split {split!r} of {name} is empty')
  return TfdsSource(source, f'{name}:{split} from {tfds_dir}')


def _single_source(name: str, data_config, split: str):
  if name == readers.SYNTHETIC:
    return _synthetic_source(data_config, split)
  tfds_dir = str(getattr(data_config, 'tfds_dir', '') or '')
  if tfds_dir:
    return _tfds_source(name, split, tfds_dir)
  data_dir = readers.resolve_data_dir(getattr(data_config, 'dir', ''))
  return InMemorySource(readers.list_records(data_dir, name, split),
                        f'data.dir {data_dir}: split {split!r} of {name}')


def get_source(data_config, split: str):
  """Random-access source (`len`, `[i]`) of one split, in the common example format.

  Args:
    data_config: the `data` section of the config (name, dir, tfds_dir, synthetic.*).
    split: 'train', 'validation', 'test' or a dataset-specific split (see readers.DATASETS).

  Returns:
    A grain-compatible random-access data source; 'a+b' names give their concatenation in that order.

  Raises:
    DataError: unknown dataset or split, missing or bad data.
  """
  mix = readers.parse_mix(data_config.name)  # All names first: a typo in the second should not wait.
  parts = []
  for name, repeats in mix:
    source = _single_source(name, data_config, split)
    # Repeats weight the training mix only; evaluation sees every image once.
    parts += [source] * (repeats if split == 'train' else 1)
  return parts[0] if len(parts) == 1 else ConcatSource(parts)
