"""Directory checks and replacement shared by the CLIs that write directories (main, predict, export, the
TFDS builders): both exist so that a user's mistake fails before any work and an interrupted write never
loses what was there before.
"""
import os
import pathlib
import re
import shutil
import tempfile

from dsr_jax.errors import UserError

# Where no run's output belongs: the operating system's own trees (is or lies inside) ...
SYSTEM_TREES = ('/bin', '/boot', '/dev', '/etc', '/lib', '/lib32', '/lib64', '/libx32', '/proc', '/sbin', '/sys',
                '/usr')
# ... and directories that hold other users' or services' directories (is, exactly: below them is fine).
SYSTEM_PARENTS = ('/home', '/var', '/opt', '/mnt', '/media', '/srv', '/run')
# '$OUT', '${OUT}', '$(cmd)': what the shell leaves when a variable is quoted with '' or the command is pasted
# from a script; an unset variable expands to '' instead, which check_path_text cannot see in the middle of a
# path, but at its start it leaves a new directory in the filesystem root, refused below.
_UNEXPANDED = re.compile(r'\$(\{[^}]*\}?|\([^)]*\)?|[A-Za-z_]\w*)')


def check_path_text(path, field: str) -> str:
  """`path` as text, refused when it shows a mistake the shell makes easy: empty (it would mean the current
  directory), an unexpanded variable, or whitespace at either end or a line break (an unquoted paste)."""
  text = os.fspath(path)
  if not text:
    raise UserError(f'{field} is empty (expected a path; an unset shell variable expands to nothing)')
  m = _UNEXPANDED.search(text)
  if m:
    raise UserError(f'{field} {text!r}: holds the unexpanded shell variable {m.group(0)!r} (expected a path: '
                    'set the variable, or use double quotes)')
  if text != text.strip() or any(c in text for c in '\n\r\t'):
    raise UserError(f'{field} {text!r}: starts or ends with whitespace or holds a line break (expected a path; '
                    'check the quotes)')
  return text


def checkpoint_dir_around(path: str):
  """The checkpoint directory that `path` is or lies inside (real paths), or None.

  A checkpoint directory holds an integer-named step directory with a step's contents (a run's
  checkpoints/, an export, a shipped checkpoint); requiring the contents keeps a user's numbered folders out.
  """
  from dsr_jax import restore  # pylint: disable=g-import-not-at-top  (JAX + Orbax: only where needed)
  real = pathlib.Path(os.path.realpath(path))
  for d in (real, *real.parents):
    if any(restore.is_step_dir(d / str(s)) for s in restore.saved_steps(d)):
      return str(d)
  return None


def _check_not_system(p: str, base: str, field: str) -> None:
  real = os.path.realpath(p)
  if os.path.dirname(real) == real:
    raise UserError(f'{field} {p}: is the filesystem root (expected a directory of its own, e.g. runs/x)')
  for tree in SYSTEM_TREES:
    if real == tree or real.startswith(tree + os.sep):
      raise UserError(f'{field} {p}: lies in the system directory {tree} (expected a directory of your own)')
  if real in SYSTEM_PARENTS:
    raise UserError(f'{field} {p}: is the system directory {real}, which holds other directories (expected a '
                    'directory of your own below it)')
  if os.path.dirname(base) == base and base != real:
    # A new top-level directory: almost always '$OUT/x' with OUT unset.
    raise UserError(f'{field} {p}: would create a new directory in the filesystem root {base} (expected a '
                    'directory of your own; is a shell variable in it unset?)')


def check_dir_target(path, field: str, writable: bool = False, may_be_checkpoint: bool = False) -> str:
  """The absolute `path`, refused when a run must not write a directory there:
  - its text shows a shell mistake (check_path_text);
  - it is the filesystem root, a system directory, or a new directory directly in the root;
  - it is (unless `may_be_checkpoint`: an export replacing an export) or lies inside a checkpoint directory,
    whose files would become part of that checkpoint (a shipped one would then fail its SHA256SUMS);
  - it, or its nearest existing ancestor, is not a directory (a file, a dangling link);
  - (`writable`) that ancestor does not take writes.

  Called before any work: os.makedirs would raise only at write time, with a traceback. Nothing is created
  or touched: write permission is asked of the kernel (access, the mount's read-only flag), so a refused run
  leaves every modification time as it was. A directory that passes and still refuses the write (a
  filesystem that lies to access) fails at the write, with one line too.
  """
  p = os.path.abspath(os.path.expanduser(check_path_text(path, field)))
  base = p
  while not os.path.lexists(base) and os.path.dirname(base) != base:
    base = os.path.dirname(base)
  _check_not_system(p, base, field)
  ckpt = checkpoint_dir_around(p)
  if ckpt is not None and not (may_be_checkpoint and ckpt == os.path.realpath(p)):
    where = 'is' if ckpt == os.path.realpath(p) else 'lies inside'
    raise UserError(f'{field} {p}: {where} the checkpoint directory {ckpt} (expected a directory outside any '
                    'checkpoint: what is written there would become part of it)')
  if not os.path.isdir(base):
    what = 'is' if base == p else f'lies under {base}, which is'
    raise UserError(f'{field} {p}: {what} not a directory')
  if writable:
    why = ''
    if not os.access(base, os.W_OK | os.X_OK):  # also EROFS and immutable directories, for root too
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
