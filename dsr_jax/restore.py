"""Restoring trained networks for inference (evaluation and the predict CLI).

A checkpoint is named by any of:
  - a training workdir: its best checkpoint (the newest step of `<workdir>/checkpoints_best/` when that
    Orbax directory exists), else the newest step of `<workdir>/checkpoints/`;
  - an Orbax checkpoint directory (integer step subdirectories): its newest step;
  - one step's directory (`<...>/<step>/` holding the `params` and `config` items).

Only what inference needs is read: the `config` item (JSON) and the requested subtrees of `params`
(usually `params['dsr']` alone; `opt_state`, `data` and the other networks stay on disk). Restoring goes
through a read-only `CheckpointManager` with abstract targets (`jax.eval_shape` of the parameter init, as
`ShapeDtypeStruct`s with a single-device sharding), so a checkpoint written by an 8-device run restores
onto one device. `params` was saved whole with `StandardSave`; a subtree of it is restored with
`PyTreeRestore(partial_restore=True)` (verified with orbax-checkpoint 0.12.8), which skips every array
not in the target.

Every problem with the checkpoint raises `UserError` with one line naming the path and what was expected.
"""
import os
import pathlib
import re

import jax
import ml_collections
import orbax.checkpoint as ocp

from dsr_jax import checkpointing
from dsr_jax.configs import default
from dsr_jax.errors import UserError
from dsr_jax.errors import one_line

BEST_DIR = checkpointing.BEST_DIR  # written by training (trainer.Checkpoints.keep_best)
CKPT_DIR = 'checkpoints'
REQUIRED_ITEMS = ('params', 'config')
_EXPECTED = ('a shipped name (dsrnet_x4, dsrnet_x8, dsrnet_x4_protocol, ...), a training workdir, its checkpoints/ directory, or one '
             'step directory holding '
             "'params' and 'config'")


def saved_steps(directory) -> list[int]:
  # Orbax names finished steps by their integer; unfinished saves carry a tmp suffix and are skipped.
  try:
    return sorted(int(p.name) for p in pathlib.Path(directory).iterdir() if p.name.isdigit() and p.is_dir())
  except OSError:
    return []


def is_step_dir(path: pathlib.Path) -> bool:
  """Whether `path` holds one step of a checkpoint (its items, or Orbax's step metadata)."""
  return any((path / item).exists() for item in REQUIRED_ITEMS) or (path / '_CHECKPOINT_METADATA').exists()


# The shipped weights, addressable by name (`--checkpoint dsrnet_x4`): package data inside an installed wheel,
# checkpoints/ beside the package in a checkout.
_PKG = pathlib.Path(__file__).resolve().parent
SHIPPED_ROOT = _PKG / 'checkpoints' if (_PKG / 'checkpoints').is_dir() else _PKG.parent / 'checkpoints'
SUMS = 'SHA256SUMS'


def file_sums(root) -> dict:
  """{relative path: sha256} of every file under `root` except the SHA256SUMS list itself."""
  import hashlib  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(root)
  return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
          for f in sorted(root.rglob('*')) if f.is_file() and f.name != SUMS}


def write_sums(root) -> str:
  """Writes <root>/SHA256SUMS for every file under `root` (shipping a checkpoint); returns the list's sha256."""
  import hashlib  # pylint: disable=g-import-not-at-top
  text = ''.join(f'{digest}  {rel}\n' for rel, digest in file_sums(root).items())
  (pathlib.Path(root) / SUMS).write_text(text)
  return hashlib.sha256(text.encode()).hexdigest()


def verify_sums(root) -> None:
  """Checks <root>/SHA256SUMS ('<sha256>  <relative path>' lines); UserError naming the first mismatch."""
  root = pathlib.Path(root)
  listed = {}
  for line in (root / SUMS).read_text().splitlines():
    digest, _, rel = line.partition('  ')
    listed[rel] = digest
  got = file_sums(root)
  for rel in sorted(listed.keys() | got.keys()):
    if listed.get(rel) != got.get(rel):
      what = 'missing' if rel not in got else 'not listed' if rel not in listed else 'sha256 differs'
      raise UserError(f'checkpoint {root / rel}: {what} (against {root / SUMS}); the shipped weights are '
                      'damaged or changed: restore them with git checkout')


