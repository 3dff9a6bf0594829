r"""TFDS builders for the project's datasets, written as ArrayRecord (random access, read without TensorFlow).

One `GeneratorBasedBuilder` per dataset: middlebury_lu, middlebury2005, rgbdd, nyu_v2 (read from a manual
directory laid out like shared/data, through input_pipeline/readers.py, with the same splits) and
synthetic_rgbd (procedural, fixed counts, no manual directory). Every example has the common format:
depth float32 (H, W), rgb uint8 (H, W, 3), valid uint8 (H, W), norm float32, name text.

Build (from the repository root; --manual_dir is the data root that holds middlebury_lu/, rgbdd/, ...):

  python -m dsr_jax.input_pipeline.tfds_builders --dataset middlebury_lu --manual_dir /path/to/data \
      --data_dir ~/tensorflow_datasets

('--dataset all' builds every dataset, 'a+b' several). The TFDS CLI's `build` command works too, but
tfds 4.9.10's `tfds` entry point imports apache-beam and mlcroissant (not dependencies here) first.
Several builders live in this module, so they are registered through --imports:

  PYTHONPATH=. tfds build middlebury_lu --imports dsr_jax.input_pipeline.tfds_builders \
      --manual_dir /path/to/data --data_dir ~/tensorflow_datasets

Then train from the records with `--config.data.tfds_dir ~/tensorflow_datasets`. Files are ArrayRecord
unless `--file_format` says otherwise (only ArrayRecord is random-access readable by the pipeline).
"""
import os
import shutil
import sys
import tempfile

import numpy as np
import tensorflow_datasets as tfds

from dsr_jax import paths
from dsr_jax.errors import ArgumentParser
from dsr_jax.errors import UserError
from dsr_jax.input_pipeline import readers
from dsr_jax.input_pipeline import sources
from dsr_jax.input_pipeline import synthetic

_CITATION = """\
@inproceedings{sun2021learning,
  title={Learning Scene Structure Guidance via Cross-Task Knowledge Transfer for Single Depth
         Super-Resolution},
  author={Sun, Baoli and Ye, Xinchen and Li, Baopu and Li, Haojie and Wang, Zhihui and Xu, Rui},
  booktitle={CVPR},
  year={2021}
}"""

_MANUAL_INSTRUCTIONS = """\
Pass --manual_dir pointing at the data root (the layout of the project's shared/data, see its README).
Only the subdirectory of the dataset being built is read:
  middlebury_lu/Middlebury/Depth/Middlebury_XX_output_depth.png, .../RGB/Middlebury_XX_output_color.png
  middlebury_lu/Lu/Depth/RGBD_0X_output_depth.png, .../RGB/RGBD_0X_ouput_color.png
  middlebury2005/depth/{art,books,dolls,laundry,moebius,reindeer}.bmp, middlebury2005/rgb/SCENE.png
  rgbdd/Depth/ID_HR_gt.png (uint16 mm), rgbdd/RGB/ID_RGB.jpg, rgbdd/realscene/{Depth,DepthLR,RGB}/
  nyu_v2/Depth/ID.npy (float32 metres), nyu_v2/RGB/ID.jpg (or nyu_v2_samples/ with the same layout)
"""


def _features() -> tfds.features.FeaturesDict:
  zlib = tfds.features.Encoding.ZLIB
  return tfds.features.FeaturesDict({
      'depth': tfds.features.Tensor(shape=(None, None), dtype=np.float32, encoding=zlib),
      'rgb': tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8, encoding=zlib),
      'valid': tfds.features.Tensor(shape=(None, None), dtype=np.uint8, encoding=zlib),
      'norm': tfds.features.Scalar(dtype=np.float32),
      'name': tfds.features.Text(),
  })


