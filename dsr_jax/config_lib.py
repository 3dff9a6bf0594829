"""Loading configs without absl flags (Colab, tests): `load_config('configs/test.py', **{'train.num_steps': 5})`.

Overrides use dotted names like the command line's `--config.train.num_steps=5`; an unknown name or a value
of the wrong type raises ConfigError naming it, as `--config.*` typos do.
"""
import fnmatch
import importlib.util
import math
import os

import ml_collections

from dsr_jax.configs import default
from dsr_jax.errors import ConfigError


def config_by_name(value: str) -> str:
  """'default' or 'cpu_real:x4,ct' -> the path of that file among the installed configs; paths unchanged."""
  name, sep, arg = value.partition(':')
  if not name or '/' in name or os.sep in name or name.endswith('.py') or os.path.exists(name):
    return value
  spec = importlib.util.find_spec('dsr_jax.configs')
  for root in (spec.submodule_search_locations or []) if spec else []:
    path = os.path.join(root, f'{name}.py')
    if os.path.isfile(path):
      return path + sep + arg
  return value  # the config flag then names the missing file



def load_config(path: str, arg=None, **overrides) -> ml_collections.ConfigDict:
  """A config by file path or installed name, with `arg` (or a ':arg' suffix) and dotted overrides."""
  path = config_by_name(path)
  if arg is None and not os.path.isfile(path) and ':' in path:
    path, arg = path.rsplit(':', 1)
  if not os.path.isfile(path):
    raise ConfigError(f'{path}: no such config file (expected e.g. configs/default.py)')
  spec = importlib.util.spec_from_file_location(f'_dsr_config_{abs(hash(path))}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise ConfigError(f'{path}: expected a get_config(arg=None) function')
  config = module.get_config(arg)
  for dotted, value in overrides.items():
    *parents, leaf = dotted.split('.')
    node = config
    try:
      for p in parents:
        node = node[p]
      if leaf not in node:
        raise KeyError(leaf)
    except (KeyError, TypeError, AttributeError) as e:
      raise ConfigError(f'config override {dotted}={value!r}: no such field') from e
    try:
      node[leaf] = value
    except (TypeError, ValueError) as e:  # ml_collections refuses a value of another type
      raise ConfigError(f'config override {dotted}={value!r}: {" ".join(str(e).split())}') from e
  return config


# Tile context (LR pixels a side) accepted by eval.overlap and predict --overlap. The margin is raised to the
# network's receptive field (6 x model.stages: 24 for the default, 42 for the paper's T=7) anyway, and context
# beyond it never changes the output; a larger value only grows every window, (tile + 2 overlap)^2.
MAX_OVERLAP = 256
# Every integer field must fit JAX's default int32 (seeds, step counts and schedules become int32 arrays).
INT32_MAX = 2 ** 31 - 1

# Numeric fields and their ranges: (dotted name or '*' pattern, kind, low, high, low open?[, high open?]).
# Checked before a run writes anything; a NaN learning rate would otherwise train to a NaN loss and a
# checkpoint of zeros.
_RANGES = (
    ('seed', int, 0, INT32_MAX, False),
    ('optim.*.lr', float, 0.0, None, True),
    # Adam divides by 1 - b^t: b = 1 divides by zero.
    ('optim.*.b1', float, 0.0, 1.0, False, True),
    ('optim.*.b2', float, 0.0, 1.0, False, True),
    ('optim.*.warmup_steps', int, 0, None, False),
    ('optim.*.grad_clip', float, 0.0, None, False),
    ('loss.ssim_lambda', float, 0.0, 1.0, False),
    ('loss.gamma', float, 0.0, None, False),
    ('loss.rho1', float, 0.0, None, False),
    ('loss.rho2', float, 0.0, None, False),
    ('loss.side_weight', float, 0.0, None, False),
    ('loss.affinity_tau', float, 0.0, None, True),
    ('loss.affinity_pool', int, 1, None, False),
    ('loss.kd_out_weight', float, 0.0, None, False),
    ('loss.kd_feature_weight', float, 0.0, None, False),
    ('loss.kd_affinity_weight', float, 0.0, None, False),
    ('train.num_steps', int, 1, None, False),
    ('train.round_steps', int, 1, None, False),
    ('train.batch_size', int, 1, None, False),
    ('train.log_every', int, 1, None, False),
    ('train.image_every', int, 1, None, False),
    ('train.time_budget', float, 0.0, None, False),
    ('data.noise_sigma', float, 0.0, None, False),
    ('data.workers', int, 0, None, False),
    ('data.prefetch', int, 0, None, False),
    ('data.eval_batch', int, 1, None, False),
    ('data.min_valid', float, 0.0, 1.0, False),
    ('data.crop_tries', int, 1, None, False),
    ('data.min_edge', float, 0.0, 1.0, False),
    ('data.edge_step', float, 0.0, None, True),
    ('eval.every_steps', int, 0, None, False),
    ('eval.tile', int, 0, None, False),
    ('eval.figure_scenes', int, 0, None, False),
    ('eval.overlap', int, 0, MAX_OVERLAP, False),
    ('model.channels', int, 1, None, False),
    ('model.feat', int, 1, None, False),
    ('model.stages', int, 1, None, False),
    ('model.de_blocks', int, 1, None, False),
    ('model.teacher_width', int, 1, None, False),
    ('model.teacher_blocks', int, 0, None, False),
    ('ckpt.every_steps', int, 1, None, False),
    ('ckpt.keep', int, 1, None, False),
)


def _leaves(node, prefix=''):
  for k in node.keys():
    v = node[k]
    if isinstance(v, ml_collections.ConfigDict):
      yield from _leaves(v, f'{prefix}{k}.')
    else:
      yield f'{prefix}{k}', v


def check_numbers(config) -> None:
  """Every field of the type configs/default.py gives it, every float finite, every integer within int32,
  and the fields of _RANGES inside their ranges; ConfigError names the field."""
  leaves = dict(_leaves(config))
  _check_types(leaves)
  for name, v in leaves.items():
    if isinstance(v, float) and not math.isfinite(v):
      raise ConfigError(f'{name}={v!r}: expected a finite number')
    if isinstance(v, int) and not isinstance(v, bool) and not -INT32_MAX - 1 <= v <= INT32_MAX:
      raise ConfigError(f'{name}={v!r}: expected an integer within int32 (|value| < 2**31)')
  for pattern, kind, lo, hi, open_lo, *open_hi in _RANGES:
    for name in fnmatch.filter(leaves, pattern):
      v = leaves[name]
      if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not isinstance(v, int)):
        raise ConfigError(f'{name}={v!r}: expected {"an integer" if kind is int else "a number"}')
      too_low = v <= lo if open_lo else v < lo
      too_high = hi is not None and (v >= hi if open_hi and open_hi[0] else v > hi)
      if too_low or too_high:
        rng = ((f'> {lo}' if open_lo else f'>= {lo}') +
               (f' and {"<" if open_hi and open_hi[0] else "<="} {hi}' if hi is not None else ''))
        raise ConfigError(f'{name}={v!r}: expected a value {rng}')


