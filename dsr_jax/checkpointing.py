"""Orbax checkpoints. Items are kept separate so evaluation restores DSRNet's parameters alone.

Layout: <workdir>/checkpoints/<step>/{params, opt_state, role, data, config}. `data` is the grain
iterator position of the last batch the saved state consumed (recorded by the prefetcher, which runs
ahead of the step), so a resumed run sees exactly the batches an uninterrupted run would.

A checkpoint that cannot be restored while an older one can is moved to
<workdir>/checkpoints_unreadable/<step>: kept for inspection, but out of the way of the resumed run, which
saves that step again.
"""
import contextlib
import gc
import json
import logging as py_logging
import os
import shutil
import sys
import time
import warnings

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from dsr_jax.errors import UserError
from dsr_jax.errors import one_line

UNREADABLE_DIR = 'checkpoints_unreadable'


def ckpt_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def manager(workdir: str, keep: int, read_only: bool = False) -> ocp.CheckpointManager:
  opts = ocp.CheckpointManagerOptions(
      preservation_policy=ocp.checkpoint_managers.LatestN(keep) if not read_only else None,
      read_only=read_only, create=not read_only, enable_async_checkpointing=not read_only)
  return ocp.CheckpointManager(ckpt_dir(workdir) if not read_only else workdir, options=opts)


def save(mngr: ocp.CheckpointManager, step: int, state, role: dict, data_state: dict, config) -> None:
  cfg = json.loads(config.to_json_best_effort())
  mngr.save(step, force=True, args=ocp.args.Composite(
      params=ocp.args.StandardSave(state.params),
      opt_state=ocp.args.StandardSave(state.opt_state),
      role=ocp.args.JsonSave({k: np.asarray(v).tolist() for k, v in role.items()}),
      data=ocp.args.JsonSave(data_state),
      config=ocp.args.JsonSave(cfg)))


def _abstract(tree, sharding):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


@contextlib.contextmanager
def quiet_failed_restore():
  """Keeps the leftovers of orbax's failed reads off stderr; yields a list to append to on failure.

  A restore that fails on one array abandons the reads of the others: orbax 0.12.8 awaits them with a
  plain `asyncio.gather` (serialization/jax_array_handlers.py, `_async_deserialize`), which raises the first
  exception and, as Python documents, leaves the other awaitables running (python/cpython#75633,
  "asyncio.gather does not cancel tasks if one fails"). When they are collected, Python and asyncio print a
  traceback for each ("Exception ignored in ...", "Task exception was never retrieved", "Event loop is
  closed" from reads landing late): a wall of noise that looks like a crash, around a failure already
  reported as one line. They are muted here, collected while muted, and the late reads given a moment to
  land. This is the project's one patch against that behaviour: every restore of parameters (training's
  resume; restore.load_params for eval, predict and export) runs inside it.
  """
  hook, aio = sys.unraisablehook, py_logging.getLogger('asyncio')
  aio_disabled = aio.disabled
  sys.unraisablehook = lambda u: logging.debug('ignored during restore: %s', u.exc_value)
  aio.disabled = True
  failed = []
  with warnings.catch_warnings():
    # Collecting an abandoned read also warns "coroutine ... was never awaited" (through `warnings`).
    warnings.filterwarnings('ignore', message=r'coroutine .* was never awaited', category=RuntimeWarning)
    try:
      yield failed
    finally:
      if failed:
        time.sleep(0.2)
      gc.collect()
      sys.unraisablehook, aio.disabled = hook, aio_disabled


def _set_aside(mngr: ocp.CheckpointManager, steps) -> str:
  """Moves unreadable step directories to <workdir>/checkpoints_unreadable/ and refreshes the manager.

  Without this the resumed run could never save those steps again (orbax refuses an existing step).
  """
  root = os.fspath(mngr.directory)
  dest_root = os.path.join(os.path.dirname(root), UNREADABLE_DIR)
  if jax.process_index() == 0:
    os.makedirs(dest_root, exist_ok=True)
    for step in steps:
      dest, n = os.path.join(dest_root, str(step)), 0
      while os.path.exists(dest):  # a second corrupt copy of the same step must not overwrite the first
        n += 1
        dest = os.path.join(dest_root, f'{step}.{n}')
      shutil.move(os.path.join(root, str(step)), dest)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices('dsr_jax_checkpoints_set_aside')
  mngr.reload()
  return dest_root


