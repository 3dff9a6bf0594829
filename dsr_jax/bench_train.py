"""The compiled-step rows of `python -m dsr_jax.bench`: train, infer and bf16, with their timing, FLOP count and
profile. The CLI is bench.py; compare and the peer are in bench_compare.py.
"""
import argparse
import collections
import functools
import glob
import gzip
import itertools
import json
import os
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from dsr_jax import bench_common
from dsr_jax import errors
from dsr_jax import models as models_lib
from dsr_jax import optim
from dsr_jax import roles
from dsr_jax import state as state_lib
from dsr_jax import steps
from dsr_jax import xla_options
from dsr_jax.configs import default

# The DSRNet-alone step ("w/o CT", configs/cpu_real.py:x4,wo_ct): DENet and SPNet are not built, and the phase
# is the trainer's own 'dsr_only'. The peer's counterpart is --mode train_dsr.
DSR_ONLY = 'dsr_only'
PHASES = ('stage1', 'dsr_student', 'de_student', 'mutual', DSR_ONLY)

# Peak dense throughput (FLOP/s) by device kind, for MFU; CPU peaks are not meaningful and are left out.
PEAK_FLOPS = {
    ('NVIDIA H100 80GB HBM3', 'bfloat16'): 989e12, ('NVIDIA H100 80GB HBM3', 'float32'): 494e12,
    ('NVIDIA H200', 'bfloat16'): 989e12, ('NVIDIA H200', 'float32'): 494e12,
    ('NVIDIA A100-SXM4-40GB', 'bfloat16'): 312e12, ('NVIDIA A100-SXM4-40GB', 'float32'): 156e12,
    ('NVIDIA A100-SXM4-80GB', 'bfloat16'): 312e12, ('NVIDIA A100-SXM4-80GB', 'float32'): 156e12,
}


def add_run_args(p: argparse.ArgumentParser) -> None:
  p.add_argument('--affinity-pool', type=errors.positive_int, default=32)
  p.add_argument('--batch', type=errors.positive_int, default=4)
  p.add_argument('--hr', type=errors.positive_int, default=128)
  p.add_argument('--hr-hw', default='', metavar='HxW',
                 help='non-square HR size for infer, e.g. 1080x1320 (overrides --hr; both divisible by --scale)')
  p.add_argument('--iters', type=errors.positive_int, default=5)
  p.add_argument('--phase', default='dsr_student', choices=PHASES,
                 help=f"the train step's phase; {DSR_ONLY}: DSRNet alone, L1 plus side supervision (--side-weight), "
                      "as configs/cpu_real.py:x4,wo_ct trains it and the peer's --mode train_dsr")
  # The peer's flags for rules 1-4 of docs/method.md; its first version is --teacher-update frozen
  # --affinity raw --side-weight 0 --no-detach-uncertainty.
  p.add_argument('--teacher-update', default='task', choices=['task', 'frozen'])
  p.add_argument('--affinity', default='cosine', choices=['cosine', 'raw'])
  p.add_argument('--side-weight', type=float, default=1.0)
  p.add_argument('--no-detach-uncertainty', action='store_true')
  p.add_argument('--profile', default='', metavar='DIR',
                 help='after timing, trace 2 more calls with jax.profiler into DIR and add the top ops')


def bench_config(a):
  c = default.get_config()
  c.model.update(bench_common.model_config(a))
  if a.phase == DSR_ONLY:
    c.model.use_denet = False
    c.model.use_spnet = False
  c.loss.affinity_pool = a.affinity_pool
  c.train.teacher_update = a.teacher_update
  c.loss.affinity = a.affinity
  c.loss.side_weight = a.side_weight
  c.loss.detach_uncertainty = not a.no_detach_uncertainty
  c.train.batch_size = a.batch
  c.data.crop = a.hr
  for net in ('dsr', 'denet', 'spnet'):  # the peer's optimiser: plain Adam 1e-4, no clipping, no warm-up
    c.optim[net].update(lr=1e-4, warmup_steps=0, schedule='constant', grad_clip=0.0)
  return c


def build_step(c, phase_name: str, scale: int):
  """(initial state, train_step with everything but (state, batch) bound) for one phase of config c: the
  networks, optimizers and phase the trainer builds for it."""
  models = models_lib.build(c.model)
  tx = optim.make(c, tuple(models.nets()))
  st = jax.jit(functools.partial(state_lib.create, models, tx, scale=scale))(jax.random.key(0))
  fn = functools.partial(steps.train_step, models=models, tx=tx, phase=roles.make_phases(c)[phase_name],
                         loss_cfg=c.loss, scale=scale)
  return st, fn


def hr_hw(a) -> tuple[int, int]:
  if not getattr(a, 'hr_hw', ''):
    h = w = a.hr
  else:
    try:
      h, w = (int(v) for v in a.hr_hw.lower().split('x'))
    except ValueError:
      raise errors.UserError(f'--hr-hw {a.hr_hw!r}: expected HxW, e.g. 1080x1320') from None
  if min(h, w) < a.scale or h % a.scale or w % a.scale:
    raise errors.UserError(f'--hr-hw/--hr {h}x{w}: expected both sides positive multiples of --scale {a.scale}')
  return h, w


