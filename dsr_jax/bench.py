"""Benchmarks: `python -m dsr_jax.bench {params,dsrnet,train,infer,bf16,compare,pipeline} ...`; one JSON line each.

Flags follow ../shared/peers/torch_ctkt.py so the same command line can be given to both.
"""
import argparse
import importlib.util
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections

from dsr_jax import errors
from dsr_jax import xla_options


# The PyTorch peer, beside the checkout in the developers' layout; pass --peer for another location.
PEER = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    'shared', 'peers', 'torch_ctkt.py')


def add_model_args(p: argparse.ArgumentParser) -> None:
  p.add_argument('--scale', type=int, default=4)
  p.add_argument('--stages', type=int, default=4)
  p.add_argument('--channels', type=int, default=64)
  p.add_argument('--feat', type=int, default=256)
  p.add_argument('--de-blocks', type=int, default=2)
  p.add_argument('--bp-impl', default='polyphase', choices=['polyphase', 'reference'])
  p.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'])
  p.add_argument('--cpu-convs', default='eigen', choices=xla_options.CPU_CONVOLUTIONS,
                 help='XLA:CPU convolution library (config field cpu_convolutions); ignored off CPU')
  p.add_argument('--teacher-input', default='rgb', choices=['rgb', 'rgbd'],
                 help='model.teacher_input: what DENet sees (docs/method.md, rule 5)')


def model_config(a) -> ml_collections.ConfigDict:
  """The default config's model section with the benchmark's sizes (one place for every other default)."""
  from dsr_jax.configs import default  # pylint: disable=g-import-not-at-top
  m = default.get_config().model
  m.update(dict(scale=a.scale, stages=a.stages, channels=a.channels, feat=a.feat, de_blocks=a.de_blocks,
                bp_impl=a.bp_impl, dtype=a.dtype, teacher_input=a.teacher_input))
  return m


def count(tree) -> int:
  return int(sum(x.size for x in jax.tree.leaves(tree)))


def abstract_params(models, scale: int):
  """Parameter shapes via eval_shape of the training init: nothing is computed or allocated."""
  from dsr_jax import state as state_lib  # pylint: disable=g-import-not-at-top
  return jax.eval_shape(lambda: state_lib.init_params(models, jax.random.key(0), scale))


def cmd_params(a) -> dict:
  from dsr_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  models = models_lib.build(model_config(a))
  params = abstract_params(models, a.scale)
  return {'params': {k: count(v) for k, v in params.items()}, 'scale': a.scale, 'stages': a.stages,
          'channels': a.channels, 'feat': a.feat, 'de_blocks': a.de_blocks, 'teacher_input': a.teacher_input}