def restore_latest(mngr: ocp.CheckpointManager, abstract_state, sharding):
  """Restores the newest readable checkpoint; falls back to older ones with a warning naming both steps.

  Unreadable checkpoints newer than the one restored are moved to <workdir>/checkpoints_unreadable/.

  Returns (step, params, opt_state, role, data_state) or None when there is no checkpoint.

  Raises:
    UserError: there are checkpoints but none of them can be restored (one line; nothing is moved, and
      training never silently starts from scratch over them).
  """
  steps = sorted(mngr.all_steps(), reverse=True)
  failed, first_error = [], ''
  for step in steps:
    # try inside with: the exception (and the frames of the abandoned reads it holds) is gone by the time
    # the quiet window collects them.
    with quiet_failed_restore() as failure:
      try:
        r = mngr.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(_abstract(abstract_state.params, sharding)),
            opt_state=ocp.args.StandardRestore(_abstract(abstract_state.opt_state, sharding)),
            role=ocp.args.JsonRestore(), data=ocp.args.JsonRestore()))
      except Exception as e:  # pylint: disable=broad-except
        logging.warning('checkpoint at step %d is unreadable (%s)', step, one_line(e))
        failure.append(step)
        # Text only: keeping the exception would keep the abandoned reads alive past the quiet window.
        first_error = first_error or one_line(e, 150)
    if failure:
      failed.append(step)
      continue
    if failed:
      logging.warning('falling back from unreadable checkpoint step %s to step %d', failed[0], step)
      moved = _set_aside(mngr, failed)
      print(f'warning: checkpoint step {failed[0]} is unreadable; resuming from step {step} '
            f'(unreadable step(s) {", ".join(map(str, failed))} moved to {moved})', flush=True)
    return step, r.params, r.opt_state, r.role, r.data
  if failed:
    raise UserError(f'{os.fspath(mngr.directory)}: no readable checkpoint among steps '
                    f'{", ".join(map(str, failed))} (step {failed[0]}: {first_error}); '
                    'move the directory away to start from scratch')
  return None


BEST_DIR = 'checkpoints_best'


def best_manager(workdir: str) -> ocp.CheckpointManager:
  """<workdir>/checkpoints_best/: the one checkpoint with the lowest validation MAD so far."""
  opts = ocp.CheckpointManagerOptions(preservation_policy=ocp.checkpoint_managers.LatestN(1),
                                      enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), BEST_DIR), options=opts)


def best_metric(mngr: ocp.CheckpointManager) -> float:
  """The validation MAD of the kept best checkpoint (inf when there is none or it is unreadable)."""
  step = mngr.latest_step()
  if step is None:
    return float('inf')
  try:
    return float(mngr.restore(step, args=ocp.args.Composite(metrics=ocp.args.JsonRestore())).metrics['val_mad'])
  except Exception as e:  # pylint: disable=broad-except
    logging.warning('best checkpoint %d has no readable metrics (%s)', step, one_line(e))
    return float('inf')


def save_best(mngr: ocp.CheckpointManager, step: int, state, config, metrics: dict) -> None:
  """Saves params + config + metrics (what evaluation and predict read) as the new best."""
  if step in mngr.all_steps():
    return
  cfg = json.loads(config.to_json_best_effort())
  mngr.save(step, force=True, args=ocp.args.Composite(
      params=ocp.args.StandardSave(state.params), config=ocp.args.JsonSave(cfg),
      metrics=ocp.args.JsonSave({k: float(v) for k, v in metrics.items()})))
  mngr.wait_until_finished()
