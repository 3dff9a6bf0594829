"""Eval mode on the Middlebury 2005 benchmark (the paper's Table 1; protocol in dsr_jax/evaluate.py).

  python -m dsr_jax.main --config configs/eval_middlebury2005.py --workdir W \
      --config.eval.checkpoint_dir=C --config.data.dir=DATA
Bicubic baseline: --config.model.name=bicubic --config.model.scale=4 (no checkpoint).
"""
from dsr_jax.configs import default


def get_config(arg=None):
  c = default.get_config(arg)
  c.mode = 'eval'
  c.data.name = 'middlebury2005'
  c.eval.dataset = 'middlebury2005'
  c.model.name = 'dsrnet'
  c.model.scale = 0  # 0 = the checkpoint's scale; set it for the bicubic baseline.
  return c
