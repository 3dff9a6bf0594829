"""What every `python -m dsr_jax.bench` row shares: the model flags, the peer's path, parameter counting and
reading a child's JSON line. The row modules import this one, never bench.py (the CLI that imports them).
"""
import argparse
import json
import os
import subprocess

import jax
import ml_collections

from dsr_jax import state as state_lib
from dsr_jax import xla_options
from dsr_jax.configs import default

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
  m = default.get_config().model
  m.update(dict(scale=a.scale, stages=a.stages, channels=a.channels, feat=a.feat, de_blocks=a.de_blocks,
                bp_impl=a.bp_impl, dtype=a.dtype, teacher_input=a.teacher_input))
  return m


def count(tree) -> int:
  return int(sum(x.size for x in jax.tree.leaves(tree)))


def abstract_params(models, scale: int):
  """Parameter shapes via eval_shape of the training init: nothing is computed or allocated."""
  return jax.eval_shape(lambda: state_lib.init_params(models, jax.random.key(0), scale))


def run_json(cmd, env=None, timeout=None):
  """The last JSON line a command prints; RuntimeError if it fails or prints none."""
  r = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, timeout=timeout)
  lines = [l for l in r.stdout.splitlines() if l.startswith('{')]
  if r.returncode or not lines:
    raise RuntimeError(f'{" ".join(cmd)} failed: {r.stderr.strip().splitlines()[-1:] }')
  return json.loads(lines[-1])
