"""grain pipelines: shuffled random paired crops for training, whole padded images for evaluation.

Training (`train_dataset`):
  MapDataset.source(src) -> SkipAllInvalid -> seed(config.seed) -> EpochShuffle -> repeat
  -> PairedRandomCrop -> [PairedFlipRotate] -> Normalize (+ fill holes) -> [MakeLR] -> ToTrainExample
  -> [process_index::process_count] -> batch(train.batch_size // process_count) -> to_iter_dataset
  -> [mp_prefetch(data.workers)]
Every random op comes before the process slice and the batch is a MapDataset op, so the batches are a
pure function of (seed, step): the same whatever the worker count, and each process gets its own
disjoint share of every global batch. The iterator state (grain `get_state` / `set_state`, or
`grain.checkpoint.CheckpointSave/CheckpointRestore` inside an Orbax Composite) is a position; a restored
iterator yields exactly the next batch.

With data.lr_on_device the host makes no LR (and adds no noise): the train step must apply
`degradation.downsample(hr_depth, s, data.degrade, xp=jnp)` (+ `add_noise` with a JAX key) itself.

Evaluation (`eval_dataset`): no random op; batches of data.eval_batch equal-sized images padded with
mask = 0 so every image counts exactly once.
"""
import dataclasses
import hashlib
import os
import threading
from typing import Any, Sequence

from absl import logging
import grain
import numpy as np

from dsr_jax.errors import ConfigError, DataError
from dsr_jax.input_pipeline import degradation
from dsr_jax.input_pipeline import readers
from dsr_jax.input_pipeline import sources
from dsr_jax.input_pipeline import transforms

SCALES = degradation.SCALES
TRAIN_KEYS = ('hr_depth', 'lr_depth', 'rgb', 'valid')


def check_scale(config) -> int:
  scale = config.model.scale
  if isinstance(scale, bool) or scale not in SCALES:
    raise ConfigError(f'model.scale: expected one of {SCALES}, got {scale!r}')
  return int(scale)


def check_config(config) -> int:
  """What every dataset of this module reads: model.scale and the LR's fields (data.degrade, data.random.*,
  data.noise_sigma with them, data.val_degradations). Returns the scale. (config_lib checks every field's type
  and range; the data fields' meaning is checked here, where the datasets are built.)"""
  scale = check_scale(config)
  degradation.check_config(config.data)
  return scale


def check_train_config(config, process_count: int = 1) -> int:
  """check_config's fields and the training set's: data.crop, data.lr_on_device and train.batch_size over the
  processes. Returns the scale."""
  scale = check_config(config)
  d = config.data
  if isinstance(d.crop, bool) or not isinstance(d.crop, int) or d.crop <= 0 or d.crop % scale:
    raise ConfigError(f'data.crop: expected a positive multiple of model.scale={scale}, got {d.crop!r}')
  bs = config.train.batch_size
  if bs % process_count:
    raise ConfigError(f'train.batch_size: expected a multiple of the process count {process_count}, got {bs}')
  if d.lr_on_device and (d.noise_sigma > 0 or d.degrade == 'random'):
    raise ConfigError('data.noise_sigma > 0 and data.degrade=\'random\' need data.lr_on_device=False (they '
                      'are made on the host)')
  return scale


def check_one_convention(name: str) -> None:
  """data.name for cross-task training (train.check_config): datasets of one depth convention.

  docs/method.md, rule 6: DENet maps RGB to depth; disparity (near = large) and metric depth (near = small) in
  one training mix would ask it for two contradictory mappings.
  """
  try:
    mix = readers.parse_mix(name)
  except DataError:
    return  # the source reports a malformed name with its own message
  found = {}
  for n, _ in mix:
    found.setdefault(readers.DATASETS[n].convention, []).append(n)
  if len(found) > 1:
    kinds = '; '.join(f'{k}: {", ".join(v)}' for k, v in sorted(found.items()))
    raise ConfigError(f'data.name={name!r}: cross-task training would teach DENet two depth conventions '
                      f'({kinds}); expected datasets of one convention (or model.use_denet=False)')


