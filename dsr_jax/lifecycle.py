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
    self._signals, self._wakeup = 0, None
    if threading.current_thread() is threading.main_thread():  # signal.signal works only there
      for sig in wanted:
        self._old[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self._signals += 1
    if self._signals > 1:
      _stop_now(signum)
    self.signal_name = signal.Signals(signum).name
    print(f'{self.signal_name} received: stopping after the current step (a second one stops at once)',
          file=sys.stderr, flush=True)
    self._watch_for_second()

  def _watch_for_second(self):
    # The second signal must act at once, but a Python handler runs only between the main thread's bytecodes,
    # and the main thread can sit in one XLA compile for a minute. The C-level handler writes each signal to
    # the wakeup fd as it arrives; a thread reads it there. (Restoring the default handler instead let a
    # KeyboardInterrupt unwind through a compile and end in a segfault.)
    r, w = os.pipe()
    os.set_blocking(w, False)
    self._wakeup = (w, signal.set_wakeup_fd(w, warn_on_full_buffer=False))
    threading.Thread(target=self._read_wakeup, args=(r, tuple(self._old)), daemon=True).start()

  @staticmethod
  def _read_wakeup(r, ours):
    try:
      while data := os.read(r, 16):  # b'': __exit__ closed the write end
        for signum in data:
          if signum in ours:
            _stop_now(signum)
    finally:
      os.close(r)

  def _restore(self):
    for sig, old in self._old.items():
      signal.signal(sig, old)
    self._old = {}
    if self._wakeup is not None:
      w, old_fd = self._wakeup
      signal.set_wakeup_fd(old_fd)
      os.close(w)
      self._wakeup = None

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


def _stop_now(signum: int) -> None:
  """A second SIGINT/SIGTERM: one line, then the conventional status 128 + signum at once. os._exit, because
  an interpreter shutdown with XLA's compile threads and Orbax's writers running can crash; what was
  committed to disk stays, and an unfinished save is ignored by the next run."""
  print(f'{signal.Signals(signum).name} received again: stopped at once; the checkpoints saved before are '
        'intact (re-run the same command to resume)', file=sys.stderr, flush=True)
  os._exit(128 + signum)  # pylint: disable=protected-access


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
