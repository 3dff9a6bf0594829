"""Crash robustness of `python -m dsr_jax.main`: SIGKILL at any point, corrupt checkpoints, a NaN stop.

Every run is a real subprocess on one CPU device, restarted with the same command line. A shared JAX
compilation cache keeps the restarts cheap (compiled code is the same, so results stay bit-identical).
"""
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import chex
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import subprocess_env
from conftest import POISON_SITECUSTOMIZE

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS, EVERY = 12, 3  # checkpoints at 3, 6, 9, 12 (keep 3)
TIMEOUT = 240  # seconds, per training subprocess (a cold compile on 2 cores takes about a minute)


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  return subprocess_env(tmp_path_factory.mktemp('xla_cache'))


def _cmd(workdir, *extra):
  # No per-term gradient diagnostics and no mid-run image summaries: both are logging-only functions compiled
  # beside the train step (they never touch the state), and tracing them cost about a third of every run. The
  # checkpoint, resume and error paths tested here are the same without them (conftest's `ckpt` run, with
  # both on, covers them).
  return [sys.executable, '-m', 'dsr_jax.main', '--config', 'configs/test.py', '--workdir', str(workdir),
          f'--config.train.num_steps={STEPS}', '--config.train.grad_diagnostics=False',
          '--config.train.image_every=100', f'--config.ckpt.every_steps={EVERY}', *extra]


def _run(cmd, env, log: pathlib.Path):
  """Runs to completion; returns (returncode, stdout, stderr)."""
  try:
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)
  except subprocess.TimeoutExpired as e:
    pytest.fail(f'{cmd} did not finish in {TIMEOUT} s:\n{(e.stderr or b"")[-3000:]}')
  log.write_text(p.stdout + '\n--- stderr ---\n' + p.stderr)
  return p.returncode, p.stdout, p.stderr


def _kill_when(cmd, env, log: pathlib.Path, predicate, what: str, poll: float = 0.002):
  """Starts `cmd` and SIGKILLs it at the first moment `predicate()` holds.

  The process is frozen (SIGSTOP) and the predicate checked again before the kill, so the state on disk
  that the test then inspects is exactly the one the process died in (no save can finish in between).
  """
  with open(log, 'w') as f:
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + TIMEOUT
    try:
      while time.monotonic() < deadline:
        if p.poll() is not None:
          pytest.fail(f'run exited ({p.returncode}) before the kill point "{what}"; log {log}:\n'
                      f'{log.read_text()[-3000:]}')
        if predicate():
          p.send_signal(signal.SIGSTOP)
          if predicate():
            p.kill()
            p.wait(timeout=30)
            return
          p.send_signal(signal.SIGCONT)
        time.sleep(poll)
      pytest.fail(f'kill point "{what}" not reached in {TIMEOUT} s; log {log}')
    finally:
      if p.poll() is None:
        p.kill()
        p.wait(timeout=30)


def _steps(workdir) -> list[str]:
  ck = pathlib.Path(workdir) / 'checkpoints'
  return sorted((p.name for p in ck.iterdir()), key=lambda n: (len(n), n)) if ck.is_dir() else []


def _committed(workdir) -> list[int]:
  return sorted(int(n) for n in _steps(workdir) if n.isdigit())


def _saving(workdir, step: int) -> bool:
  """True while step's save is under way with some array data already written (not yet committed)."""
  ck = pathlib.Path(workdir) / 'checkpoints'
  if (ck / str(step)).exists():
    return False
  for tmp in ck.glob(f'{step}.*tmp*'):
    for item in tmp.glob('params*'):
      if item.is_dir() and any(item.iterdir()):
        return True
  return False


def _load(workdir, step: int):
  """(params, role, data) of one checkpoint, read with orbax."""
  ck = pathlib.Path(workdir) / 'checkpoints'
  params = ocp.StandardCheckpointer().restore(ck / str(step) / 'params')
  with ocp.CheckpointManager(ck, options=ocp.CheckpointManagerOptions(read_only=True)) as m:
    r = m.restore(step, args=ocp.args.Composite(role=ocp.args.JsonRestore(), data=ocp.args.JsonRestore()))
  return params, r.role, r.data