def shipped_checkpoint(name: str):
  """The directory of a shipped checkpoint named `name` (verified against its SHA256SUMS), or None."""
  if not re.fullmatch(r'dsrnet_x\d+(_protocol)?', name) or not (SHIPPED_ROOT / name).is_dir():
    return None
  root = SHIPPED_ROOT / name
  if (root / SUMS).is_file():
    verify_sums(root)
  return root


def resolve_checkpoint(path) -> tuple[str, int]:
  """Finds the checkpoint that `path` names.

  Args:
    path: a training workdir, an Orbax checkpoint directory, or one step's directory.

  Returns:
    (checkpoint_dir, step): the Orbax manager directory (holding integer step subdirectories) and the
    step to restore. The step directory `checkpoint_dir/step` holds both 'params' and 'config'.

  Raises:
    UserError: no such directory, no checkpoint in it, or an incomplete step.
  """
  if not str(path):
    raise UserError(f'checkpoint path is empty (expected {_EXPECTED})')
  p = pathlib.Path(path).expanduser().absolute()
  if not p.exists():
    p = shipped_checkpoint(str(path)) or p
  if not p.exists():
    raise UserError(f'checkpoint {p}: no such file or directory (expected {_EXPECTED})')
  if not p.is_dir():
    raise UserError(f'checkpoint {p}: not a directory (expected {_EXPECTED})')
  if is_step_dir(p):
    if not p.name.isdigit():
      raise UserError(f'checkpoint {p}: a step directory must be named by its integer step (Orbax layout '
                      '<dir>/<step>/)')
    root, step = p.parent, int(p.name)
  else:
    root = None
    for candidate in (p / BEST_DIR, p / CKPT_DIR, p):
      steps = saved_steps(candidate) if candidate.is_dir() else []
      if steps:
        root, step = candidate, steps[-1]
        break
    if root is None:
      raise UserError(f'checkpoint {p}: no checkpoint found (expected {_EXPECTED}; no integer step '
                      f'directories in {p / CKPT_DIR} or {p})')
  step_dir = root / str(step)
  missing = [item for item in REQUIRED_ITEMS if not (step_dir / item).is_dir()]
  if missing:
    raise UserError(f'checkpoint {step_dir}: incomplete, missing {" and ".join(missing)} (expected the '
                    f'items {", ".join(REQUIRED_ITEMS)} written by training)')
  return str(root), step


def _manager(root: str) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(root, options=ocp.CheckpointManagerOptions(read_only=True))


def read_config(checkpoint_dir: str, step: int) -> ml_collections.ConfigDict:
  """The training config saved with a checkpoint (the `config` JSON item)."""
  step_dir = os.path.join(checkpoint_dir, str(step))
  try:
    with _manager(checkpoint_dir) as mngr:
      raw = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config
  except Exception as e:  # pylint: disable=broad-except
    # Orbax reports a missing or corrupt item through many exception types; all mean the same here.
    raise UserError(f'checkpoint {step_dir}: cannot read the config item ({one_line(e)})') from e
  if not isinstance(raw, dict) or not isinstance(raw.get('model'), dict):
    raise UserError(f'checkpoint {step_dir}: the config item has no model section (expected the training '
                    'config saved as JSON)')
  return upgrade_config(raw)


# Model fields added after checkpoints were first saved, with the value that rebuilds the network such a
# checkpoint was trained as (not today's default where the two differ: side heads had no residual before
# rule 1 of docs/method.md). A saved config is upgraded once, on load (read_config), so code reads every
# field directly.
_ADDED_MODEL_FIELDS = {
    'residual': True,
    'bp_impl': 'polyphase',
    'dtype': 'float32',
    'use_denet': True,
    'use_spnet': True,
    'side_residual': False,
    'teacher_input': 'rgb',
    'teacher_residual': True,
}


def upgrade_config(raw: dict) -> ml_collections.ConfigDict:
  """A training config saved by any earlier version, with every field today's code reads.

  Missing model fields get the value the old code implied (_ADDED_MODEL_FIELDS); any other missing field
  gets today's default (configs/default.py). Fields the saved config has are kept as saved.
  """
  merged = default.get_config().to_dict()

  def overlay(base: dict, top: dict) -> dict:
    for k, v in top.items():
      base[k] = overlay(dict(base[k]), v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return base
  overlay(merged['model'], _ADDED_MODEL_FIELDS)
  return ml_collections.ConfigDict(overlay(merged, raw))


def _single_device_sharding():
  return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def abstract_params(config, nets=('dsr',)):
  """ShapeDtypeStructs (single-device sharding) of the requested networks' parameters."""
  from dsr_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  from dsr_jax import state as state_lib  # pylint: disable=g-import-not-at-top
  models = models_lib.build(config.model)
  # The key is made inside the abstract evaluation too: shapes only, nothing is placed on a device.
  shapes = jax.eval_shape(lambda: state_lib.init_params(models, jax.random.key(0), scale=config.model.scale))
  sharding = _single_device_sharding()
  return {n: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes[n])
          for n in nets if n in shapes}


