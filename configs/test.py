"""Tiny config for tests: every phase in a few steps, small shapes, batch 8 (divides 8 fake devices)."""
from dsr_jax.configs import default


def get_config(arg=None):
  c = default.get_config(arg)
  c.data.crop = 16
  c.data.synthetic.num_train = 16
  c.data.synthetic.num_val = 2
  c.data.synthetic.size = (32, 32)
  c.model.scale = 2
  c.model.channels = 4
  c.model.feat = 8
  c.model.stages = 2
  c.model.de_blocks = 1
  c.loss.affinity_pool = 4
  c.train.batch_size = 8
  c.train.num_steps = 8
  c.train.stage1_steps = 2
  c.train.round_steps = 2
  c.train.log_every = 2
  c.train.image_every = 4
  c.eval.every_steps = 0
  c.ckpt.every_steps = 4
  for net in ('dsr', 'denet', 'spnet'):
    c.optim[net].warmup_steps = 1
  return c
