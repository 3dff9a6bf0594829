"""train.time_budget: the budget rule, and a real `python -m dsr_jax.main` process that stops on its budget and
resumes exactly when the same command runs again with a larger one."""
import os
import pathlib
import re
import subprocess
import sys
import time

import chex
import orbax.checkpoint as ocp
import pytest

from conftest import subprocess_env

from dsr_jax import lifecycle

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 24
SLEEP = 0.5  # seconds per batch in the budgeted run: it cannot reach STEPS within STEPS * SLEEP seconds
TIMEOUT = 300


def test_budget_rule_counts_time_spent_plus_work_left():
  stop = lifecycle.StopRequest(budget_min=1.0, started=time.time() - 50)
  assert not stop.over_budget(5.0) and not stop.requested(3)  # 50 + 5 < 60
  assert stop.over_budget(15.0) and stop.requested(3)  # 50 + 15 > 60
  assert stop.on_budget and stop.signal_name == lifecycle.BUDGET
  assert stop.over_budget(0.0)  # a decision once made stands
  unlimited = lifecycle.StopRequest(budget_min=0.0, started=time.time() - 1e6)
  assert not unlimited.over_budget(1e6) and not unlimited.requested(1)


def test_process_start_is_this_process():
  # Counted from the interpreter's start: before this test ran, after the machine booted.
  assert 0 < time.time() - lifecycle.process_start() < 24 * 3600 * 365


@pytest.mark.parametrize('value', [-1.0, float('nan'), float('inf')])
def test_time_budget_must_be_a_finite_non_negative_number(value):
  from dsr_jax import config_lib
  from dsr_jax.configs import test as test_config
  from dsr_jax.errors import ConfigError
  cfg = test_config.get_config()
  cfg.train.time_budget = value
  with pytest.raises(ConfigError, match='train.time_budget'):
    config_lib.check_fields(cfg)


_SLOW_BATCHES = """
import os, sys, time
sys.path.insert(0, {repo!r})
from dsr_jax import sharding
_real = sharding.to_global
def to_global(batch, mesh):
  time.sleep(float(os.environ['DSR_TEST_BATCH_SLEEP']))
  return _real(batch, mesh)
sharding.to_global = to_global
"""


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  return subprocess_env(tmp_path_factory.mktemp('xla_cache'))


def _cmd(workdir, budget):
  return [sys.executable, '-m', 'dsr_jax.main', '--config', 'configs/test.py', '--workdir', str(workdir),
          f'--config.train.num_steps={STEPS}', '--config.train.log_every=2', '--config.ckpt.every_steps=100',
          '--config.train.grad_diagnostics=False', '--config.train.image_every=100',
          f'--config.train.time_budget={budget}']


def _run(cmd, env):
  p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)
  assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-3000:])
  assert 'Traceback' not in p.stdout + p.stderr, p.stderr[-3000:]
  return p.stdout


def _steps(d: pathlib.Path):
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def _restore(wd, step):
  with ocp.CheckpointManager(wd / 'checkpoints', options=ocp.CheckpointManagerOptions(read_only=True)) as m:
    r = m.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(),
                                                opt_state=ocp.args.StandardRestore(),
                                                role=ocp.args.JsonRestore(), data=ocp.args.JsonRestore()))
  return {'params': r.params, 'opt_state': r.opt_state, 'role': r.role, 'data': r.data}


@pytest.mark.slow
def test_a_run_stops_on_its_budget_and_a_larger_budget_resumes_exactly(env, tmp_path):
  """Three real processes: an unbudgeted reference; a run whose batches are slowed (a sitecustomize sleeps in
  sharding.to_global) under a budget of STEPS * SLEEP seconds, which it cannot finish in, so it stops on its
  budget; the same command with a larger budget, which resumes and ends bit-identical to the reference."""
  ref = tmp_path / 'ref'
  out = _run(_cmd(ref, 0), env)
  assert f'done: step {STEPS}' in out

  wd = tmp_path / 'work'
  inject = tmp_path / 'inject'
  inject.mkdir()
  (inject / 'sitecustomize.py').write_text(_SLOW_BATCHES.format(repo=str(REPO)))
  slow = dict(env, PYTHONPATH=os.pathsep.join([str(inject), env['PYTHONPATH']]), DSR_TEST_BATCH_SLEEP=str(SLEEP))
  budget = STEPS * SLEEP / 60
  out = _run(_cmd(wd, budget), slow)
  lines = re.findall(r'^stopped on its time budget at step (\d+)/(\d+) .*$', out, re.M)
  assert len(lines) == 1, out[-3000:]
  n = int(lines[0][0])
  assert 1 <= n < STEPS, out[-3000:]  # before the end
  line = next(l for l in out.splitlines() if l.startswith('stopped on its time budget'))
  assert str(wd / 'checkpoints') in line and str(wd / 'checkpoints_best') in line
  assert '--config.train.time_budget' in line and f'resumes from step {n}' in line
  assert 'done:' not in out and 'preempted' not in out
  # The step is saved, and the final validation kept it as the best (the only validation of the run).
  assert _steps(wd / 'checkpoints') == [n] and _steps(wd / 'checkpoints_best') == [n]
  assert re.search(rf'^step {n}: validation MAD .*best so far$', out, re.M), out[-3000:]

  out = _run(_cmd(wd, 30), env)
  assert f'resumed from step {n}' in out and f'done: step {STEPS}' in out, out[-3000:]
  first = re.search(r'^step (\d+)/', out, re.M)
  assert first and int(first.group(1)) == n + 2 - n % 2, out[:2000]  # the next log step: no step redone
  chex.assert_trees_all_equal(_restore(ref, STEPS), _restore(wd, STEPS))
