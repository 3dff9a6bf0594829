"""Eval mode on one dataset's test split: `configs/eval.py:<dataset>` (protocols: input_pipeline/readers.py).

  python -m dsr_jax.main --config configs/eval.py:middlebury2005 --workdir W \
      --config.eval.checkpoint_dir=C --config.data.dir=DATA
  bicubic baseline: --config.eval.baseline=bicubic --config.model.scale=4 (no checkpoint)

  middlebury2005  the paper's Table 1 benchmark (MAD on 0-255, predictions rounded to uint8)
  middlebury_lu   the Middlebury-30 / Lu test split (RMSE on 0-255, 6-pixel border crop)
  nyu_v2          NYU Depth v2 (RMSE in cm, 6-pixel border crop)
  rgbdd           RGB-D-D (RMSE in cm, no border crop); the held-out part of the 405 pairs
"""
from dsr_jax.configs import default
from dsr_jax.input_pipeline import readers

ARGS = readers.MANUAL_DATASETS  # every file-backed DatasetSpec (its protocol comes with it)


def get_config(arg=None):
  if arg not in ARGS:
    raise ValueError(f'configs/eval.py: expected an argument, one of {"|".join(ARGS)} '
                     f'(e.g. eval.py:middlebury2005), got {arg!r}')
  c = default.get_config()
  c.mode = 'eval'
  c.data.name = arg
  c.eval.dataset = arg
  c.model.scale = 0  # 0 = the checkpoint's scale; set it for the bicubic baseline.
  return c
