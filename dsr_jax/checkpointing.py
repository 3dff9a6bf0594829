"""Orbax checkpoints. Items are kept separate so evaluation restores DSRNet's parameters alone.

Layout: <workdir>/checkpoints/<step>/{params, opt_state, role, data, config}. `data` is the grain
iterator position of the last batch the saved state consumed (recorded by the prefetcher, which runs
ahead of the step), so a resumed run sees exactly the batches an uninterrupted run would.
"""
import json
import os

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from dsr_jax.errors import UserError


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


def restore_latest(mngr: ocp.CheckpointManager, abstract_state, sharding):
  """Restores the newest readable checkpoint; falls back to older ones with a warning naming both steps.

  Returns (step, params, opt_state, role, data_state) or None when there is no checkpoint.
  """
  steps = sorted(mngr.all_steps(), reverse=True)
  failed = []
  for step in steps:
    try:
      r = mngr.restore(step, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(_abstract(abstract_state.params, sharding)),
          opt_state=ocp.args.StandardRestore(_abstract(abstract_state.opt_state, sharding)),
          role=ocp.args.JsonRestore(), data=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('checkpoint at step %d is unreadable (%s: %s)', step, type(e).__name__, str(e)[:200])
      failed.append(step)
      continue
    if failed:
      logging.warning('falling back from unreadable checkpoint step %s to step %d', failed[0], step)
      print(f'warning: checkpoint step {failed[0]} is unreadable; resuming from step {step}', flush=True)
    return step, r.params, r.opt_state, r.role, r.data
  if failed:
    raise UserError(f'{ckpt_dir(".")}: no readable checkpoint among steps {failed}')
  return None
