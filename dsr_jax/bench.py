"""Benchmarks: `python -m dsr_jax.bench {params,pipeline} ...`; each prints one JSON line.

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


def model_config(a) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      scale=a.scale, stages=a.stages, channels=a.channels, feat=a.feat, de_blocks=a.de_blocks,
      residual=True, bp_impl=a.bp_impl, dtype=a.dtype, use_denet=True, use_spnet=True))


def count(tree) -> int:
  return int(sum(x.size for x in jax.tree.leaves(tree)))


def abstract_params(models, scale: int, hr: int = 32):
  """Parameter shapes via eval_shape: nothing is computed or allocated."""
  key = jax.random.key(0)
  lr = jax.ShapeDtypeStruct((1, hr // scale, hr // scale, 1), jnp.float32)
  hrd = jax.ShapeDtypeStruct((1, hr, hr, 1), jnp.float32)
  rgb = jax.ShapeDtypeStruct((1, hr, hr, 3), jnp.float32)
  c = models.dsr.channels
  feat = jax.ShapeDtypeStruct((1, hr, hr, c), jnp.float32)
  out = {'dsr': jax.eval_shape(lambda: models.dsr.init(key, jnp.zeros(lr.shape), train=True))['params']}
  if models.denet is not None:
    out['denet'] = jax.eval_shape(lambda: models.denet.init(key, jnp.zeros(rgb.shape), train=True))['params']
  if models.spnet is not None:
    out['spnet'] = jax.eval_shape(lambda: models.spnet.init(
        key, jnp.zeros(feat.shape), jnp.zeros(feat.shape), jnp.zeros(hrd.shape), jnp.zeros(hrd.shape),
        jnp.zeros(hrd.shape)))['params']
  return out


def cmd_params(a) -> dict:
  from dsr_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  models = models_lib.build(model_config(a))
  params = abstract_params(models, a.scale, hr=8 * a.scale)
  return {'params': {k: count(v) for k, v in params.items()}, 'scale': a.scale, 'stages': a.stages,
          'channels': a.channels, 'feat': a.feat, 'de_blocks': a.de_blocks}


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
    fb = jax.jit(jax.value_and_grad(lambda p: jnp.abs(m.apply(p, lr) - hr).mean()))
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


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m dsr_jax.bench', description=__doc__)
  sub = parser.add_subparsers(dest='cmd', required=True)
  p = sub.add_parser('params', help='parameter counts per network')
  add_model_args(p)
  p.set_defaults(fn=cmd_params)
  p = sub.add_parser('dsrnet', help='DSRNet forward+backward: polyphase vs reference vs the peer')
  add_model_args(p)
  p.add_argument('--batch', type=int, default=4)
  p.add_argument('--hr', type=int, default=128)
  p.add_argument('--iters', type=int, default=3)
  p.add_argument('--impls', default='polyphase,reference')
  p.add_argument('--peer', default=PEER, help='path of torch_ctkt.py ("" to skip)')
  p.set_defaults(fn=cmd_dsrnet)
  try:
    from input_pipeline import bench_pipeline  # pylint: disable=g-import-not-at-top
    p = sub.add_parser('pipeline', help='grain input-pipeline throughput')
    bench_pipeline.add_args(p)
    p.set_defaults(fn=bench_pipeline.run)
  except ImportError:
    pass
  a = parser.parse_args(argv)
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
