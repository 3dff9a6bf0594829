"""`python -m dsr_jax.bench parts ...`: the DSRNet-alone train step (bench train --phase dsr_only) taken apart.

Each part is its own jitted function on the step's shapes, timed alternately in rounds so that a loaded
machine slows every part alike: the forward pass with and without the side heads (loss included), the same
with the backward pass, the Adam update alone, the bicubic upsampling alone and the whole donated step. The
differences give the shares: backward = fwd+bwd - fwd, side heads = fwd+bwd - fwd+bwd without them, Adam and
the step's bookkeeping = step - fwd+bwd. Parts compiled apart are fused apart, so the shares are estimates
of where the time goes, not a partition of the step; the trace of `bench train --profile` ranks single ops.
"""
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from dsr_jax import bench_common
from dsr_jax import bench_train
from dsr_jax import losses
from dsr_jax import xla_options
from dsr_jax.models import dsrnet


def _parts(a):
  """{name: zero-argument callable that runs one part and returns what to wait for}."""
  a.phase = bench_train.DSR_ONLY
  c = bench_train.bench_config(a)
  st, step_fn = bench_train.build_step(c, a.phase, a.scale)
  b = bench_train.inputs(a, with_rgb=False)
  # The step's own network and optimizer, bound in build_step's partial: the parts time what the step runs.
  net = step_fn.keywords['models'].dsr
  tx = step_fn.keywords['tx']
  hr, valid, lr = b['hr_depth'], b['valid'], b['lr_depth']
  jit = lambda f, **kw: jax.jit(f, compiler_options=xla_options.compiler_options(a.cpu_convs), **kw)

  # The step's 'dsr' term (terms._dsr): L1, plus side supervision when its weight is not 0.
  def loss(p):
    o = net.apply({'params': p}, lr, train=True)
    value = losses.l1(o.depth, hr, valid)
    return value + a.side_weight * losses.side_l1(o.sides, [hr] * len(o.sides), valid) if a.side_weight else value

  def loss_no_sides(p):
    return losses.l1(net.apply({'params': p}, lr), hr, valid)

  def adam(s, g):
    updates, opt_state = tx.update(g, s.opt_state, s.params, trainable={'dsr': True})
    return optax.apply_updates(s.params, updates), opt_state

  params = jax.tree.map(jnp.copy, st.params['dsr'])  # the step donates st: the parts keep their own copy
  grads = {'dsr': jax.tree.map(jnp.ones_like, params)}
  fns = {'fwd': jit(loss), 'fwd_no_sides': jit(loss_no_sides), 'fwd_bwd': jit(jax.value_and_grad(loss)),
         'fwd_bwd_no_sides': jit(jax.value_and_grad(loss_no_sides)), 'adam': jit(adam),
         'bicubic': jit(lambda x: dsrnet.bicubic_upsample(x, a.scale)), 'step': jit(step_fn, donate_argnums=0)}
  box = {'state': st}

  def step():
    box['state'], terms = fns['step'](box['state'], b)
    return terms
  adam_state = jax.tree.map(jnp.copy, st)
  return {'step': step, 'fwd': lambda: fns['fwd'](params), 'fwd_no_sides': lambda: fns['fwd_no_sides'](params),
          'fwd_bwd': lambda: fns['fwd_bwd'](params), 'fwd_bwd_no_sides': lambda: fns['fwd_bwd_no_sides'](params),
          'adam': lambda: fns['adam'](adam_state, grads), 'bicubic': lambda: fns['bicubic'](lr)}


def cmd_parts(a) -> dict:
  """Median seconds per part over --iters alternating rounds (after two warm-up calls each), and the shares."""
  parts = _parts(a)
  for run in parts.values():
    for _ in range(2):
      jax.block_until_ready(run())
  times = {k: [] for k in parts}
  for _ in range(a.iters):
    for k, run in parts.items():
      t = time.perf_counter()
      jax.block_until_ready(run())
      times[k].append(time.perf_counter() - t)
  med = {k: statistics.median(v) for k, v in times.items()}
  step = med['step']
  derived = {'backward': med['fwd_bwd'] - med['fwd'], 'side_heads_fwd': med['fwd'] - med['fwd_no_sides'],
             'side_heads_fwd_bwd': med['fwd_bwd'] - med['fwd_bwd_no_sides'],
             'adam_and_bookkeeping': step - med['fwd_bwd']}
  dev = jax.devices()[0]
  return {'mode': 'parts', 'phase': bench_train.DSR_ONLY, 'device': f'{dev.platform}:{dev.device_kind}',
          'dtype': a.dtype, 'bp_impl': a.bp_impl, 'cpu_convs': a.cpu_convs, 'batch': a.batch, 'hr': a.hr,
          'scale': a.scale, 'stages': a.stages, 'channels': a.channels, 'feat': a.feat,
          'side_weight': a.side_weight, 'rounds': a.iters, 'median_s': med,
          'min_s': {k: min(v) for k, v in times.items()},
          'derived_s': derived, 'share_of_step': {k: v / step for k, v in {**med, **derived}.items()},
          'jax': jax.__version__}


def add_parser(sub) -> None:
  p = sub.add_parser('parts', help='the DSRNet-alone train step taken apart: forward, backward, side heads, Adam')
  bench_common.add_model_args(p)
  bench_train.add_run_args(p)
  p.set_defaults(fn=cmd_parts, iters=10)
