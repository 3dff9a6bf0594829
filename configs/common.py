"""Helpers for derived configs: real-data presets share these settings."""
from dsr_jax.configs import default


def real_data(name: str, scale: int, crop: int = 128):
  """A paper-width network (C=64, F=256, T=4) on a real dataset; point data.dir (or $DSR_DATA_DIR) at it."""
  c = default.get_config()
  c.data.name = name
  c.data.crop = crop
  c.model.scale = scale
  c.model.channels = 64
  c.model.feat = 256
  c.loss.affinity_pool = 32
  c.train.batch_size = 16
  c.train.num_steps = 100_000
  c.train.stage1_steps = 30_000
  c.train.round_steps = 1_000  # about one epoch of the small real training sets at batch 16
  c.train.log_every = 200
  c.train.image_every = 2_000
  c.eval.every_steps = 5_000
  c.ckpt.every_steps = 5_000
  c.data.workers = 2
  for net in ('dsr', 'denet', 'spnet'):
    c.optim[net].lr = 1e-4
    c.optim[net].warmup_steps = 1_000
  return c
