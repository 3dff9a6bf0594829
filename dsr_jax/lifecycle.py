"""What a long run meets besides a crash: a preemption notice, and a second run started on the same workdir.

`StopRequest` turns SIGTERM (the notice spot and preemptible machines send about 30 s before SIGKILL) and
SIGINT (Ctrl-C, a notebook's interrupt button) into a request that the training loop sees after the step
in flight: it saves that step and returns, so nothing is lost and the same command resumes. Under
jax.distributed every process must stop at the same step, which a signal seen by one host cannot arrange:
there JAX's preemption service (started by jax.distributed.initialize, and holding SIGTERM itself) agrees
on the step, and `reached_preemption_sync_point` is asked after every step.

`workdir_lock` holds an exclusive flock on a file in the workdir for the run's life. The kernel drops it
when the process dies however it dies, so a killed run never leaves a stale lock behind.
"""
import contextlib
import errno
import fcntl
import os
import signal
import sys
import threading

import jax

from dsr_jax.errors import UserError

LOCK_NAME = '.train.lock'


class StopRequest:
  """Context manager; `requested(step)` says whether to save `step` and stop. Call it after every step."""

  def __init__(self):
    self.signal_name = ''
    self._old = {}
    self._distributed = False

  def __enter__(self):
    from jax._src import distributed  # pylint: disable=g-import-not-at-top
    state = distributed.global_state
    self._distributed = state.client is not None and state.preemption_sync_manager is not None
    # Under jax.distributed the preemption service owns SIGTERM; a Python handler would replace its own.
    wanted = (signal.SIGINT,) if self._distributed else (signal.SIGTERM, signal.SIGINT)
    if threading.current_thread() is threading.main_thread():  # signal.signal works only there
      for sig in wanted:
        self._old[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.signal_name = signal.Signals(signum).name
    print(f'{self.signal_name} received: stopping after the current step (a second one stops at once)',
          file=sys.stderr, flush=True)
    # A second signal acts as it would have without us (Ctrl-C twice stops at once).
    self._restore()

  def _restore(self):
    for sig, old in self._old.items():
      signal.signal(sig, old)
    self._old = {}

  def requested(self, step: int) -> bool:
    if self._distributed:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      if multihost_utils.reached_preemption_sync_point(step):
        self.signal_name = self.signal_name or 'preemption notice'
        return True
      return False
    return bool(self.signal_name)

  def __exit__(self, *exc):
    self._restore()
    return False


@contextlib.contextmanager
def workdir_lock(workdir: str):
  """Holds <workdir>/.train.lock (one file per process index) or refuses with the holder's pid."""
  name = LOCK_NAME if jax.process_index() == 0 else f'{LOCK_NAME}.{jax.process_index()}'
  path = os.path.join(workdir, name)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES):
        raise
      holder = os.pread(fd, 64, 0).decode(errors='replace').strip() or 'unknown'
      raise UserError(f'--workdir {workdir}: another training run (pid {holder}) is using it; wait for it '
                      'to finish or stop it, or give another --workdir') from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
    yield path
  finally:
    os.close(fd)  # releases the lock (the file stays: removing it would race with a run starting now)
