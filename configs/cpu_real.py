"""The CPU preset for the paper claim (README "Does cross-task transfer help?"): real data, one run <= 30 min.

  python -m dsr_jax.main --config configs/cpu_real.py:x4 --workdir runs/x4_ct          # DSRNet with CT
  python -m dsr_jax.main --config configs/cpu_real.py:x4,wo_ct --workdir runs/x4_wo_ct  # DSRNet alone
  python -m dsr_jax.main --config configs/cpu_real.py:x4,fixed --workdir runs/x4_fixed  # CT, DENet always teaches

The argument is a comma list: the scale (x2, x4, x8, x16) and at most one variant (wo_ct, fixed). Every run of a
scale sees the same data, crops and number of steps, so the rows are comparable. Training data: the
middlebury_lu train split (26 images of 0-255 disparity: one depth convention for DENet, docs/method.md
rule 6); never the six Middlebury 2005 benchmark scenes (readers.BENCHMARK_SCENES).
Needs the data directory of ../shared/data: --config.data.dir=DIR or $DSR_DATA_DIR.
"""
from dsr_jax.configs import default

_VARIANTS = ('ct', 'wo_ct', 'fixed')
ARGS = tuple(f'x{s},{v}' for s in (2, 4, 8, 16) for v in _VARIANTS)  # every variant (tests load each)


def get_config(arg=None):
  scale, variant = 4, 'ct'
  for token in str(arg or '').split(','):
    token = token.strip()
    if not token:
      continue
    if token in ('x2', 'x4', 'x8', 'x16'):
      scale = int(token[1:])
    elif token in _VARIANTS:
      variant = token
    else:
      raise ValueError(f'configs/cpu_real.py: unknown argument {token!r} (expected x2|x4|x8|x16 and one of '
                       f'{"|".join(_VARIANTS)}, e.g. cpu_real.py:x4,wo_ct)')
  c = default.get_config()
  c.data.name = 'middlebury_lu'
  # Validate on the 4 held-out Middlebury/Lu images (disparity, like the benchmark).
  c.data.val_name = 'middlebury_lu'
  c.model.scale = scale
  # A quarter of the paper's width: 0.36 M DSRNet parameters at x4; ~0.3 s a CT step on the 2-core machine.
  c.model.channels = 16
  c.model.feat = 32
  # Same HR pixels per batch at every scale; x8 gets larger crops so its LR input is not 8x8.
  c.data.crop, c.train.batch_size = {2: (64, 8), 4: (64, 8), 8: (96, 4), 16: (128, 2)}[scale]
  # Most crops of real depth are smooth, where bicubic is already right; re-drawing crops without a depth
  # edge (data.min_edge) is what made 3000 CPU steps enough (BENCHMARKS.md, "CPU preset").
  c.data.min_edge = 0.01
  for net in ('dsr', 'denet', 'spnet'):
    c.optim[net].lr = 1e-3
  c.train.num_steps = 3000
  c.train.stage1_steps = 1000
  c.train.round_steps = 200
  c.train.log_every = 100
  c.train.image_every = 1000
  c.eval.every_steps = 500
  c.ckpt.every_steps = 1000
  c.data.workers = 0  # 2 cores: a worker process would take a core from the step.
  if variant == 'wo_ct':
    c.model.use_denet = False
    c.model.use_spnet = False
  elif variant == 'fixed':
    c.train.roles = 'fixed_denet'
  return c
