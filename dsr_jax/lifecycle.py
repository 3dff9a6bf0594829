"""What a long run meets besides a crash: a preemption notice, and a second run started on the same workdir.

`StopRequest` turns SIGTERM (the notice spot and preemptible machines send about 30 s before SIGKILL) and
SIGINT (Ctrl-C, a notebook's interrupt button) into a request that the training loop sees after the step
in flight: it saves that step and returns, so nothing is lost and the same command resumes. Under
jax.distributed every process must stop at the same step, which a signal seen by one host cannot arrange:
there JAX's preemption service (started by jax.distributed.initialize, and holding SIGTERM itself) agrees
on the step, and the public `multihost_utils.reached_preemption_sync_point` is asked after every step.

The same request carries `train.time_budget`: a wall-clock limit for the whole run, counted from the
process's start (`process_start`), checked at log steps (where the loop syncs with the device anyway and
knows its true pace). A budget stop takes the preemption's path (save the step, exit 0, the same command
resumes); train adds the final validation, for which a notice 30 s before SIGKILL leaves no time.

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
import time

import jax
from jax.experimental import multihost_utils
import numpy as np

from dsr_jax.errors import UserError

LOCK_NAME = '.train.lock'
BUDGET = 'time budget'  # StopRequest.signal_name of a budget stop
_IMPORTED = time.time()


def process_start() -> float:
  """The time.time() at which this process started (Linux /proc); elsewhere, when this module was imported.

  The budget counts the interpreter's start, imports and compilation too: a Colab session or a preemptible
  slot ends on the clock, not when training happens to begin.
  """
  try:
    with open('/proc/self/stat') as f:
      after_name = f.read().rsplit(')', 1)[1].split()  # the name may hold spaces and ')'
    ticks = int(after_name[19])  # field 22, starttime: clock ticks after boot
    with open('/proc/uptime') as f:
      uptime = float(f.read().split()[0])
    return time.time() - (uptime - ticks / os.sysconf('SC_CLK_TCK'))
  except (OSError, ValueError, IndexError):
    return _IMPORTED


class StopRequest:
  """Context manager; `requested(step)` says whether to save `step` and stop. Call it after every step.

  budget_min > 0 (train.time_budget) adds a deadline `started` + budget_min minutes (started: a time.time(),
  default now); train asks `over_budget` at log steps, and on one process after every step.
  """

  def __init__(self, budget_min: float = 0.0, started: float | None = None):
    self.signal_name = ''
    self._old = {}
    self._distributed = False
    self.budget_s = float(budget_min) * 60.0 if budget_min and budget_min > 0 else None
    self.started = time.time() if started is None else float(started)
    self._over = False

  def elapsed(self) -> float:
    return time.time() - self.started

  def over_budget(self, work_left_s: float) -> bool:
    """Whether the time spent plus `work_left_s` (the caller's estimate of what the run must still do before
    it can stop: the next log interval, the final validation and save) would pass the budget; once true,
    `requested` says stop. Under several processes every one calls it at the same steps, and process 0's
    clock decides for all."""
    if self.budget_s is None or self._over:
      return self._over
    over = self.elapsed() + max(work_left_s, 0.0) > self.budget_s
    if jax.process_count() > 1:
      over = bool(multihost_utils.broadcast_one_to_all(np.asarray(over, np.int32)))
    if over:
      self._over = True
      self.signal_name = self.signal_name or BUDGET
    return self._over

  @property
  def on_budget(self) -> bool:
    """Whether the stop is the budget's (a signal that came first keeps its name)."""
    return self.signal_name == BUDGET

  def __enter__(self):
    # Several processes (jax.distributed) with JAX's preemption service on: the service owns SIGTERM, and a
    # Python handler would replace its own.
    self._distributed = jax.process_count() > 1 and bool(jax.config.jax_enable_preemption_service)
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
    if self._over:
      return True
    if self._distributed:
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
