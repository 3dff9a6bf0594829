"""configs/ablation_v1.py reproduces the first version of cross-task training bit for bit.

tests/data/v1_reference.npz holds the final parameters of the same short run made by the code before
Revision 2 (tests/data/make_v1_reference.py says how, and at which commit): every one of its 97 arrays,
DSRNet, DENet and SPNet, must come out identical (to float rounding on another kind of CPU, see the test).
"""
import os

import jax
import numpy as np
import pytest

from dsr_jax.configs import ablation_v1
from dsr_jax.configs import test as test_config
from dsr_jax import roles
from dsr_jax import train

pytestmark = pytest.mark.usefixtures('fast_xla')

REFERENCE = os.path.join(os.path.dirname(__file__), 'data', 'v1_reference.npz')
TEACHERS = (roles.DENET, roles.DSR, roles.DENET)  # as in make_v1_reference.py: both student phases run


def test_v1_preset_is_bit_identical_to_the_first_version(tmp_path):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  cfg = ablation_v1.apply(test_config.get_config())
  it = iter(TEACHERS)
  cfg.train.grad_diagnostics = False  # params only; diagnostics would add compilations, not checks
  train.train_and_evaluate(cfg, str(tmp_path), role_rule=lambda *_: next(it))
  params = ocp.StandardCheckpointer().restore(str(tmp_path / 'checkpoints' / '8' / 'params'))
  got = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  with np.load(REFERENCE) as ref:
    want = {k: ref[k] for k in ref.files}
  assert sorted(got) == sorted(want)
  # Bit-identical on the CPU that made the reference. XLA:CPU picks its kernels by the CPU's instruction set
  # (AVX-512 or not), which reorders float sums: on another CPU the same program differs by float32
  # rounding (4.7e-7 of an array's largest value seen on an AMD EPYC without AVX-512). A change of the
  # method would differ by far more: Adam moves every parameter by about lr = 1e-3 per step.
  far = {k: float(np.max(np.abs(got[k] - want[k]))) / max(float(np.max(np.abs(want[k]))), 1e-12) for k in want}
  differ = [k for k in want if far[k] > 1e-5]
  assert not differ, f'{len(differ)} of {len(want)} arrays differ beyond float rounding, e.g. {differ[:3]}'
  # The run really trained: the reference is not its own initialisation.
  cfg0 = ablation_v1.apply(test_config.get_config())
  from dsr_jax import models as models_lib, state as state_lib  # pylint: disable=g-import-not-at-top
  init = state_lib.init_params(models_lib.build(cfg0.model), jax.random.key(cfg0.seed), cfg0.model.scale)
  init = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(init)[0]}
  assert sum(not np.array_equal(init[k], want[k]) for k in want) > len(want) // 2
