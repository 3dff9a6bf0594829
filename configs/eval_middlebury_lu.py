"""Eval mode on the Middlebury-30 / Lu test split (RMSE on 0-255; protocol in dsr_jax/evaluate.py).

  python -m dsr_jax.main --config configs/eval_middlebury_lu.py --workdir W \
      --config.eval.checkpoint_dir=C --config.data.dir=DATA
"""
from dsr_jax.configs import default


def get_config(arg=None):
  c = default.get_config(arg)
  c.mode = 'eval'
  c.data.name = 'middlebury_lu'
  c.eval.dataset = 'middlebury_lu'
  c.model.name = 'dsrnet'
  c.model.scale = 0  # 0 = the checkpoint's scale; set it for the bicubic baseline.
  return c
