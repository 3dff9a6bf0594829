"""A paper-width network (C=64, F=256, T=4) on one real dataset at one scale: `configs/real.py:<dataset>,x<s>`.

  python -m dsr_jax.main --config configs/real.py:nyu_v2,x8 --workdir W --config.data.dir=DATA

Datasets: middlebury_lu (Middlebury-30 minus the benchmark scenes, plus Lu; evaluate on the benchmark with
configs/eval.py:middlebury2005), nyu_v2 (metres, DKN layout: nyu_v2/Depth/*.npy + RGB/*.jpg), rgbdd
(time-of-flight depth, mm). Scales x2, x4, x8, x16; HR crops 128 up to x4, 256 above. Default: middlebury_lu,x4.
"""
from dsr_jax.configs import common
from dsr_jax.input_pipeline import readers

# The file-backed datasets with a training split (readers.DATASETS): a new DatasetSpec appears here too.
DATASETS = tuple(n for n in readers.MANUAL_DATASETS if 'train' in readers.DATASETS[n].splits)
SCALES = (2, 4, 8, 16)
ARGS = tuple(f'{d},x{s}' for d in DATASETS for s in SCALES)  # every variant (tests load each)


def get_config(arg=None):
  name, scale = 'middlebury_lu', 4
  for token in str(arg or '').split(','):
    token = token.strip()
    if token in DATASETS:
      name = token
    elif token in {f'x{s}' for s in SCALES}:
      scale = int(token[1:])
    elif token:
      raise ValueError(f'configs/real.py: unknown argument {token!r} (expected one of {"|".join(DATASETS)} '
                       f'and x2|x4|x8|x16, e.g. real.py:nyu_v2,x8)')
  return common.real_data(name, scale, crop=128 if scale <= 4 else 256)
