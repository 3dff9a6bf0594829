"""The rows of `python -m dsr_jax.bench` that run the PyTorch peer (../shared/peers/torch_ctkt.py): dsrnet
(DSRNet forward+backward per back-projection form, and the peer's) and compare (ours and the peer's step,
alternately in fresh processes).
"""
import importlib.util
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp

from dsr_jax import bench_common
from dsr_jax import bench_train
from dsr_jax import errors
from dsr_jax import xla_options
from dsr_jax.models.dsrnet import DSRNet

# compare's modes: the peer's --mode, and the `bench` command and phase that time the same step on our side.
MODES = {'train': ('train', 'dsr_student'), 'train_dsr': ('train', bench_train.DSR_ONLY), 'infer': ('infer', None)}


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
    # torch is optional and seconds to import: only where the peer runs.
    import torch  # pylint: disable=g-import-not-at-top  (see above)
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


def cmd_compare(a) -> dict:
  """Ours and the PyTorch peer, alternately in fresh processes on identical shapes; ratio = ours / peer."""
  if not (a.mode or a.mode_flag) or (a.mode and a.mode_flag and a.mode != a.mode_flag):
    raise errors.UserError(f'compare: expected one mode, as a word or as --mode (one of {", ".join(MODES)})')
  a.mode = a.mode or a.mode_flag
  if not os.path.exists(a.peer) or importlib.util.find_spec('torch') is None:
    raise errors.UserError(f'--peer {a.peer}: the PyTorch peer (and torch) are needed for compare')
  ours_sub, phase = MODES[a.mode]
  shared = ['--scale', a.scale, '--stages', a.stages, '--channels', a.channels, '--feat', a.feat,
            '--de-blocks', a.de_blocks, '--affinity-pool', a.affinity_pool, '--batch', a.batch, '--hr', a.hr,
            '--iters', a.iters]
  shared = [str(x) for x in shared] + ['--teacher-input', a.teacher_input]
  if a.mode == 'train':  # the flags of docs/method.md's rules, the same spelling on both sides
    shared += ['--teacher-update', a.teacher_update, '--affinity', a.affinity, '--side-weight', str(a.side_weight)]
    shared += ['--no-detach-uncertainty'] if a.no_detach_uncertainty else []
  elif a.mode == 'train_dsr':  # DSRNet alone reads only the side supervision's weight
    shared += ['--side-weight', str(a.side_weight)]
  ours_cmd = [sys.executable, '-m', 'dsr_jax.bench', ours_sub, *shared, '--dtype', a.dtype, '--bp-impl', a.bp_impl,
              '--cpu-convs', a.cpu_convs, '--no-cpu-flops'] + (['--phase', phase] if phase else [])
  peer_cmd = [sys.executable, a.peer, '--mode', a.mode, *shared] + (['--compile'] if a.peer_compile else [])
  runs = {'ours': [], 'peer': []}
  for _ in range(a.rounds):
    runs['ours'].append(bench_common.run_json(ours_cmd))
    runs['peer'].append(bench_common.run_json(peer_cmd))
  best = {k: max(r['images_per_s'] for r in v) for k, v in runs.items()}
  return {'mode': a.mode, 'ours_images_per_s': best['ours'], 'peer_images_per_s': best['peer'],
          'ratio': best['ours'] / best['peer'], 'rounds': a.rounds, 'peer_compile': a.peer_compile,
          'ours': runs['ours'][-1], 'peer': runs['peer'][-1],
          'all_images_per_s': {k: [r['images_per_s'] for r in v] for k, v in runs.items()}}


def add_parsers(sub) -> None:
  p = sub.add_parser('dsrnet', help='DSRNet forward+backward: polyphase vs reference vs the peer')
  bench_common.add_model_args(p)
  p.add_argument('--batch', type=errors.positive_int, default=4)
  p.add_argument('--hr', type=errors.positive_int, default=128)
  p.add_argument('--iters', type=errors.positive_int, default=3)
  p.add_argument('--impls', default='polyphase,reference')
  p.add_argument('--peer', default=bench_common.PEER, help='path of torch_ctkt.py ("" to skip)')
  p.set_defaults(fn=cmd_dsrnet)
  p = sub.add_parser('compare', help='ours vs the PyTorch peer, alternately, same shapes')
  # The mode as a word (compare train_dsr) or as the peer spells it (compare --mode train_dsr), so that
  # one command line serves both.
  p.add_argument('mode', nargs='?', choices=list(MODES))
  p.add_argument('--mode', dest='mode_flag', choices=list(MODES), help='the same as the positional mode')
  bench_common.add_model_args(p)
  bench_train.add_run_args(p)
  p.add_argument('--rounds', type=errors.positive_int, default=2)
  p.add_argument('--peer', default=bench_common.PEER)
  p.add_argument('--peer-compile', action='store_true', help='torch.compile the peer step')
  p.set_defaults(fn=cmd_compare)
