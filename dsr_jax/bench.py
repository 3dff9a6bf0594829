"""Benchmarks: `python -m dsr_jax.bench {params,dsrnet,train,infer,bf16,compare,parts,pipeline} ...`, one JSON
line each.

Flags follow ../shared/peers/torch_ctkt.py so the same command line can be given to both. This module holds the
CLI and the parameter counts. The rows live in bench_train.py (train, infer, bf16), bench_compare.py (dsrnet,
compare: the peer's rows) and bench_parts.py (the DSRNet-alone step taken apart); what they share, in
bench_common.py.
"""
import argparse
import json
import sys

from dsr_jax import bench_compare
from dsr_jax import bench_parts
from dsr_jax import bench_train
from dsr_jax import errors
from dsr_jax import models as models_lib
# The shared helpers, under the names other modules and tests use (bench.count, bench.PEER, ...).
from dsr_jax.bench_common import (  # pylint: disable=unused-import
    PEER, abstract_params, add_model_args, count, model_config)


def cmd_params(a) -> dict:
  models = models_lib.build(model_config(a))
  params = abstract_params(models, a.scale)
  return {'params': {k: count(v) for k, v in params.items()}, 'scale': a.scale, 'stages': a.stages,
          'channels': a.channels, 'feat': a.feat, 'de_blocks': a.de_blocks, 'teacher_input': a.teacher_input}


def build_parser() -> argparse.ArgumentParser:
  parser = errors.ArgumentParser(prog='python -m dsr_jax.bench', description=__doc__)
  sub = parser.add_subparsers(dest='cmd', required=True)
  p = sub.add_parser('params', help='parameter counts per network')
  add_model_args(p)
  p.set_defaults(fn=cmd_params)
  bench_compare.add_parsers(sub)
  bench_train.add_parsers(sub)
  bench_parts.add_parser(sub)
  try:
    # Optional: it needs grain, which a bare accelerator machine may lack; the other rows do not.
    from dsr_jax.input_pipeline import bench_pipeline  # pylint: disable=g-import-not-at-top  (see above)
    p = sub.add_parser('pipeline', help='grain input-pipeline throughput')
    bench_pipeline.add_args(p)
    p.set_defaults(fn=bench_pipeline.run)
  except ImportError:
    pass
  return parser


def main(argv=None) -> int:
  a = build_parser().parse_args(argv)
  a.argv = list(sys.argv[1:] if argv is None else argv)
  try:
    result = a.fn(a)
  except errors.UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(json.dumps(result))
  return 0


if __name__ == '__main__':
  sys.exit(main())