def _assert_same_checkpoint(a, b, step: int):
  pa, ra, da = _load(a, step)
  pb, rb, db = _load(b, step)
  chex.assert_trees_all_equal(pa, pb)  # bit-identical parameters
  assert ra == rb, f'step {step}: role state {ra} != {rb}'
  # The grain iterator position after the last consumed batch: equal positions (with equal parameters)
  # mean no batch was skipped or seen twice across the restarts.
  assert da == db, f'step {step}: data iterator state {da} != {db}'


def _snapshot(path) -> dict:
  """{relative path: (size, mtime_ns)} of every file under path but the lock (each run writes its pid)."""
  path = pathlib.Path(path)
  return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in sorted(path.rglob('*')) if p.is_file() and not p.name.startswith('.train.lock')}


def _truncate_largest_params_file(step_dir: pathlib.Path) -> pathlib.Path:
  """Truncates `params`' array data files (orbax/OCDBT keeps those under .../d/) to a third; returns the largest.

  Every one of them, not the largest alone: OCDBT can leave a data file that the manifest no longer references
  (seen: step 9's largest file truncated and the step still restored), and then the checkpoint was not
  unreadable at all. With all of them cut the step is unreadable whatever the layout.
  """
  files = [p for p in (step_dir / 'params').rglob('*') if p.is_file()]
  data = [p for p in files if p.parent.name == 'd'] or files
  target = max(data, key=lambda p: p.stat().st_size)
  for path in data:
    with open(path, 'r+b') as f:
      f.truncate(path.stat().st_size // 3)
  return target


# absl / TF C++ log lines ('I1121 14:42:17.326519 ...', 'I0000 00:00:...') and TF's logging preamble.
_LOG_LINE = re.compile(r'^([IWEF]\d{4} \d\d:\d\d:\d\d|WARNING: All log messages before absl)')


def _user_lines(stderr: str) -> list[str]:
  """stderr without log lines: what a user is meant to read."""
  return [l for l in stderr.splitlines() if l.strip() and not _LOG_LINE.match(l)]


@pytest.fixture(scope='module')
def reference(tmp_path_factory, env):
  """One uninterrupted run: checkpoints 6, 9, 12."""
  wd = tmp_path_factory.mktemp('reference')
  rc, out, err = _run(_cmd(wd), env, wd.parent / 'reference.log')
  assert rc == 0, err[-3000:]
  assert f'done: step {STEPS}' in out
  assert _committed(wd) == [6, 9, 12]
  return wd


def test_sigkill_at_two_points_then_resume_is_bit_identical(reference, env, tmp_path):
  # Two kill points, one per distinct state on disk: a save half written (orbax's temporary directory left
  # behind) and a save just committed. A third point (mid-save of the final step 12) hit the same path as the
  # first (a stale temporary directory of the very step the resumed run saves again) and cost a whole run.
  wd = tmp_path / 'work'
  cmd = _cmd(wd)

  # 1. During the save of step 6: its arrays are half written in orbax's temporary directory.
  _kill_when(cmd, env, tmp_path / 'run1.log', lambda: _saving(wd, 6), 'mid-save of step 6')
  assert _committed(wd) == [3], _steps(wd)
  # The killed run's lock file stays; the kernel dropped its lock, so the restarts below are not refused.
  assert (wd / '.train.lock').is_file()
  assert any('tmp' in n for n in _steps(wd)), _steps(wd)  # the interrupted save is really there

  # 2. Right after step 6 is committed, while steps 7.. train and orbax finalises.
  _kill_when(cmd, env, tmp_path / 'run2.log', lambda: (wd / 'checkpoints' / '6').is_dir(),
             'just after the commit of step 6')
  assert 'resumed from step 3' in (tmp_path / 'run2.log').read_text()
  assert max(_committed(wd)) == 6, _steps(wd)

  # The same command once more finishes the run.
  rc, out, err = _run(cmd, env, tmp_path / 'run3.log')
  assert rc == 0, err[-3000:]
  assert 'resumed from step 6' in out and f'done: step {STEPS}' in out
  assert _steps(wd) == ['6', '9', '12'], 'stale temporary checkpoint directories left behind'
  for step in (6, 9, 12):  # 6 from the second run segment, 9 and 12 from the third
    _assert_same_checkpoint(reference, wd, step)


def test_truncated_latest_checkpoint_falls_back_to_previous(reference, env, tmp_path):
  wd = tmp_path / 'work'
  shutil.copytree(reference, wd)
  _truncate_largest_params_file(wd / 'checkpoints' / '12')

  rc, out, err = _run(_cmd(wd), env, tmp_path / 'run.log')
  assert rc == 0, err[-3000:]
  warning = [l for l in out.splitlines() if l.startswith('warning:')]
  assert len(warning) == 1 and 'step 12' in warning[0] and 'step 9' in warning[0], out
  assert 'Traceback' not in out + err
  # Resumed from 9, not from scratch (which, deterministic, would end in the same parameters too).
  assert 'resumed from step 9' in out
  _assert_same_checkpoint(reference, wd, 12)
  # The unreadable checkpoint is kept for inspection, out of the way of the resumed run.
  assert (wd / 'checkpoints_unreadable' / '12' / 'params').is_dir()


def test_every_checkpoint_unreadable_is_one_line_error(reference, env, tmp_path):
  wd = tmp_path / 'work'
  shutil.copytree(reference, wd)
  for step in _committed(wd):
    _truncate_largest_params_file(wd / 'checkpoints' / str(step))
  before = _snapshot(wd)

  rc, out, err = _run(_cmd(wd), env, tmp_path / 'run.log')
  assert rc == 2, (rc, err[-3000:])
  lines = _user_lines(err)
  assert len(lines) == 1 and lines[0].startswith('error:'), lines
  assert str(wd / 'checkpoints') in lines[0], lines[0]
  assert all(f' {s}' in lines[0] for s in ('6', '9', '12')), lines[0]
  assert 'Traceback' not in out + err
  # Nothing trained, written or moved: it did not silently start from scratch.
  assert _snapshot(wd) == before


def test_nan_stop_keeps_last_good_checkpoint_and_restart_finishes(reference, env, tmp_path):
  wd = tmp_path / 'work'
  inject = tmp_path / 'inject'
  inject.mkdir()
  (inject / 'sitecustomize.py').write_text(POISON_SITECUSTOMIZE)
  poisoned = dict(env, PYTHONPATH=os.pathsep.join([str(inject), env['PYTHONPATH']]), DSR_TEST_POISON_STEP='7')
  rc, out, err = _run(_cmd(wd), poisoned, tmp_path / 'poisoned.log')
  assert rc == 2, (rc, err[-3000:])
  lines = _user_lines(err)
  assert len(lines) == 1 and lines[0].startswith('error:'), lines
  assert 'step 7' in lines[0] and "'total'" in lines[0], lines[0]
  assert 'Traceback' not in out + err
  assert _steps(wd) == ['3', '6'], 'a checkpoint at or after the poisoned step was written'
  good = _snapshot(wd / 'checkpoints' / '6')

  rc, out, err = _run(_cmd(wd), env, tmp_path / 'restart.log')
  assert rc == 0, err[-3000:]
  assert 'resumed from step 6' in out and f'done: step {STEPS}' in out
  # The poisoned run left no trace: the restart reproduces the uninterrupted run exactly.
  for step in (9, 12):
    _assert_same_checkpoint(reference, wd, step)
  # Checkpoint 6 itself was only read (kept by keep=3 and never rewritten).
  assert _snapshot(wd / 'checkpoints' / '6') == good
  np.testing.assert_equal(_committed(wd), [6, 9, 12])


def _user_out(out: str) -> list[str]:
  return [l for l in out.splitlines() if not l.startswith('step ')]  # the progress lines aside


def test_sigterm_saves_the_step_in_flight_and_the_same_command_resumes(reference, env, tmp_path):
  """A preemption notice mid-run: that step is saved, exit 0; the resumed run redoes no step and ends
  bit-identical to the uninterrupted one. A second run started meanwhile on the workdir is refused."""
  wd = tmp_path / 'work'
  # No periodic checkpoint before the end (every 100): the only one before 12 is the preemption's.
  cmd = [*_cmd(wd)[:-1], '--config.ckpt.every_steps=100', '--config.train.log_every=1']
  log = tmp_path / 'run1.log'
  with open(log, 'w') as f:
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    try:
      deadline = time.monotonic() + TIMEOUT
      while f'step 2/{STEPS}' not in log.read_text():
        assert p.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.01)
      p.send_signal(signal.SIGSTOP)  # mid-run, and held there while this process tries the workdir's lock
      # This process is the second run (what main does, without paying for another interpreter start).
      from dsr_jax import lifecycle  # pylint: disable=g-import-not-at-top
      from dsr_jax.errors import UserError  # pylint: disable=g-import-not-at-top
      with pytest.raises(UserError) as refused:
        with lifecycle.workdir_lock(str(wd)):
          pass
      assert str(wd) in str(refused.value) and f'pid {p.pid}' in str(refused.value), refused.value
      p.send_signal(signal.SIGTERM)
      p.send_signal(signal.SIGCONT)
      assert p.wait(timeout=TIMEOUT) == 0, log.read_text()[-3000:]
    finally:
      if p.poll() is None:
        p.kill()
  text = log.read_text()
  stopped = re.findall(r'^preempted at step (\d+) \(SIGTERM\); checkpoint saved', text, re.M)
  assert len(stopped) == 1, text[-3000:]
  n = int(stopped[0])
  assert 2 <= n < STEPS and _committed(wd) == [n], (n, _steps(wd))
  assert 'Traceback' not in text and 'done:' not in text

  rc, out, err = _run(cmd, env, tmp_path / 'run2.log')
  assert rc == 0, err[-3000:]
  assert f'resumed from step {n}' in out and f'done: step {STEPS}' in out
  first = re.search(r'^step (\d+)/', out, re.M)
  assert first and int(first.group(1)) == n + 1, out[:2000]  # no step redone
  _assert_same_checkpoint(reference, wd, STEPS)


