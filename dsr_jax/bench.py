"""Benchmarks: `python -m dsr_jax.bench {params,dsrnet,train,infer,bf16,compare,pipeline} ...`; one JSON line each.

Flags follow ../shared/peers/torch_ctkt.py so the same command line can be given to both. This module holds the
CLI, the model flags and the parameter counts; the compiled-step rows (train, infer, bf16) are in bench_train.py,
the peer's rows (dsrnet, compare) in bench_compare.py.
"""
import argparse
import json
import os
import sys

import jax
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


def run_json(cmd, env=None, timeout=None):
  """The last JSON line a command prints; RuntimeError if it fails or prints none."""
  import subprocess  # pylint: disable=g-import-not-at-top
  r = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, timeout=timeout)
  lines = [l for l in r.stdout.splitlines() if l.startswith('{')]
  if r.returncode or not lines:
    raise RuntimeError(f'{" ".join(cmd)} failed: {r.stderr.strip().splitlines()[-1:] }')
  return json.loads(lines[-1])


def build_parser() -> argparse.ArgumentParser:
  parser = errors.ArgumentParser(prog='python -m dsr_jax.bench', description=__doc__)
  sub = parser.add_subparsers(dest='cmd', required=True)
  p = sub.add_parser('params', help='parameter counts per network')
  add_model_args(p)
  p.set_defaults(fn=cmd_params)
  # The other rows' modules import this one (the flags, the peer's path): imported here, not at the top.
  from dsr_jax import bench_compare, bench_train  # pylint: disable=g-import-not-at-top
  bench_compare.add_parsers(sub)
  bench_train.add_parsers(sub)
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
