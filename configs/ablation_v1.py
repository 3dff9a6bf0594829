"""The first version of cross-task transfer (before the rules of docs/method.md), kept as an ablation.

Algorithm 1 read literally: the lower-error network is frozen outright (parameters, Adam moments and count),
the side heads get no supervision and no bicubic residual, the affinity is the softmax of raw dot products,
and SPNet's uncertainty branch passes its gradient into the depth outputs. With these settings training
reproduces the first version bit for bit (tests/test_v1_preset.py).

  python -m dsr_jax.main --config configs/ablation_v1.py --workdir runs/v1
"""
from dsr_jax.configs import default


def apply(c):
  """Sets the first version's choices on any config (the study applies it to its CPU preset)."""
  c.train.teacher_update = 'frozen'
  c.loss.affinity = 'raw'
  c.loss.side_weight = 0.0
  c.loss.detach_uncertainty = False
  c.model.side_residual = False
  c.model.teacher_input = 'rgb'
  return c


def get_config(arg=None):
  return apply(default.get_config(arg))
