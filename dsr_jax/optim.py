"""Per-network optimizers routed by static labels and gated by the phase's teacher/student mask.

`optax.multi_transform` (an alias of `optax.partition`) gives each network its own Adam. Each partition
is wrapped in `optax.conditionally_mask`, whose predicate reads the phase's `trainable` mask passed as an
extra argument to `update`: a frozen network receives zero updates and its Adam moments and count stay
bit-identical (only the wrapper's own call counter advances). Zero gradients would not do: Adam's
momentum keeps moving a parameter after its gradient stops.
"""
import jax
import optax

from dsr_jax.errors import ConfigError
from dsr_jax.models import NETS


def schedule(cfg, num_steps: int):
  """Linear warm-up from lr / warmup (not 0: a net's first update must move it), then cosine or constant.

  The count is the network's own Adam count, which a frozen network does not advance.
  """
  warm = max(int(min(cfg.warmup_steps, max(num_steps - 1, 0))), 0)
  if cfg.schedule not in ('cosine', 'constant'):
    raise ConfigError(f"optim.*.schedule={cfg.schedule!r}: expected 'cosine' or 'constant'")
  if cfg.schedule == 'constant':
    after = optax.constant_schedule(cfg.lr)
  else:
    after = optax.cosine_decay_schedule(cfg.lr, max(num_steps - warm, 1), alpha=0.01)
  if not warm:
    return after
  return optax.join_schedules([optax.linear_schedule(cfg.lr / warm, cfg.lr, warm), after], [warm])


def schedules(config, nets=NETS) -> dict:
  """{net: its schedule}: what each net's Adam follows, and what the step reports its rates from."""
  return {k: schedule(config.optim[k], config.train.num_steps) for k in nets}


def net_optimizer(cfg, num_steps: int) -> optax.GradientTransformation:
  parts = []
  if cfg.grad_clip and cfg.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(cfg.grad_clip))
  parts.append(optax.adam(schedule(cfg, num_steps), b1=cfg.b1, b2=cfg.b2))
  return optax.chain(*parts)


def _gate(net: str, inner):
  return optax.transforms.conditionally_mask(
      inner, lambda _, trainable: trainable[net], forward_extra_args=True)


def make(config, nets=NETS, frozen=()) -> optax.GradientTransformationExtraArgs:
  """tx.update(grads, opt_state, params, trainable={'dsr': bool, ...}).

  frozen: networks that never learn (a frozen teacher, 'teacher'): their partition sets every update to zero
  and holds no state, so they are in no optimizer at all.
  """
  n = config.train.num_steps
  transforms = {k: _gate(k, net_optimizer(config.optim[k], n)) for k in nets}
  transforms.update({k: optax.set_to_zero() for k in frozen})
  return optax.multi_transform(transforms, param_labels={k: k for k in transforms})


def update_counts(opt_state, nets=NETS) -> dict:
  """Each net's own update count as its Adam schedule holds it (frozen rounds do not advance it).

  Reads optax's internal state by name: only for checkpoints saved before TrainState.updates kept the
  counts (upgrade_role), and for tests that check the two agree.
  """
  out = {}
  for k in nets:
    found = [v for path, v in optax.tree_utils.tree_get_all_with_path(opt_state.inner_states[k], 'count')
             if getattr(path[-1], 'tuple_name', '') == 'ScaleByScheduleState']
    out[k] = found[0]
  return out


def upgrade_role(role: dict, opt_state, nets) -> dict:
  """A checkpoint's role item with every key of state.ROLE_KEYS: one saved before `updates` existed gets the
  counts its Adam states hold (the only read of optax's internal state, once, on such a resume)."""
  if 'updates' in role:
    return role
  counts = jax.device_get(update_counts(opt_state, nets))
  return dict(role, updates=[int(counts[k]) if k in counts else 0 for k in NETS])