def _median_time(fn, iters: int) -> float:
  times = []
  for _ in range(iters):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def _load_peer(path: str):
  spec = importlib.util.spec_from_file_location('torch_ctkt', path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def cmd_dsrnet(a) -> dict:
  """DSRNet forward+backward (L1 loss) per back-projection form, and the peer's DSRNet, in one run."""
  from dsr_jax.models.dsrnet import DSRNet  # pylint: disable=g-import-not-at-top
  key = jax.random.key(0)
  lr = jax.random.uniform(key, (a.batch, a.hr // a.scale, a.hr // a.scale, 1))
  hr = jax.random.uniform(jax.random.key(1), (a.batch, a.hr, a.hr, 1))
  out = {'batch': a.batch, 'hr': a.hr, 'scale': a.scale, 'stages': a.stages, 'iters': a.iters,
         'device': jax.devices()[0].device_kind, 'step_s': {}}
  for impl in a.impls.split(','):
    m = DSRNet(scale=a.scale, channels=a.channels, feat=a.feat, stages=a.stages, impl=impl)
    params = m.init(key, lr, train=True)
    fb = jax.jit(jax.value_and_grad(lambda p: jnp.abs(m.apply(p, lr) - hr).mean()),
                 compiler_options=xla_options.compiler_options(a.cpu_convs))
    jax.block_until_ready(fb(params))  # compile + warm-up, excluded
    out['step_s'][impl] = _median_time(lambda: jax.block_until_ready(fb(params)), a.iters)
  if a.peer and importlib.util.find_spec('torch') is not None and os.path.exists(a.peer):
    import torch  # pylint: disable=g-import-not-at-top
    peer = _load_peer(a.peer)
    net = peer.DSRNet(a.scale, a.channels, a.feat, a.stages)
    tlr = torch.rand(a.batch, 1, a.hr // a.scale, a.hr // a.scale)
    thr = torch.rand(a.batch, 1, a.hr, a.hr)

    def step():
      net.zero_grad(set_to_none=True)
      (net(tlr, with_sides=False)[0] - thr).abs().mean().backward()
    step()
    out['step_s']['torch'] = _median_time(step, a.iters)
    out['torch'] = torch.__version__
  return out


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
  p.add_argument('--phase', default='dsr_student', choices=['stage1', 'dsr_student', 'de_student', 'mutual'])
  # The peer's flags for rules 1-4 of docs/method.md; its first version is --teacher-update frozen
  # --affinity raw --side-weight 0 --no-detach-uncertainty.
  p.add_argument('--teacher-update', default='task', choices=['task', 'frozen'])
  p.add_argument('--affinity', default='cosine', choices=['cosine', 'raw'])
  p.add_argument('--side-weight', type=float, default=1.0)
  p.add_argument('--no-detach-uncertainty', action='store_true')
  p.add_argument('--profile', default='', metavar='DIR',
                 help='after timing, trace 2 more calls with jax.profiler into DIR and add the top ops')


def _bench_config(a):
  from dsr_jax.configs import default  # pylint: disable=g-import-not-at-top
  c = default.get_config()
  c.model.update(model_config(a))
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


def _hr_hw(a) -> tuple[int, int]:
  from dsr_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  if not getattr(a, 'hr_hw', ''):
    h = w = a.hr
  else:
    try:
      h, w = (int(v) for v in a.hr_hw.lower().split('x'))
    except ValueError:
      raise UserError(f'--hr-hw {a.hr_hw!r}: expected HxW, e.g. 1080x1320') from None
  if min(h, w) < a.scale or h % a.scale or w % a.scale:
    raise UserError(f'--hr-hw/--hr {h}x{w}: expected both sides positive multiples of --scale {a.scale}')
  return h, w


def _inputs(a, with_rgb=True):
  k = jax.random.split(jax.random.key(0), 3)
  h, w = _hr_hw(a)
  hr = jax.random.uniform(k[0], (a.batch, h, w, 1))
  b = {'hr_depth': hr, 'lr_depth': jax.random.uniform(k[1], (a.batch, h // a.scale, w // a.scale, 1)),
       'valid': jnp.ones_like(hr)}
  if with_rgb:
    b['rgb'] = jax.random.uniform(k[2], (a.batch, h, w, 3))
  return b


def _timed(compiled, args, iters):
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
  import collections  # pylint: disable=g-import-not-at-top
  import glob  # pylint: disable=g-import-not-at-top
  import gzip  # pylint: disable=g-import-not-at-top
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


def _flops_on_cpu(a) -> float | None:
  """The same command's model FLOPs, counted by a CPU process: backends reached through a PJRT plugin (the
  CUDA one) cannot cost-analyse an unoptimised module, and the arithmetic does not depend on the backend."""
  import subprocess  # pylint: disable=g-import-not-at-top
  try:
    return _run_json([sys.executable, '-m', 'dsr_jax.bench', *a.argv, '--flops-only'],
                     env=dict(os.environ, JAX_PLATFORMS='cpu'), timeout=600).get('flops')
  except (RuntimeError, subprocess.TimeoutExpired):
    return None


def _report(a, fn, args, donate=()):
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
    flops = _flops_on_cpu(a)
  step_s, args = _timed(compiled, args, a.iters)
  profile = None
  if getattr(a, 'profile', ''):
    with jax.profiler.trace(a.profile):
      _, args = _timed(compiled, args, 1)  # two calls
    profile = top_ops(a.profile, 2)
  dev = jax.devices()[0]
  peak = PEAK_FLOPS.get((dev.device_kind, a.dtype))
  return {'impl': 'jax', 'device': f'{dev.platform}:{dev.device_kind}', 'dtype': a.dtype, 'batch': a.batch,
          'hr': a.hr, 'hr_hw': list(_hr_hw(a)), 'scale': a.scale, 'stages': a.stages, 'step_s': step_s,
          'images_per_s': a.batch / step_s,
          'compile_s': compile_s, 'flops': flops, 'flops_compiled': flops_compiled,
          'cpu_convs': a.cpu_convs if dev.platform == 'cpu' else None,
          'mfu': (flops / step_s / peak) if (flops and peak) else None, 'jax': jax.__version__,
          **({'profile_dir': a.profile, 'top_ops': profile} if profile is not None else {})}


def cmd_train(a) -> dict:
  """One jitted, state-donating train step of the given phase (default: stage 2, DSRNet student)."""
  import functools  # pylint: disable=g-import-not-at-top
  from dsr_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  from dsr_jax import optim, roles, state as state_lib, steps  # pylint: disable=g-import-not-at-top
  c = _bench_config(a)
  models = models_lib.build(c.model)
  tx = optim.make(c)
  st = jax.jit(functools.partial(state_lib.create, models, tx, scale=a.scale))(jax.random.key(0))
  fn = functools.partial(steps.train_step, models=models, tx=tx, phase=roles.make_phases(c)[a.phase],
                         loss_cfg=c.loss, scale=a.scale)
  out = _report(a, fn, (st, _inputs(a)), donate=(0,))
  out.update(mode='train', phase=a.phase, params={k: count(v) for k, v in st.params.items()},
             teacher_update=a.teacher_update, teacher_input=a.teacher_input, affinity=a.affinity,
             side_weight=a.side_weight, detach_uncertainty=not a.no_detach_uncertainty)
  return out


def cmd_infer(a) -> dict:
  """DSRNet test-time forward pass (no side heads, no RGB)."""
  from dsr_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  from dsr_jax import state as state_lib  # pylint: disable=g-import-not-at-top
  models = models_lib.build(model_config(a))
  params = state_lib.init_params(models, jax.random.key(0), a.scale)['dsr']
  lr = _inputs(a, with_rgb=False)['lr_depth']
  fn = lambda p, x: models.dsr.apply({'params': p}, x)
  out = _report(a, fn, (params, lr))
  out.update(mode='infer')
  return out


def cmd_bf16(a) -> dict:
  """The same training run in float32 and in bfloat16 compute (float32 params and optimizer), from the same
  initial state on the same batches (the embedded synthetic data): do the loss curves track?"""
  import functools  # pylint: disable=g-import-not-at-top
  import itertools  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from dsr_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  from dsr_jax import optim, roles, state as state_lib, steps  # pylint: disable=g-import-not-at-top
  from dsr_jax.input_pipeline import pipeline  # pylint: disable=g-import-not-at-top
  c = _bench_config(a)
  c.data.name = 'synthetic_rgbd'
  c.data.synthetic.size = (max(a.hr, 32),) * 2
  for net in ('dsr', 'denet', 'spnet'):
    c.optim[net].lr = a.lr
  batches = [jax.device_put(b) for b in itertools.islice(iter(pipeline.train_dataset(c)), a.steps)]
  curves, wall = {}, {}
  for dtype in ('float32', 'bfloat16'):
    c.model.dtype = dtype
    models = models_lib.build(c.model)
    tx = optim.make(c)
    st = jax.jit(functools.partial(state_lib.create, models, tx, scale=a.scale))(jax.random.key(0))
    step = jax.jit(functools.partial(steps.train_step, models=models, tx=tx, phase=roles.make_phases(c)[a.phase],
                                     loss_cfg=c.loss, scale=a.scale),
                   donate_argnums=0, compiler_options=xla_options.compiler_options(a.cpu_convs))
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


def _run_json(cmd, env=None, timeout=None):
  """The last JSON line a command prints; RuntimeError if it fails or prints none."""
  import subprocess  # pylint: disable=g-import-not-at-top
  r = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, timeout=timeout)
  lines = [l for l in r.stdout.splitlines() if l.startswith('{')]
  if r.returncode or not lines:
    raise RuntimeError(f'{" ".join(cmd)} failed: {r.stderr.strip().splitlines()[-1:] }')
  return json.loads(lines[-1])


def cmd_compare(a) -> dict:
  """Ours and the PyTorch peer, alternately in fresh processes on identical shapes; ratio = ours / peer."""
  if not os.path.exists(a.peer) or importlib.util.find_spec('torch') is None:
    from dsr_jax.errors import UserError  # pylint: disable=g-import-not-at-top
    raise UserError(f'--peer {a.peer}: the PyTorch peer (and torch) are needed for compare')
  shared = ['--scale', a.scale, '--stages', a.stages, '--channels', a.channels, '--feat', a.feat,
            '--de-blocks', a.de_blocks, '--affinity-pool', a.affinity_pool, '--batch', a.batch, '--hr', a.hr,
            '--iters', a.iters]
  shared = [str(x) for x in shared] + ['--teacher-input', a.teacher_input]
  if a.mode == 'train':  # the flags of docs/method.md's rules, the same spelling on both sides
    shared += ['--teacher-update', a.teacher_update, '--affinity', a.affinity, '--side-weight', str(a.side_weight)]
    shared += ['--no-detach-uncertainty'] if a.no_detach_uncertainty else []
  ours_cmd = [sys.executable, '-m', 'dsr_jax.bench', a.mode, *shared, '--dtype', a.dtype, '--bp-impl', a.bp_impl,
              '--cpu-convs', a.cpu_convs, '--no-cpu-flops'] + (['--phase', 'dsr_student'] if a.mode == 'train' else [])
  peer_cmd = [sys.executable, a.peer, '--mode', a.mode, *shared] + (['--compile'] if a.peer_compile else [])
  runs = {'ours': [], 'peer': []}
  for _ in range(a.rounds):
    runs['ours'].append(_run_json(ours_cmd))
    runs['peer'].append(_run_json(peer_cmd))
  best = {k: max(r['images_per_s'] for r in v) for k, v in runs.items()}
  return {'mode': a.mode, 'ours_images_per_s': best['ours'], 'peer_images_per_s': best['peer'],
          'ratio': best['ours'] / best['peer'], 'rounds': a.rounds, 'peer_compile': a.peer_compile,
          'ours': runs['ours'][-1], 'peer': runs['peer'][-1],
          'all_images_per_s': {k: [r['images_per_s'] for r in v] for k, v in runs.items()}}


def build_parser() -> argparse.ArgumentParser:
  parser = errors.ArgumentParser(prog='python -m dsr_jax.bench', description=__doc__)
  sub = parser.add_subparsers(dest='cmd', required=True)
  p = sub.add_parser('params', help='parameter counts per network')
  add_model_args(p)
  p.set_defaults(fn=cmd_params)
  p = sub.add_parser('dsrnet', help='DSRNet forward+backward: polyphase vs reference vs the peer')
  add_model_args(p)
  p.add_argument('--batch', type=errors.positive_int, default=4)
  p.add_argument('--hr', type=errors.positive_int, default=128)
  p.add_argument('--iters', type=errors.positive_int, default=3)
  p.add_argument('--impls', default='polyphase,reference')
  p.add_argument('--peer', default=PEER, help='path of torch_ctkt.py ("" to skip)')
  p.set_defaults(fn=cmd_dsrnet)
  for name, fn, helptext in (('train', cmd_train, 'one jitted train step'),
                             ('infer', cmd_infer, 'DSRNet inference')):
    p = sub.add_parser(name, help=helptext)
    add_model_args(p)
    add_run_args(p)
    p.add_argument('--flops-only', action='store_true',
                   help="only count the step's FLOPs from its unoptimised HLO (no compile, no timing; null off "
                        'CPU, where the CUDA plugin cannot: run it with JAX_PLATFORMS=cpu)')
    p.add_argument('--no-cpu-flops', action='store_true',
                   help='off CPU, leave flops unset rather than count them in a CPU subprocess (compare does: '
                        'its ratio needs no FLOPs, and a lease is short)')
    p.set_defaults(fn=fn)
  p = sub.add_parser('bf16', help='loss curves of the same run in float32 and bfloat16 compute')
  add_model_args(p)
  add_run_args(p)
  p.add_argument('--steps', type=errors.positive_int, default=500)
  p.add_argument('--lr', type=float, default=1e-4)
  p.add_argument('--tolerance', type=float, default=0.05,
                 help="largest relative gap of the smoothed curves still called 'tracks'")
  p.set_defaults(fn=cmd_bf16, phase='stage1')
  p = sub.add_parser('compare', help='ours vs the PyTorch peer, alternately, same shapes')
  p.add_argument('mode', choices=['train', 'infer'])
  add_model_args(p)
  add_run_args(p)
  p.add_argument('--rounds', type=errors.positive_int, default=2)
  p.add_argument('--peer', default=PEER)
  p.add_argument('--peer-compile', action='store_true', help='torch.compile the peer step')
  p.set_defaults(fn=cmd_compare)
  try:
    from dsr_jax.input_pipeline import bench_pipeline  # pylint: disable=g-import-not-at-top
    p = sub.add_parser('pipeline', help='grain input-pipeline throughput')
    bench_pipeline.add_args(p)
    p.set_defaults(fn=bench_pipeline.run)
  except ImportError:
    pass
  return parser


def main(argv=None) -> int:
  a = build_parser().parse_args(argv)
  a.argv = list(sys.argv[1:] if argv is None else argv)
  from dsr_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  try:
    result = a.fn(a)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(json.dumps(result))
  return 0


if __name__ == '__main__':
  sys.exit(main())
