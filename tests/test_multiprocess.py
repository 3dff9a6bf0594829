"""Two-process data parallelism on CPU: the same parameters as one process training on the same global batch.

Two subprocesses (one CPU device each) join through jax.distributed on 127.0.0.1 with gloo collectives.
Each reads its own shard of every global batch from the real pipeline (`pipeline.train_dataset` with the
process index and count jax reports), makes global arrays with the real `sharding.to_global`, and runs the
real `steps.train_step` jitted with the mesh shardings the way train.py does (DSRNet alone, to keep three
compiles cheap). The test process runs the same steps on one device with the whole global batch and
compares. (gloo's TCP transport listens on the address the host name resolves to, which jax 0.10 gives no
option to pin; either way both processes run on this host.)

This file is also the workers' script: `python tests/test_multiprocess.py PROCESS_ID PORT OUT.npz`.
"""
import contextlib
import functools
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_PROCESSES = 2
TIMEOUT = 240  # seconds for the whole two-process run (two cold compiles on a 2-core machine)


def _config():
  from dsr_jax.configs import test as test_config  # pylint: disable=g-import-not-at-top
  cfg = test_config.get_config()
  cfg.data.workers = 0
  # DSRNet alone ("w/o CT"): data parallelism does not depend on the phase, and the smaller step compiles
  # in a third of the time in each of the three processes.
  cfg.model.use_denet = False
  return cfg