_FULL_DISK = """
import errno, os
_target = os.environ['DSR_TEST_FULL_DISK']
_mkdir = os.mkdir
def mkdir(path, *args, **kwargs):
  # Where a full disk (or a directory turned read-only) first bites orbax: creating a step's directory.
  if _target in os.fspath(path):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))
  return _mkdir(path, *args, **kwargs)
os.mkdir = mkdir
"""


def test_full_disk_at_a_save_is_one_line_and_the_same_command_resumes(reference, env, tmp_path):
  inject = tmp_path / 'inject'
  inject.mkdir()
  (inject / 'sitecustomize.py').write_text(_FULL_DISK)
  full = dict(env, PYTHONPATH=os.pathsep.join([str(inject), env['PYTHONPATH']]),
              DSR_TEST_FULL_DISK=os.path.join('checkpoints', '9.'))
  wd = tmp_path / 'work'
  t0 = time.monotonic()
  rc, out, err = _run(_cmd(wd), full, tmp_path / 'full.log')
  assert rc == 2, (rc, err[-3000:])
  lines = _user_lines(err)
  assert len(lines) == 1 and lines[0].startswith('error:'), lines
  assert str(wd / 'checkpoints') in lines[0] and 'No space left on device' in lines[0], lines[0]
  assert 'Traceback' not in out + err
  assert time.monotonic() - t0 < TIMEOUT / 2  # it ends, not waits for orbax's stalled writer threads
  # The checkpoints before the failure are intact and readable.
  assert _committed(wd) == [3, 6], _steps(wd)
  _assert_same_checkpoint(reference, wd, 6)

  rc, out, err = _run(_cmd(wd), env, tmp_path / 'resumed.log')  # space is back
  assert rc == 0, err[-3000:]
  assert 'resumed from step 6' in out and f'done: step {STEPS}' in out
  for step in (9, 12):
    _assert_same_checkpoint(reference, wd, step)
