"""Staged, atomic writes: every output is written under a temporary name beside its target and put in place
only when all are written, so a run that fails or is interrupted while writing (a full disk, Ctrl-C) leaves
no partial output and every earlier output as it was. predict (files) and export (a checkpoint directory)
write through `Staging`.

    with staging.Staging() as out:
      out.file(path, lambda tmp: save(tmp))     # or: tmp_dir = out.directory(path), then fill tmp_dir
      out.commit()
    # leaving the block removes whatever was staged and not committed

Temporary names start with '.' and lie in the target's own directory: each rename is atomic and needs no
space. A staged file gets the permissions of any new file (0666 less the umask, applied by the kernel).
"""
import contextlib
import os
import secrets
import shutil
import signal
import tempfile
import threading

from dsr_jax import paths

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_held():
  """Holds SIGINT and SIGTERM back for the block; one that came meanwhile acts when it ends."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
  try:
    yield
  finally:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def _new_file_beside(path: str) -> str:
  """Creates an empty file with a fresh hidden name in `path`'s directory; returns its name."""
  directory, name = os.path.split(os.fspath(path))
  while True:
    tmp = os.path.join(directory, f'.{name}.{secrets.token_hex(4)}.tmp')
    try:
      fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
      continue
    os.close(fd)
    return tmp


class CommitError(Exception):
  """A staged output that could not be put in place (`cause`, the OSError): `done` of `total` outputs were,
  the rest are unchanged."""

  def __init__(self, staged: str, path, done: int, total: int, cause: OSError):
    super().__init__(f'{path}: {cause}')
    self.staged, self.path, self.done, self.total, self.cause = staged, path, done, total, cause


class Staging:
  """Outputs staged beside their targets: (temporary, target) pairs, put in place together by `commit`."""

  def __init__(self):
    self.staged = []
    self.committed = False

  def __len__(self):
    return len(self.staged)

  def file(self, path, write) -> None:
    """Writes `path`'s content by write(temporary name). OSError from either step propagates."""
    with signals_held():  # a temporary file that exists is one on the list, which `discard` removes
      tmp = _new_file_beside(path)
      self.staged.append((tmp, path))
    write(tmp)

  def directory(self, path) -> str:
    """A new empty directory beside `path` (its parent created if missing) to fill; `commit` puts it at
    `path`, moving an existing directory aside until it is in place (paths.replace_dir)."""
    parent = os.path.dirname(os.fspath(path))
    os.makedirs(parent, exist_ok=True)
    with signals_held():
      tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(os.fspath(path))}-', dir=parent)
      self.staged.append((tmp, path))
    return tmp

  def commit(self) -> None:
    """Puts every staged output in place, signals held until the last.

    Raises:
      CommitError: an output could not be put in place; those before it are, the others are unchanged.
    """
    with signals_held():
      for done, (tmp, path) in enumerate(self.staged):
        try:
          if os.path.isdir(tmp):
            paths.replace_dir(tmp, os.fspath(path))
          else:
            os.replace(tmp, path)
        except OSError as e:
          raise CommitError(tmp, path, done, len(self.staged), e) from e
      self.committed = True

  def discard(self) -> None:
    """Removes every temporary output still there (none after a commit)."""
    for tmp, _ in self.staged:
      if os.path.isdir(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
      else:
        with contextlib.suppress(FileNotFoundError):
          os.remove(tmp)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.discard()
    return False