def train_steps(devices, process_index=None, process_count=None):
  """train.stage1_steps steps, jitted as train.py does. Returns (params, losses, local batches).

  process_index / process_count: None = what jax reports (the multi-process path of the real pipeline).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from dsr_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  from dsr_jax import optim  # pylint: disable=g-import-not-at-top
  from dsr_jax import roles  # pylint: disable=g-import-not-at-top
  from dsr_jax import sharding  # pylint: disable=g-import-not-at-top
  from dsr_jax import state as state_lib  # pylint: disable=g-import-not-at-top
  from dsr_jax import steps  # pylint: disable=g-import-not-at-top
  from dsr_jax.input_pipeline import pipeline  # pylint: disable=g-import-not-at-top

  cfg = _config()
  models = models_lib.build(cfg.model)
  nets = tuple(n for n in ('dsr', 'denet', 'spnet') if getattr(models, n) is not None)
  tx = optim.make(cfg, nets)
  mesh = sharding.make_mesh(devices)
  repl, data_sh = sharding.replicated(mesh), sharding.data_sharded(mesh)
  scale = cfg.model.scale
  create = functools.partial(state_lib.create, models, tx, scale=scale)
  state = jax.jit(create, out_shardings=repl)(jax.random.key(cfg.seed))
  phase = roles.phase_for(roles.make_phases(cfg), roles.NO_TEACHER, cross_task=nets != ('dsr',))
  step = jax.jit(functools.partial(steps.train_step, models=models, tx=tx, phase=phase, loss_cfg=cfg.loss,
                                   scale=scale),
                 in_shardings=(repl, data_sh), out_shardings=(repl, repl), donate_argnums=0)
  it = iter(pipeline.train_dataset(cfg, process_index=process_index, process_count=process_count))
  local = lambda x: np.asarray(x.addressable_data(0))  # replicated: every process holds the whole value
  losses, batches = [], []
  with jax.set_mesh(mesh):
    for _ in range(cfg.train.stage1_steps):
      batch = next(it)
      batches.append(batch)
      state, terms = step(state, sharding.to_global(batch, mesh))
      losses.append(float(local(terms['total'])))
  params = jax.tree.map(local, state.params)
  return params, np.asarray(losses), batches


def _flatten(params, batches):
  import jax  # pylint: disable=g-import-not-at-top
  flat = {f'param/{jax.tree_util.keystr(k)}': v for k, v in jax.tree_util.tree_leaves_with_path(params)}
  for i, b in enumerate(batches):
    flat.update({f'batch{i}/{k}': v for k, v in b.items()})
  return flat


def _worker(process_id: int, port: int, out: str) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}', num_processes=NUM_PROCESSES,
                             process_id=process_id, initialization_timeout=120)
  assert jax.process_count() == NUM_PROCESSES and jax.device_count() == NUM_PROCESSES
  params, losses, batches = train_steps(jax.devices())
  np.savez(out, losses=losses, **_flatten(params, batches))
  jax.distributed.shutdown()  # both processes reach this; avoids the atexit barrier's long timeout


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _env():
  env = {k: v for k, v in os.environ.items() if not k.startswith(('JAX_', 'XLA_', 'TF_'))}
  env.update({'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': '--xla_force_host_platform_device_count=1',
              'TF_CPP_MIN_LOG_LEVEL': '3',
              # As the reference in the test process (fast_compile): every process compiles the same programs
              # with most optimisations off, which cuts the three compiles 2-3x and changes nothing compared.
              'JAX_DISABLE_MOST_OPTIMIZATIONS': '1',
              'PYTHONPATH': os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH', '')]))})
  # Loopback only: a proxy must never see the coordinator's or gloo's traffic.
  for k in ('http_proxy', 'https_proxy', 'grpc_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'GRPC_PROXY'):
    env.pop(k, None)
  return env


@contextlib.contextmanager
def _workers(args, tmp_path, name: str):
  """NUM_PROCESSES runs of this file with args(i), logged to <name><i>.log; killed if still running after."""
  logs = [open(tmp_path / f'{name}{i}.log', 'w') for i in range(NUM_PROCESSES)]
  procs = [subprocess.Popen([sys.executable, __file__, *args(i)], cwd=REPO, env=_env(), stdout=logs[i],
                            stderr=subprocess.STDOUT) for i in range(NUM_PROCESSES)]
  try:
    yield procs
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
    for f in logs:
      f.close()


def test_two_processes_match_one_process(tmp_path):
  import chex  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from conftest import fast_compile  # pylint: disable=g-import-not-at-top  (not in the workers' script path)
  assert jax.process_count() == 1

  port = _free_port()
  outs = [tmp_path / f'process{i}.npz' for i in range(NUM_PROCESSES)]
  with _workers(lambda i: [str(i), str(port), str(outs[i])], tmp_path, 'process') as procs:
    # The one-process reference runs here meanwhile (the pytest process: 8 CPU devices, one used).
    with fast_compile():  # as the workers (JAX_DISABLE_MOST_OPTIMIZATIONS in _env)
      ref_params, ref_losses, ref_batches = train_steps(jax.devices()[:1], process_index=0, process_count=1)
    for p in procs:
      p.wait(timeout=TIMEOUT)
  for i, p in enumerate(procs):
    assert p.returncode == 0, f'process {i} exited {p.returncode}:\n' + (
        tmp_path / f'process{i}.log').read_text()[-4000:]

  res = [dict(np.load(o)) for o in outs]
  # Each process fed its own shard: rows p, p + 2, ... of the one-process global batch (the pipeline slices
  # examples process_index::process_count before batching), so together exactly the same examples.
  for s, ref_batch in enumerate(ref_batches):
    for k, v in ref_batch.items():
      for i in range(NUM_PROCESSES):
        np.testing.assert_array_equal(res[i][f'batch{s}/{k}'], v[i::NUM_PROCESSES], err_msg=f'{s} {k} {i}')
  # Both processes hold the same replicated result, equal to one process's up to summation order.
  ref = _flatten(ref_params, [])
  for r in res:
    np.testing.assert_allclose(r['losses'], ref_losses, rtol=1e-5)
    got = {k: v for k, v in r.items() if k.startswith('param/')}
    assert got.keys() == ref.keys()
    chex.assert_trees_all_close(got, ref, atol=1e-5, rtol=1e-4)
  chex.assert_trees_all_equal({k: v for k, v in res[0].items() if k.startswith('param/')},
                              {k: v for k, v in res[1].items() if k.startswith('param/')})
  # The parameters moved (two real steps), so the comparison above is not between two initial states.
  from dsr_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  from dsr_jax import state as state_lib  # pylint: disable=g-import-not-at-top
  cfg = _config()
  init = _flatten(state_lib.init_params(models_lib.build(cfg.model), jax.random.key(cfg.seed),
                                        cfg.model.scale), [])
  assert any(not np.allclose(init[k], ref[k]) for k in ref if 'dsr' in k)


def _preempt_worker(process_id: int, port: int, out: str) -> None:
  """Steps (a sleep each) under the real lifecycle.StopRequest until it says stop; writes the step."""
  import time  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}', num_processes=NUM_PROCESSES,
                             process_id=process_id, initialization_timeout=120)
  from dsr_jax import lifecycle  # pylint: disable=g-import-not-at-top
  step = 0
  with lifecycle.StopRequest() as stop:
    pathlib.Path(out + '.ready').touch()
    for step in range(1, 100_000):
      time.sleep(0.005)
      if stop.requested(step):
        break
  pathlib.Path(out).write_text(f'{step} {stop.signal_name}')
  jax.distributed.shutdown()


def test_sigterm_on_one_host_stops_every_host_at_the_same_step(tmp_path):
  """Under jax.distributed a preemption notice reaches one host; JAX's preemption service makes every
  process stop at one agreed step (each would otherwise save a different one)."""
  import time  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top
  port = _free_port()
  outs = [tmp_path / f'stop{i}.txt' for i in range(NUM_PROCESSES)]
  with _workers(lambda i: ['preempt', str(i), str(port), str(outs[i])], tmp_path, 'stop') as procs:
    deadline = time.monotonic() + TIMEOUT
    while not all(pathlib.Path(f'{o}.ready').exists() for o in outs):
      assert all(p.poll() is None for p in procs) and time.monotonic() < deadline, 'workers did not start'
      time.sleep(0.1)
    time.sleep(0.5)  # both are stepping
    procs[1].send_signal(signal.SIGTERM)  # the notice reaches one host only
    for p in procs:
      p.wait(timeout=TIMEOUT)
  for i, p in enumerate(procs):
    assert p.returncode == 0, (tmp_path / f'stop{i}.log').read_text()[-3000:]
  got = [o.read_text().split(' ', 1) for o in outs]
  assert got[0][0] == got[1][0] and int(got[0][0]) < 99_999, got  # one agreed step, before the loop's end
  assert all(g[1] == 'preemption notice' for g in got), got


if __name__ == '__main__':
  if sys.argv[1] == 'preempt':
    _preempt_worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
  else:
    _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