class SkipAllInvalid(grain.MapDataset):
  """Replaces an example whose depth map is entirely invalid by the next usable one (cyclically).

  Sits right after the source, so the replacement is a fixed function of the source index: deterministic
  under any shuffle, worker count or restore. Skipped source indices are logged once and counted in
  `skipped` (a per-process set: with grain workers the count lives in the worker processes).
  """

  def __init__(self, parent: grain.MapDataset, *, what: str = 'source'):
    super().__init__(parent)
    self._what = what
    self._skipped = set()
    self._good = set()  # indices already checked: the check reads the whole map, do it once
    self._lock = threading.Lock()

  def __len__(self):
    return len(self._parent)

  @property
  def skipped(self) -> frozenset:
    return frozenset(self._skipped)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    n = len(self._parent)
    for k in range(n):
      i = (index + k) % n
      ex = self._parent[i]
      if i in self._good:
        return ex
      if transforms.has_valid_depth(ex):
        self._good.add(i)
        return ex
      with self._lock:
        if i not in self._skipped:
          self._skipped.add(i)
          logging.warning('%s example %d (%s): depth entirely invalid; skipped', self._what, i,
                          transforms.example_name(ex))
    raise DataError(f'{self._what}: every one of its {n} examples has an entirely invalid depth map')

  def __str__(self):
    return f'SkipAllInvalid({self._what})'

  # grain pickles datasets into spawned workers; locks do not pickle.
  def __getstate__(self):
    state = self.__dict__.copy()
    del state['_lock']
    state['_good'] = set()
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()


class EpochShuffle(grain.MapDataset):
  """Global shuffle, reshuffled every epoch (index // len); a drop-in for `MapDataset.shuffle`.

  grain's `shuffle` maps every index through `index_shuffle`, whose per-call cost on small datasets
  capped the pipeline (BENCHMARKS.md). Here each epoch's permutation is drawn once,
  np.random.default_rng([seed, epoch]), and looked up; it is still a pure function of (seed, index), so
  restores and worker slices are exact.
  """

  def __init__(self, parent: grain.MapDataset, *, seed: int):
    super().__init__(parent)
    self._seed = int(seed)
    self._perms = {}
    self._lock = threading.Lock()

  def __len__(self):
    return len(self._parent)

  def _perm(self, epoch: int) -> np.ndarray:
    perm = self._perms.get(epoch)
    if perm is None:
      perm = np.random.default_rng([self._seed, epoch]).permutation(len(self._parent))
      with self._lock:
        if len(self._perms) >= 4:  # Reader threads are at most an epoch boundary apart.
          self._perms.pop(min(self._perms))
        self._perms[epoch] = perm
    return perm

  def __getstate__(self):
    state = self.__dict__.copy()
    del state['_lock']
    state['_perms'] = {}
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    epoch, i = divmod(int(index), len(self._parent))
    return self._parent[epoch * len(self._parent) + int(self._perm(epoch)[i])]

  def __str__(self):
    return f'EpochShuffle(seed={self._seed})'


def _find(ds, cls):
  """Depth-first search of a grain dataset graph for an instance of `cls`."""
  stack, seen = [ds], set()
  while stack:
    d = stack.pop()
    if id(d) in seen:
      continue
    seen.add(id(d))
    if isinstance(d, cls):
      return d
    stack.extend(getattr(d, 'parents', ()))
  return None


def skipped_examples(ds) -> frozenset:
  """Source indices skipped as all-invalid so far by pipeline `ds` (in this process)."""
  node = _find(ds, SkipAllInvalid)
  return node.skipped if node is not None else frozenset()


def _derived_seed(seed: int, what: str) -> int:
  """A 32-bit seed for one pipeline stage, independent of the others."""
  return int(np.random.SeedSequence([int(seed), *what.encode()]).generate_state(1)[0])


def _read_options():
  # Batches of 256x256 crops are ~20 MB; grain's default 500-element buffer would hold ~10 GB. A few
  # threads overlap the numpy work (its kernels release the GIL) without oversubscribing small machines.
  n = os.cpu_count() or 1
  return grain.ReadOptions(num_threads=min(max(n, 2), 8), prefetch_buffer_size=min(max(n, 2), 8) * 2)


