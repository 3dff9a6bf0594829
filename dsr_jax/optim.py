"""Per-network optimizers routed by static labels and gated by the phase's teacher/student mask.

`optax.multi_transform` (an alias of `optax.partition`) gives each network its own Adam. Each partition
is wrapped in `optax.conditionally_mask`, whose predicate reads the phase's `trainable` mask passed as an
extra argument to `update`: a frozen network receives zero updates and its Adam moments and count stay
bit-identical (only the wrapper's own call counter advances). Zero gradients would not do: Adam's
momentum keeps moving a parameter after its gradient stops.
"""
import optax

NETS = ('dsr', 'denet', 'spnet')


def schedule(cfg, num_steps: int):
  warm = min(cfg.warmup_steps, max(num_steps - 1, 0))
  if cfg.schedule == 'constant':
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, max(warm, 1)), optax.constant_schedule(cfg.lr)],
                                [max(warm, 1)]) if warm else optax.constant_schedule(cfg.lr)
  return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, max(warm, 1), max(num_steps, warm + 1), cfg.lr * 0.01)


def net_optimizer(cfg, num_steps: int) -> optax.GradientTransformation:
  parts = []
  if cfg.grad_clip and cfg.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(cfg.grad_clip))
  parts.append(optax.adam(schedule(cfg, num_steps), b1=cfg.b1, b2=cfg.b2))
  return optax.chain(*parts)


def _gate(net: str, inner):
  return optax.transforms.conditionally_mask(
      inner, lambda _, trainable: trainable[net], forward_extra_args=True)


def make(config, nets=NETS) -> optax.GradientTransformationExtraArgs:
  """tx.update(grads, opt_state, params, trainable={'dsr': bool, ...})."""
  n = config.train.num_steps
  return optax.multi_transform({k: _gate(k, net_optimizer(config.optim[k], n)) for k in nets},
                               param_labels={k: k for k in nets})


def learning_rates(config, step: int) -> dict:
  return {k: float(schedule(config.optim[k], config.train.num_steps)(step)) for k in NETS}