def inputs(a, with_rgb=True):
  k = jax.random.split(jax.random.key(0), 3)
  h, w = hr_hw(a)
  hr = jax.random.uniform(k[0], (a.batch, h, w, 1))
  b = {'hr_depth': hr, 'lr_depth': jax.random.uniform(k[1], (a.batch, h // a.scale, w // a.scale, 1)),
       'valid': jnp.ones_like(hr)}
  if with_rgb:
    b['rgb'] = jax.random.uniform(k[2], (a.batch, h, w, 3))
  return b


def timed(compiled, args, iters):
  """(median seconds per call after one warm-up call, the args to call with next): a returned state
  replaces the donated argument 0."""
  times = []
  for i in range(iters + 1):
    t = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    if i:
      times.append(time.perf_counter() - t)
    if isinstance(out, tuple):
      args = (out[0],) + tuple(args[1:])
  return statistics.median(times), args


_NOT_OPS = ('PjitFunction', 'end:', 'CommonPjRt', 'SlinkyThreadPool', 'ParseArguments')


def top_ops(trace_dir: str, calls: int, k: int = 15) -> list[dict]:
  """The k XLA ops with the most time in the newest trace under trace_dir, in ms per call.

  Times are summed over threads (ops on different threads overlap), so they rank ops; they do not add
  up to the wall time.
  """
  files = glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'), recursive=True)
  if not files:
    return []
  with gzip.open(max(files, key=os.path.getmtime)) as f:
    events = json.load(f).get('traceEvents', [])
  total = collections.Counter()
  for e in events:
    name = e.get('name', '')
    # Host-side frames ('$file.py:line ...') and runtime bookkeeping are not XLA ops.
    if e.get('ph') == 'X' and 'dur' in e and not name.startswith('$') and 'Thunk' not in name \
        and not name.startswith(_NOT_OPS):
      total[name] += e['dur']
  return [{'op': n, 'ms_per_call': round(t / calls / 1e3, 2)} for n, t in total.most_common(k)]


def _flops(stage):
  try:
    cost = stage.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get('flops', 0.0)) if cost else None
  except Exception:  # pylint: disable=broad-except  (not every backend or jax version offers it)
    return None


def flops_on_cpu(a) -> float | None:
  """The same command's model FLOPs, counted by a CPU process: backends reached through a PJRT plugin (the
  CUDA one) cannot cost-analyse an unoptimised module, and the arithmetic does not depend on the backend."""
  try:
    return bench_common.run_json([sys.executable, '-m', 'dsr_jax.bench', *a.argv, '--flops-only'],
                          env=dict(os.environ, JAX_PLATFORMS='cpu'), timeout=600).get('flops')
  except (RuntimeError, subprocess.TimeoutExpired):
    return None


def report(a, fn, args, donate=()):
  t = time.perf_counter()
  lowered = jax.jit(fn, donate_argnums=donate,
                    compiler_options=xla_options.compiler_options(a.cpu_convs)).lower(*args)
  # MFU counts the model's arithmetic: the HLO before optimisation. After it, XLA:GPU has turned convolutions
  # into cuDNN custom calls that its cost analysis counts as zero (measured on an H200: 57 GFLOP for the b16
  # step whose unoptimised HLO holds about 3300). On CPU the two counts agree at the paper's sizes.
  flops = _flops(lowered)
  if a.flops_only:
    return {'flops': flops}
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t
  flops_compiled = _flops(compiled)
  if flops is None and jax.devices()[0].platform != 'cpu' and not a.no_cpu_flops:
    flops = flops_on_cpu(a)
  step_s, args = timed(compiled, args, a.iters)
  profile = None
  if getattr(a, 'profile', ''):
    with jax.profiler.trace(a.profile):
      _, args = timed(compiled, args, 1)  # two calls
    profile = top_ops(a.profile, 2)
  dev = jax.devices()[0]
  peak = PEAK_FLOPS.get((dev.device_kind, a.dtype))
  return {'impl': 'jax', 'device': f'{dev.platform}:{dev.device_kind}', 'dtype': a.dtype, 'batch': a.batch,
          'hr': a.hr, 'hr_hw': list(hr_hw(a)), 'scale': a.scale, 'stages': a.stages, 'step_s': step_s,
          'images_per_s': a.batch / step_s,
          'compile_s': compile_s, 'flops': flops, 'flops_compiled': flops_compiled,
          'cpu_convs': a.cpu_convs if dev.platform == 'cpu' else None,
          'mfu': (flops / step_s / peak) if (flops and peak) else None, 'jax': jax.__version__,
          **({'profile_dir': a.profile, 'top_ops': profile} if profile is not None else {})}


def cmd_train(a) -> dict:
  """One jitted, state-donating train step of the given phase (default: stage 2, DSRNet student)."""
  st, fn = build_step(bench_config(a), a.phase, a.scale)
  # The w/o CT batch has no RGB: nothing reads it, and the trainer's pipeline would not need to make it.
  out = report(a, fn, (st, inputs(a, with_rgb=a.phase != DSR_ONLY)), donate=(0,))
  params = {k: bench_common.count(v) for k, v in st.params.items()}
  out.update(mode='train', phase=a.phase, params=params,
             teacher_update=a.teacher_update, teacher_input=a.teacher_input, affinity=a.affinity,
             side_weight=a.side_weight, detach_uncertainty=not a.no_detach_uncertainty)
  return out


def cmd_infer(a) -> dict:
  """DSRNet test-time forward pass (no side heads, no RGB)."""
  models = models_lib.build(bench_common.model_config(a))
  params = state_lib.init_params(models, jax.random.key(0), a.scale)['dsr']
  lr = inputs(a, with_rgb=False)['lr_depth']
  fn = lambda p, x: models.dsr.apply({'params': p}, x)
  out = report(a, fn, (params, lr))
  out.update(mode='infer')
  return out


def cmd_bf16(a) -> dict:
  """The same training run in float32 and in bfloat16 compute (float32 params and optimizer), from the same
  initial state on the same batches (the embedded synthetic data): do the loss curves track?"""
  # grain (and TensorFlow where installed) load with the pipeline: only this row reads data.
  from dsr_jax.input_pipeline import pipeline  # pylint: disable=g-import-not-at-top  (see above)
  c = bench_config(a)
  c.data.name = 'synthetic_rgbd'
  c.data.synthetic.size = (max(a.hr, 32),) * 2
  for net in ('dsr', 'denet', 'spnet'):
    c.optim[net].lr = a.lr
  batches = [jax.device_put(b) for b in itertools.islice(iter(pipeline.train_dataset(c)), a.steps)]
  curves, wall = {}, {}
  for dtype in ('float32', 'bfloat16'):
    c.model.dtype = dtype
    st, fn = build_step(c, a.phase, a.scale)
    step = jax.jit(fn, donate_argnums=0, compiler_options=xla_options.compiler_options(a.cpu_convs))
    t = time.perf_counter()
    totals = []
    for b in batches:
      st, terms = step(st, b)
      totals.append(terms['total'])
    curves[dtype] = np.asarray(jax.device_get(jnp.stack(totals)), np.float64)
    wall[dtype] = time.perf_counter() - t
  win = max(a.steps // 20, 1)
  smooth = {k: np.convolve(v, np.ones(win) / win, mode='valid') for k, v in curves.items()}
  rel = np.abs(smooth['bfloat16'] - smooth['float32']) / np.maximum(np.abs(smooth['float32']), 1e-12)
  every = max(a.steps // 50, 1)
  dev = jax.devices()[0]
  return {'mode': 'bf16', 'device': f'{dev.platform}:{dev.device_kind}', 'phase': a.phase, 'steps': a.steps,
          'batch': a.batch, 'hr': a.hr, 'scale': a.scale, 'lr': a.lr, 'smoothing_window': win,
          'max_rel_dev': float(rel.max()), 'final_rel_dev': float(rel[-1]),
          'tracks': bool(rel.max() <= a.tolerance), 'tolerance': a.tolerance,
          'first_loss': {k: float(v[0]) for k, v in curves.items()},
          'final_loss_smoothed': {k: float(v[-1]) for k, v in smooth.items()},
          'wall_s_with_compile': wall, 'curve_every': every,
          'curves': {k: [round(float(x), 6) for x in v[::every]] for k, v in curves.items()}}


def add_parsers(sub) -> None:
  for name, fn, helptext in (('train', cmd_train, 'one jitted train step'),
                             ('infer', cmd_infer, 'DSRNet inference')):
    p = sub.add_parser(name, help=helptext)
    bench_common.add_model_args(p)
    add_run_args(p)
    p.add_argument('--flops-only', action='store_true',
                   help="only count the step's FLOPs from its unoptimised HLO (no compile, no timing; null off "
                        'CPU, where the CUDA plugin cannot: run it with JAX_PLATFORMS=cpu)')
    p.add_argument('--no-cpu-flops', action='store_true',
                   help='off CPU, leave flops unset rather than count them in a CPU subprocess (compare does: '
                        'its ratio needs no FLOPs, and a lease is short)')
    p.set_defaults(fn=fn)
  p = sub.add_parser('bf16', help='loss curves of the same run in float32 and bfloat16 compute')
  bench_common.add_model_args(p)
  add_run_args(p)
  p.add_argument('--steps', type=errors.positive_int, default=500)
  p.add_argument('--lr', type=float, default=1e-4)
  p.add_argument('--tolerance', type=float, default=0.05,
                 help="largest relative gap of the smoothed curves still called 'tracks'")
  p.set_defaults(fn=cmd_bf16, phase='stage1')