class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared parts: features, ArrayRecord by default, examples in the common format."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  # Only used to find a URL-checksums file, which builders without downloads lack; tfds' lookup of it
  # for a builder inside a package needs the `importlib_resources` backport, not a dependency here.
  code_path = None

  def __init__(self, *, file_format=None, **kwargs):
    # ArrayRecord so that `tfds.data_source` can read the build without TensorFlow.
    super().__init__(file_format=file_format or tfds.core.FileFormat.ARRAY_RECORD, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    info = readers.DATASETS[self.name]
    # DatasetInfo directly (not dataset_info_from_configs): the latter reads metadata files from the
    # builder's package directory, which does not exist when this module runs as __main__.
    return tfds.core.DatasetInfo(
        builder=self,
        description=(f'{self.name}: depth in {info.unit}, depth / {info.norm:g} in [0, 1]; '
                     f"splits {', '.join(info.splits)}. {info.layout}."),
        features=_features(),
        supervised_keys=None,
        citation=_CITATION,
        # Keep the readers' (sorted) order, so a TFDS source and the manual source index alike.
        disable_shuffling=True,
    )

  def _generate_examples(self, records):
    for example in readers.iter_examples(records):
      yield example['name'], example


class _ManualBuilder(_Builder, skip_registration=True):
  """A real dataset read from `dl_manager.manual_dir` with readers.py (splits as readers defines them)."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_INSTRUCTIONS

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(records)
            for split, records in manual_splits(dl_manager.manual_dir, self.name).items()}


def manual_splits(root, name: str) -> dict:
  """{split: records} of the splits that have examples (nyu_v2 with only the test samples has no train
  split); a one-line DataError when none has."""
  splits = {}
  for split in readers.DATASETS[name].splits:
    records = readers.list_records(root, name, split, allow_empty=True)
    if records:
      splits[split] = records
  if not splits:
    # Re-list one split without allow_empty for its one-line DataError.
    readers.list_records(root, name, readers.DATASETS[name].splits[0])
  return splits


class SyntheticRgbd(_Builder):
  """Procedural scenes (input_pipeline/synthetic.py) at fixed counts and size, seeds as sources.py uses."""
  name = 'synthetic_rgbd'

  NUM_TRAIN = 256
  NUM_VAL = 8
  SIZE = (128, 128)

  def _split_generators(self, dl_manager):
    del dl_manager
    h, w = self.SIZE
    train = synthetic.SyntheticSource(self.NUM_TRAIN, h, w, sources.SYNTHETIC_TRAIN_SEED_OFFSET)
    val = synthetic.SyntheticSource(self.NUM_VAL, h, w, sources.SYNTHETIC_VAL_SEED_OFFSET)
    # 'test' repeats the validation scenes, matching sources.get_source for this dataset.
    return {'train': self._generate_synthetic(train), 'validation': self._generate_synthetic(val),
            'test': self._generate_synthetic(val)}

  def _generate_synthetic(self, source):
    for i in range(len(source)):
      example = source[i]
      yield example['name'], example


def _manual_builder(name: str):
  """The TFDS builder of one file-backed dataset, generated from its readers.DatasetSpec."""
  cls_name = ''.join(part.capitalize() for part in name.split('_'))
  return type(cls_name, (_ManualBuilder,), {'name': name, '__doc__': readers.DATASETS[name].description,
                                            '__module__': __name__})


BUILDERS = {name: _manual_builder(name) for name in readers.MANUAL_DATASETS}
BUILDERS[SyntheticRgbd.name] = SyntheticRgbd


def _prepare(cls, data_dir: str, config: dict):
  builder = cls(data_dir=data_dir)
  # Statistics would cost a TensorFlow pass over full-size images and nothing here reads them.
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS,
      compute_stats=tfds.download.ComputeStatsMode.SKIP, try_download_gcs=False, **config))
  return builder


def build(dataset: str, data_dir: str, manual_dir: str = '', overwrite: bool = False):
  """Prepares `dataset` as ArrayRecord under `data_dir` and returns its builder.

  Args:
    dataset: a key of BUILDERS.
    data_dir: TFDS data directory (what data.tfds_dir later points at).
    manual_dir: the manual data root ('' -> $DSR_DATA_DIR); unused for synthetic_rgbd.
    overwrite: rebuild even if this version was already prepared there. The previous build stays in
      place until the new one is complete, so a failed rebuild leaves it as it was.
  """
  if dataset not in BUILDERS:
    raise readers.unknown_dataset_error(dataset)
  cls = BUILDERS[dataset]
  data_dir = paths.check_dir_target(data_dir, '--data_dir', writable=True)
  config = {}
  if dataset != readers.SYNTHETIC:
    config['manual_dir'] = str(readers.resolve_data_dir(manual_dir))
    # Listed now, not only inside tfds: it asserts (a traceback) on an empty manual directory.
    manual_splits(config['manual_dir'], dataset)
  target = os.path.join(data_dir, cls.name, str(cls.VERSION))
  if overwrite and os.path.isdir(target):
    # tfds' own overwrite modes delete the old version before generating the new one (tfds 4.9.10
    # download_and_prepare), so bad manual data cost a good build: generate into a staging data_dir beside
    # it and swap the version directory in only once the build is complete.
    stage = tempfile.mkdtemp(prefix=f'.{cls.name}-rebuild-', dir=data_dir)
    try:
      _prepare(cls, stage, config)
      paths.replace_dir(os.path.join(stage, cls.name, str(cls.VERSION)), target)
    finally:
      shutil.rmtree(stage, ignore_errors=True)
    return cls(data_dir=data_dir)
  # A failed build must leave nothing behind: remember which of the directories tfds creates exist now.
  made = [data_dir, os.path.join(data_dir, 'downloads'), os.path.join(data_dir, cls.name)]
  existed = {d for d in made if os.path.exists(d)}
  try:
    return _prepare(cls, data_dir, config)
  except BaseException:
    for d in reversed(made):
      if d not in existed and os.path.exists(d):
        shutil.rmtree(d, ignore_errors=True)
    raise


def main(argv=None) -> int:
  parser = ArgumentParser(prog='python -m dsr_jax.input_pipeline.tfds_builders', description=__doc__.split('\n')[0])
  parser.add_argument('--dataset', required=True, help=f"one of {', '.join(BUILDERS)}, or 'all'")
  parser.add_argument('--manual_dir', default='', help='data root laid out like shared/data '
                      '(default: $DSR_DATA_DIR)')
  parser.add_argument('--data_dir', required=True, help='TFDS data directory to write into')
  parser.add_argument('--overwrite', action='store_true', help='rebuild an existing version')
  args = parser.parse_args(argv)
  names = list(BUILDERS) if args.dataset == 'all' else args.dataset.split('+')
  try:
    for name in names:
      builder = build(name, args.data_dir, args.manual_dir, args.overwrite)
      sizes = ', '.join(f'{k}={v.num_examples}' for k, v in builder.info.splits.items())
      print(f'{name}: {sizes} -> {builder.data_dir}')
  except UserError as e:
    # The readers name the training config's fields; here the user typed these flags.
    text = ' '.join(str(e).split())
    for field, flag in (('data.dir', '--manual_dir'), ('data.name', '--dataset')):
      text = text.replace(f'{field} ', f'{flag} ')
    print(f'error: {text}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