def train_dataset(config, source=None, *, process_index=None, process_count=None) -> grain.IterDataset:
  """Infinite iterator dataset of per-process training batches.

  Args:
    config: full config (uses seed, data.*, model.scale, train.batch_size).
    source: random-access source in the common format; None -> sources.get_source(config.data, 'train').
    process_index: this process's shard (default jax.process_index()).
    process_count: number of processes (default jax.process_count()).

  Returns:
    grain.IterDataset of dicts of numpy arrays with a leading batch axis of
    train.batch_size // process_count: 'hr_depth' (B, crop, crop, 1), 'lr_depth' (B, crop/s, crop/s, 1)
    (absent when data.lr_on_device), 'rgb' (B, crop, crop, 3), 'valid' (B, crop, crop, 1); all float32.
  """
  if process_index is None or process_count is None:
    # jax only here: grain's worker processes import this module, and need no jax.
    import jax  # pylint: disable=g-import-not-at-top  (see above)
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ConfigError(f'process_index {process_index} out of range for process_count {process_count}')
  d = config.data
  scale = check_train_config(config, process_count)
  if source is None:
    source = sources.get_source(d, 'train')
  if len(source) == 0:
    raise DataError(f'data.name={d.name!r}: the train split has no examples')

  ds = SkipAllInvalid(grain.MapDataset.source(source), what=f'{d.name} train')
  ds = ds.seed(config.seed)
  ds = EpochShuffle(ds, seed=_derived_seed(config.seed, 'shuffle')).repeat()
  ds = ds.random_map(transforms.PairedRandomCrop(
      d.crop, min_valid=float(d.min_valid), max_tries=int(d.crop_tries),
      min_edge=float(d.min_edge), edge_step=float(d.edge_step)))
  if d.augment:
    ds = ds.random_map(transforms.PairedFlipRotate())
  ds = ds.map(transforms.Normalize())
  if not d.lr_on_device:
    random = degradation.Random.from_config(d.random) if d.degrade == 'random' else None
    ds = ds.random_map(transforms.MakeLR(scale, d.degrade, float(d.noise_sigma), random))
  ds = ds.map(transforms.ToTrainExample())
  ds = ds[process_index::process_count]
  ds = ds.batch(config.train.batch_size // process_count, drop_remainder=True)
  ds = ds.to_iter_dataset(_read_options())
  if d.workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=d.workers))
  return ds


# ------------------------------------------------------------------------------------------ evaluation


@dataclasses.dataclass(frozen=True)
class _EvalBatch(grain.transforms.Map):
  """Builds one padded eval batch from a tuple of source indices (-1 = padding)."""
  source: Any
  scale: int
  method: str
  noise_sigma: float
  seed: int

  def example(self, index):
    ex = self.source[index]
    transforms.check_example(ex)
    ex = transforms.Normalize().map(ex)
    name = ex.get('degradation', degradation.PROTOCOL)
    fixed = None if name == degradation.PROTOCOL else degradation.eval_degradation(name, self.scale)
    # Noise is seeded per image, so every evaluation sees the same LR. A named degradation's seed is fixed
    # (not config.seed): validation of runs with different seeds, and every robustness table, score one LR.
    rng = np.random.default_rng([self.seed if fixed is None else degradation.EVAL_SEED, index])
    lr = transforms.make_lr(ex['depth'], self.scale, self.method, self.noise_sigma / float(ex['norm']), rng,
                            fixed=fixed)
    real = transforms.has_valid_depth({'depth': ex['depth'], 'valid': ex['valid']})
    if not real:
      logging.warning('eval example %d (%s): depth entirely invalid; mask 0 (not counted)', index,
                      transforms.example_name(ex))
    return {
        'hr_depth': ex['depth'][..., None],
        'lr_depth': lr[..., None],
        'rgb': ex['rgb'],
        'valid': ex['valid'][..., None],
        'norm': np.float32(ex['norm']),
        'name': transforms.example_name(ex),
        'mask': np.float32(real),
    }

  def map(self, indices):
    exs = [self.example(i) for i in indices if i >= 0]
    pad = len(indices) - len(exs)
    for _ in range(pad):
      exs.append({k: (np.zeros_like(v) if k != 'name' else '') for k, v in exs[0].items()})
    batch = {k: np.stack([e[k] for e in exs]) for k in exs[0] if k != 'name'}
    batch['name'] = np.array([e['name'] for e in exs], dtype=object)
    return batch