def load_params(path, nets=('dsr',)):
  """Restores the config and the parameters of `nets` (those the checkpoint's model has).

  Args:
    path: anything `resolve_checkpoint` accepts.
    nets: subset of ('dsr', 'denet', 'spnet'); networks absent from the checkpoint's model are skipped.

  Returns:
    (config, params, info): the training ConfigDict; {net: params} on one device; info = {'dir': the step
    directory, 'step': int}.

  Raises:
    UserError: missing, incomplete or unreadable checkpoint (the message names the path).
  """
  root, step = resolve_checkpoint(path)
  step_dir = os.path.join(root, str(step))
  config = read_config(root, step)
  try:
    target = abstract_params(config, nets)
  except UserError as e:
    raise UserError(f'checkpoint {step_dir}: its config does not build a model ({e})') from e
  restore_args = jax.tree.map(
      lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding, global_shape=x.shape, dtype=x.dtype), target)
  error = None
  # The try sits inside the quiet window: the exception (which holds the abandoned reads) is dropped before
  # the window collects them, so no "never awaited" noise reaches stderr.
  with checkpointing.quiet_failed_restore() as failure, _manager(root) as mngr:
    try:
      params = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.PyTreeRestore(
          item=target, restore_args=restore_args, partial_restore=True))).params
    except Exception as e:  # pylint: disable=broad-except
      failure.append(step)
      error = one_line(e)
  if error is not None:
    raise UserError(f'checkpoint {step_dir}: cannot restore params {"/".join(target)} ({error})')
  got = jax.tree.structure(params)
  if got != jax.tree.structure(target):
    raise UserError(f'checkpoint {step_dir}: params do not match the model of its config (expected '
                    f'{len(jax.tree.leaves(target))} arrays, got {len(jax.tree.leaves(params))})')
  for want, have in zip(jax.tree.leaves(target), jax.tree.leaves(params)):
    if tuple(have.shape) != tuple(want.shape):
      raise UserError(f'checkpoint {step_dir}: a parameter has shape {tuple(have.shape)} but the model of '
                      f'its config expects {tuple(want.shape)}')
  return config, params, {'dir': step_dir, 'step': step}


def init_from(path, params: dict) -> dict:
  """`params` with DSRNet's replaced by those of a trained checkpoint (train.init_from: fine-tuning).

  Only DSRNet is taken: the partner networks and the optimiser start fresh, as the run's own schedule
  expects. The two DSRNets must have the same parameter shapes (model.scale, channels, feat, stages).
  """
  from dsr_jax.errors import ConfigError  # pylint: disable=g-import-not-at-top
  _, loaded, info = load_params(path, ('dsr',))
  shapes = lambda t: jax.tree.map(lambda x: tuple(x.shape), t)
  if shapes(loaded['dsr']) != shapes(params['dsr']):
    raise ConfigError(f'train.init_from={str(path)!r}: the DSRNet in {info["dir"]} has other parameter shapes '
                      'than this config\'s model (expected the same model.scale, channels, feat and stages)')
  return {**params, 'dsr': loaded['dsr']}


def check_lr_only(config, where: str) -> None:
  """UserError when a checkpoint's network reads more than the LR depth: a teacher trained alone
  (docs/method.md, "Frozen teachers") cannot run where only the LR is given."""
  from dsr_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  if config.model.name in models_lib.TEACHERS:
    raise UserError(f'checkpoint {where}: its network {config.model.name!r} is a training-time teacher that reads '
                    'the HR RGB (or depth) beside the LR; only eval mode runs it (with the RGB)')


def load_for_inference(path):
  """(config, dsr_params): the training config and DSRNet's parameters, on one device."""
  config, params, info = load_params(path, ('dsr',))
  check_lr_only(config, info['dir'])
  return config, params['dsr']
