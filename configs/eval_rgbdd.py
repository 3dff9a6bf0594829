"""Eval mode on RGB-D-D (RMSE in cm, no border crop; protocol in dsr_jax/evaluate.py).

  python -m dsr_jax.main --config configs/eval_rgbdd.py --workdir W \
      --config.eval.checkpoint_dir=C --config.data.dir=DATA
Split 'test' is the held-out part of the 405 pairs (see input_pipeline/readers.py).
"""
from dsr_jax.configs import default


def get_config(arg=None):
  c = default.get_config(arg)
  c.mode = 'eval'
  c.data.name = 'rgbdd'
  c.eval.dataset = 'rgbdd'
  c.model.name = 'dsrnet'
  c.model.scale = 0  # 0 = the checkpoint's scale; set it for the bicubic baseline.
  return c
