"""Writes tests/data/v1_reference.npz: the final parameters of a short cross-task run of configs/test.py.

Made once at commit c16cdce (the first version: frozen teacher, raw affinity, no side supervision,
undetached uncertainty), before Revision 2 existed, with

  XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu python tests/data/make_v1_reference.py

tests/test_v1_preset.py trains the same run with configs/ablation_v1.py's settings and checks that every
parameter is bit-identical. Same compile settings as the test (most XLA optimisations off, 8 CPU devices).
The role picker is replaced by a fixed sequence so that both student phases run.
"""
import os
import sys
import tempfile

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from dsr_jax.configs import test as test_config  # noqa: E402
from dsr_jax import roles  # noqa: E402
from dsr_jax import train  # noqa: E402

TEACHERS = (roles.DENET, roles.DSR, roles.DENET)


def flat(tree):
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def main():
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_disable_most_optimizations', True)
  cfg = test_config.get_config()
  it = iter(TEACHERS)
  roles.pick_teacher = lambda *a, **k: next(it)
  with tempfile.TemporaryDirectory() as wd:
    train.train_and_evaluate(cfg, wd)
    params = ocp.StandardCheckpointer().restore(os.path.join(wd, 'checkpoints', '8', 'params'))
  out = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'v1_reference.npz')
  np.savez_compressed(out, **flat(params))
  print(out, len(flat(params)))


if __name__ == '__main__':
  main()
