"""Directory checks and replacement shared by the CLIs that write directories (main, predict, export, the
TFDS builders): both exist so that a user's mistake fails before any work and an interrupted write never
loses what was there before.
"""
import os
import shutil
import tempfile

from dsr_jax.errors import UserError


def check_dir_target(path, field: str, writable: bool = False) -> str:
  """The absolute `path`, refused when it cannot become a directory: it, or its nearest existing ancestor,
  is not a directory (a file, a dangling link), or (`writable`) that ancestor does not take writes.

  Called before any work: os.makedirs would raise only at write time, with a traceback.
  """
  p = os.path.abspath(os.path.expanduser(os.fspath(path)))
  base = p
  while not os.path.lexists(base) and os.path.dirname(base) != base:
    base = os.path.dirname(base)
  if not os.path.isdir(base):
    what = 'is' if base == p else f'lies under {base}, which is'
    raise UserError(f'{field} {p}: {what} not a directory')
  if writable:
    why = ''
    if base != p:
      # A real write where the path is to be created anyway: root passes access() on /sys, an immutable dir
      # or some read-only mounts.
      try:
        os.rmdir(tempfile.mkdtemp(prefix='.write-probe-', dir=base))
      except OSError as e:
        why = e.strerror or type(e).__name__
    elif not os.access(base, os.W_OK | os.X_OK):  # an existing directory is checked without touching it
      why = 'no write permission'
    elif os.statvfs(base).f_flag & os.ST_RDONLY:
      why = 'read-only file system'
    if why:
      raise UserError(f'{field} {p}: {base} does not take writes ({why})')
  return p


def replace_dir(new: str, target: str) -> None:
  """Puts directory `new` at `target` (same filesystem). An existing `target` is moved aside, not deleted,
  until `new` is in place, and put back if that fails or is interrupted."""
  if not os.path.isdir(target):
    os.replace(new, target)
    return
  trash = tempfile.mkdtemp(prefix='.previous-', dir=os.path.dirname(target))
  previous = os.path.join(trash, 'previous')
  os.replace(target, previous)
  try:
    os.replace(new, target)
  except BaseException:
    os.replace(previous, target)
    os.rmdir(trash)
    raise
  shutil.rmtree(trash, ignore_errors=True)