def _check_types(leaves: dict) -> None:
  """Each field of configs/default.py holds what its default holds: a config file can assign anything (an
  override cannot: ml_collections checks those), and a string where a bool belongs is always true."""
  for name, ref in _leaves(default.get_config()):
    if name not in leaves or ref is None:
      continue
    v = leaves[name]
    if isinstance(ref, bool):
      ok, want = isinstance(v, bool), 'True or False'
    elif isinstance(ref, int):
      ok, want = isinstance(v, int) and not isinstance(v, bool), 'an integer'
    elif isinstance(ref, float):
      ok, want = isinstance(v, (int, float)) and not isinstance(v, bool), 'a number'
    elif isinstance(ref, str):
      ok, want = isinstance(v, str), 'a string'
    elif isinstance(ref, (tuple, list)):
      ok = (isinstance(v, (tuple, list)) and len(v) == len(ref) and
            all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v))
      want = f'{len(ref)} numbers like {tuple(ref)}'
    else:
      continue
    if not ok:
      raise ConfigError(f'{name}={v!r}: expected {want}')


MODES = ('train', 'eval')


def check_fields(config) -> None:
  """Each field's type, finiteness and range (every mode's), and the mode; ConfigError names the field.

  What a field means to one mode is checked by that mode: `train.check_config` (with roles, models and optim)
  and `eval_config.check`; the data fields by the pipeline where it builds its datasets. None of them starts a
  jax backend, so main can still set XLA's flags after them.
  """
  check_numbers(config)
  if config.mode not in MODES:
    raise ConfigError(f"mode={config.mode!r}: expected 'train' or 'eval'")
