"""Training input-pipeline throughput: `python -m dsr_jax.bench pipeline --dataset middlebury_lu ...`.

Builds exactly the pipeline training uses (pipeline.train_dataset), discards `--warmup` batches (source
decoding, synthetic scene generation on first touch, worker start-up), then times `--iters` batches.
"""
import argparse
import json
import time

from absl import flags

from dsr_jax.configs import default
from dsr_jax import errors
from dsr_jax.input_pipeline import pipeline


def add_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--dataset', default='synthetic_rgbd', help="data.name ('a+b' mixes allowed)")
  parser.add_argument('--crop', type=errors.positive_int, default=256, help='HR crop side (data.crop)')
  parser.add_argument('--scale', type=int, default=4, help='model.scale')
  parser.add_argument('--batch', type=errors.positive_int, default=16, help='global batch (train.batch_size)')
  parser.add_argument('--workers', type=int, default=0, help='grain worker processes (data.workers)')
  parser.add_argument('--iters', type=errors.positive_int, default=50, help='timed batches')
  parser.add_argument('--warmup', type=int, default=3, help='untimed batches first')
  parser.add_argument('--data-dir', default='', help='manual data directory (data.dir; default $DSR_DATA_DIR)')
  parser.add_argument('--seed', type=int, default=0)


def config_for(args):
  c = default.get_config()
  c.seed = args.seed
  c.data.name = args.dataset
  c.data.dir = args.data_dir
  c.data.crop = args.crop
  c.data.workers = args.workers
  c.model.scale = args.scale
  c.train.batch_size = args.batch
  h, w = c.data.synthetic.size
  if min(h, w) < args.crop:  # Synthetic scenes a bit larger than the crop, so crops still vary.
    side = args.crop + args.crop // 4
    c.data.synthetic.size = (side, side)
  return c


def run(args) -> dict:
  """Times the train pipeline; returns samples/s and the sha256 of the first batch."""
  config = config_for(args)
  if args.workers > 0:
    # grain's spawned workers read absl flags; under argparse nobody parsed them.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
  ds = pipeline.train_dataset(config, process_index=0, process_count=1)
  it = iter(ds)
  try:
    first = next(it)
    digest = pipeline.batch_sha256(first)
    for _ in range(max(0, args.warmup - 1)):
      next(it)
    t0 = time.perf_counter()
    for _ in range(args.iters):
      next(it)
    dt = time.perf_counter() - t0
  finally:
    close = getattr(it, 'close', None)
    if close is not None:
      close()
  n = args.iters * config.train.batch_size
  return {
      'samples_per_s': round(n / dt, 1),
      'first_batch_sha256': digest,
      'dataset': args.dataset,
      'crop': args.crop,
      'scale': args.scale,
      'batch': args.batch,
      'workers': args.workers,
  }


if __name__ == '__main__':
  p = errors.ArgumentParser(description=__doc__)
  add_args(p)
  print(json.dumps(run(p.parse_args())))
