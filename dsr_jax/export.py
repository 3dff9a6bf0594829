"""Export DSRNet alone from a training checkpoint: what `predict` and eval mode need, nothing else.

  python -m dsr_jax.export --checkpoint runs/x4_ct --output checkpoints/dsrnet_x4 [--overwrite]

A training checkpoint also holds DENet, SPNet, the Adam state of all three and the data iterator (3-4x the
size of DSRNet); the export is an Orbax checkpoint directory with one step holding `params` = {'dsr': ...},
the training `config` (model.use_denet / use_spnet set False, so that it describes what the checkpoint
contains; the original values stay in config.export) and `metrics` (when the source had them). `predict
--checkpoint` and `--config.eval.checkpoint_dir` take the exported directory as they take a workdir.
Errors print one line and exit with status 2; an existing output is never replaced without --overwrite,
and never one that is, holds or lies inside the source (a workdir's checkpoints/ or checkpoints_best/). No
output may lie inside any checkpoint directory (a shipped one would fail its SHA256SUMS), in a system
directory or the filesystem root, or show a shell mistake (dsr_jax/paths.py).
"""
import json
import logging
import os
import sys

from dsr_jax import errors
from dsr_jax import paths
from dsr_jax import staging
from dsr_jax.errors import ArgumentParser
from dsr_jax.errors import UserError
from dsr_jax.errors import one_line


def _inside(path: str, root: str) -> bool:
  """Whether `path` is `root` or lies under it (both real, absolute paths)."""
  return os.path.commonpath([path, root]) == root


def _check_output(out: str, overwrite: bool):
  """Refuses an output that cannot be written or must not be replaced, before anything is read."""
  # An export may replace an export (--overwrite), but never write into a checkpoint (a shipped one would
  # then fail its SHA256SUMS) nor into a system directory.
  paths.check_dir_target(out, '--output', may_be_checkpoint=True)
  # The export is staged beside `out`, so its parent (or the nearest existing ancestor) must take writes.
  paths.check_dir_target(os.path.dirname(out), '--output parent', writable=True)
  if os.path.isdir(out) and os.listdir(out) and not overwrite:
    raise UserError(f'--output {out}: exists and is not empty (pass --overwrite to replace it)')


def _check_disjoint(out: str, checkpoint: str, root: str, step: int):
  """Refuses an output that is, holds or lies inside the source: --overwrite would delete the run."""
  from dsr_jax import restore  # pylint: disable=g-import-not-at-top
  real_out = os.path.realpath(out)
  real_root = os.path.realpath(root)
  # The output may not lie inside these (it would add to or replace a training checkpoint) ...
  within = [real_root]
  # ... nor be or hold these (replacing it would delete them).
  held = [os.path.realpath(os.path.expanduser(checkpoint)), real_root, os.path.join(real_root, str(step))]
  if os.path.basename(real_root) in (restore.CKPT_DIR, restore.BEST_DIR):
    # A training workdir: its other checkpoint directory holds the optimizer state / the best model.
    workdir = os.path.dirname(real_root)
    within += [os.path.join(workdir, restore.CKPT_DIR), os.path.join(workdir, restore.BEST_DIR)]
    held.append(workdir)
  for src in within + held:
    if real_out == src:
      raise UserError(f'--output {out}: is the source checkpoint {src} (expected a directory outside the '
                      'training run)')
  for src in within:
    if _inside(real_out, src):
      raise UserError(f'--output {out}: lies inside the source checkpoint directory {src} (expected a '
                      'directory outside the training run)')
  for src in held:
    if _inside(src, real_out):
      raise UserError(f'--output {out}: contains the source checkpoint {src} (replacing it would delete '
                      'it; expected a directory outside the training run)')


def export(checkpoint: str, output: str, overwrite: bool = False) -> str:
  """Writes DSRNet's parameters + config of `checkpoint` to `output`/<step>/; returns that directory."""
  out = os.path.abspath(os.path.expanduser(paths.check_path_text(output, '--output')))
  if os.path.islink(out):
    # rmtree refuses links and replacing one would not write where it points: fail now, not after writing.
    raise UserError(f'--output {out}: is a symbolic link (expected a directory path)')
  from dsr_jax import restore  # pylint: disable=g-import-not-at-top
  root, step = restore.resolve_checkpoint(paths.check_path_text(checkpoint, '--checkpoint'))
  # The source first: an output inside it is named as such, not as some checkpoint directory.
  _check_disjoint(out, checkpoint, root, step)
  _check_output(out, overwrite)
  errors.check_backend()
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  # The step directory, not `checkpoint`: what was checked above is what gets read.
  config, params, info = restore.load_params(os.path.join(root, str(step)), ('dsr',))
  restore.check_lr_only(config, info['dir'])
  step = int(info['step'])
  metrics = None
  if os.path.isdir(os.path.join(info['dir'], 'metrics')):
    try:
      with ocp.CheckpointManager(os.path.dirname(info['dir']),
                                 options=ocp.CheckpointManagerOptions(read_only=True)) as mngr:
        metrics = mngr.restore(step, args=ocp.args.Composite(metrics=ocp.args.JsonRestore())).metrics
    except Exception:  # pylint: disable=broad-except
      metrics = None  # metrics are informative only; the export stands without them
  cfg = json.loads(config.to_json_best_effort())
  cfg['export'] = {'source': info['dir'], 'step': step, 'use_denet': cfg['model'].get('use_denet'),
                   'use_spnet': cfg['model'].get('use_spnet')}
  cfg['model']['use_denet'] = False
  cfg['model']['use_spnet'] = False
  items = {'params': ocp.args.StandardSave({'dsr': params['dsr']}), 'config': ocp.args.JsonSave(cfg)}
  if metrics is not None:
    items['metrics'] = ocp.args.JsonSave(metrics)
  # Written beside the target and swapped in at the end: a failure leaves any previous export intact.
  with staging.Staging() as staged:
    try:
      tmp = staged.directory(out)
    except OSError as e:
      raise UserError(f'--output {out}: cannot create it ({one_line(e)})') from e
    try:
      opts = ocp.CheckpointManagerOptions(enable_async_checkpointing=False)
      with ocp.CheckpointManager(tmp, options=opts) as mngr:
        mngr.save(step, args=ocp.args.Composite(**items))
        mngr.wait_until_finished()
      staged.commit()
    except staging.CommitError as e:
      raise UserError(f'--output {out}: cannot write it ({one_line(e.cause)})') from e
    except OSError as e:
      raise UserError(f'--output {out}: cannot write it ({one_line(e)})') from e
  return os.path.join(out, str(step))


def main(argv=None) -> int:
  p = ArgumentParser(prog='python -m dsr_jax.export', description=__doc__.splitlines()[0])
  p.add_argument('--checkpoint', required=True,
                 help='training workdir (its best checkpoint), its checkpoints/ directory, or one step directory')
  p.add_argument('--output', required=True, help='directory to write (an Orbax checkpoint directory)')
  p.add_argument('--overwrite', action='store_true', help='replace a non-empty --output')
  args = p.parse_args(argv)
  for name in ('absl', 'orbax'):
    logging.getLogger(name).setLevel(logging.ERROR)
  try:
    path = export(args.checkpoint, args.output, args.overwrite)
  except UserError as e:
    print(f'error: {" ".join(str(e).split())}', file=sys.stderr)
    return 2
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
  print(f'exported DSRNet to {path} ({size / 1e6:.1f} MB)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