class _BoundedReads(grain.MapDataset):
  """Pass-through whose iteration uses a small read-ahead buffer.

  `for b in map_dataset` goes through `to_iter_dataset()` with grain's default ReadOptions (16 threads,
  500 elements ahead): for whole-image eval batches that would decode most of an eval set into memory.
  """

  def __len__(self):
    return len(self._parent)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[index]

  def to_iter_dataset(self, read_options=None, **kwargs):
    return super().to_iter_dataset(read_options or _read_options(), **kwargs)

  def __str__(self):
    return '_BoundedReads'


class _PerDegradation:
  """Every example of `source` once per named degradation, its name suffixed '@<degradation>' (but for the
  protocol's own LR), so that one evaluation scores a network on several kinds of LR."""

  def __init__(self, source, names: Sequence[str]):
    self._source, self._names = source, tuple(names)

  def __len__(self):
    return len(self._source) * len(self._names)

  def __getitem__(self, index):
    i, k = divmod(int(index), len(self._names))
    ex, name = dict(self._source[i]), self._names[k]
    ex['degradation'] = name
    if name != degradation.PROTOCOL:
      ex['name'] = f'{transforms.example_name(ex)}@{name}'
    return ex


def _eval_groups(source, batch_size) -> list[tuple[int, ...]]:
  """Index tuples, one per batch: equal-sized images together, -1-padded to batch_size."""
  if batch_size == 1:
    return [(i,) for i in range(len(source))]
  groups: dict[tuple[int, int], list[int]] = {}
  for i in range(len(source)):  # Eval sets are small: one read per image to learn its size.
    groups.setdefault(tuple(np.shape(source[i]['depth'])), []).append(i)
  out = []
  for idx in groups.values():
    for j in range(0, len(idx), batch_size):
      chunk = idx[j:j + batch_size]
      out.append(tuple(chunk) + (-1,) * (batch_size - len(chunk)))
  return out


def eval_dataset(config, split: str = 'validation', source=None,
                 degradations: Sequence[str] = ()) -> grain.MapDataset:
  """Whole-image evaluation batches.

  Args:
    config: full config (data.*, model.scale, seed).
    split: source split (used only when `source` is None).
    source: random-access source in the common format; None -> sources.get_source(config.data, split).
    degradations: names of degradation.EVAL_CHOICES; each image once per name, at a fixed seed ('@<name>'
      suffixed). Empty: the protocol's LR (data.degrade, or bicubic when that is 'random', with
      data.noise_sigma).

  Returns:
    grain.MapDataset (finite, `len` = number of batches) of dicts: 'hr_depth' (B, H, W, 1) normalised
    (holes filled, see transforms), 'lr_depth' (B, ceil(H/s), ceil(W/s), 1), 'rgb' (B, H, W, 3) float32
    [0, 1], 'valid' (B, H, W, 1), 'norm' (B,), 'name' (B,) object array of str, 'mask' (B,) float32
    (1 = a real image with valid depth, 0 = padding or an all-invalid image). Images in one batch share
    (H, W); B = data.eval_batch. Every image appears exactly once.
  """
  d = config.data
  scale = check_config(config)
  if source is None:
    source = sources.get_source(d, split)
  if len(source) == 0:
    raise DataError(f'data.name={d.name!r}: split {split!r} has no examples')
  if tuple(degradations) not in ((), (degradation.PROTOCOL,)):
    source = _PerDegradation(source, degradations)
  groups = _eval_groups(source, int(d.eval_batch))
  method = 'bicubic' if d.degrade == 'random' else d.degrade
  return _BoundedReads(grain.MapDataset.source(groups).map(
      _EvalBatch(source, scale, method, float(d.noise_sigma), int(config.seed))))


def batch_sha256(batch: dict, keys: Sequence[str] | None = None) -> str:
  """sha256 of a batch's arrays in sorted key order (bytes, shapes and dtypes)."""
  h = hashlib.sha256()
  for k in sorted(keys or batch):
    a = np.ascontiguousarray(batch[k])
    h.update(k.encode())
    h.update(str((a.shape, a.dtype.str)).encode())
    h.update(a.tobytes())
  return h.hexdigest()
