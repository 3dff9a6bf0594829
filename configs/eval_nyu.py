"""Eval mode on NYU Depth v2 (RMSE in cm, 6-pixel border crop; protocol in dsr_jax/evaluate.py).

  python -m dsr_jax.main --config configs/eval_nyu.py --workdir W \
      --config.eval.checkpoint_dir=C --config.data.dir=DATA
"""
from dsr_jax.configs import default


def get_config(arg=None):
  c = default.get_config(arg)
  c.mode = 'eval'
  c.data.name = 'nyu_v2'
  c.eval.dataset = 'nyu_v2'
  c.model.name = 'dsrnet'
  c.model.scale = 0  # 0 = the checkpoint's scale; set it for the bicubic baseline.
  return c
