"""Ablations of cross-task transfer on the default data and steps: `configs/ablation.py:<variant>`.

  wo_ct        "DSRNet w/o CT": DSRNet alone on L_DSR (no DENet, no SPNet)
  no_affinity  cross-task without affinity-space distillation (output-space L1 only)
  no_spnet     cross-task without SPNet (no structure loss)
  fixed_roles  fixed roles: DENet always teaches (no role exchange)

The first version of the method (before the rules of docs/method.md) is configs/ablation_v1.py.
"""
from dsr_jax.configs import default

ARGS = ('wo_ct', 'no_affinity', 'no_spnet', 'fixed_roles')


def get_config(arg=None):
  if arg not in ARGS:
    raise ValueError(f'configs/ablation.py: expected an argument, one of {"|".join(ARGS)} '
                     f'(e.g. ablation.py:wo_ct), got {arg!r}')
  c = default.get_config()
  if arg == 'wo_ct':
    c.model.use_denet = False
    c.model.use_spnet = False
  elif arg == 'no_affinity':
    c.loss.use_affinity = False
  elif arg == 'no_spnet':
    c.model.use_spnet = False
  else:
    c.train.roles = 'fixed_denet'
  return c
