"""Pure, jit-able step functions. The phase (roles.Phase) is static: one compiled step per phase.

A network that does not train in a phase enters through `stop_gradient` of its parameters, so its backward
pass is never built. Within a phase, each loss term sees the outputs of the networks outside its reach as
constants: distillation targets never pass a gradient to the teacher (docs/method.md, rule 2). A frozen
teacher (model.teacher) is such a network in every phase, and its optimizer partition only zeroes.
"""
from typing import Any

import jax
import jax.numpy as jnp
import optax

from dsr_jax import losses
from dsr_jax import models as models_lib
from dsr_jax import resize
from dsr_jax import roles
from dsr_jax import state as state_lib
from dsr_jax import terms as terms_lib
from dsr_jax.state import TrainState

TERMS = terms_lib.TERMS  # the logged terms, in the order TrainState.bad_term indexes


def make_lr(batch, scale: int, method: str):
  return resize.downsample(batch['hr_depth'], scale, method, xp=jnp)


def apply_net(net, params, batch, train: bool = True):
  """`net` on the batch entries it reads (models.input_keys: the LR alone for DSRNet)."""
  return net.apply({'params': params}, *(batch[k] for k in models_lib.input_keys(net)), train=train)


def forward(params, batch, *, models):
  """Train-mode outputs of the depth networks: {'dsr': NetOutput, 'denet': NetOutput} (no DENet w/o CT), and
  'teacher' with a frozen teacher."""
  outs = {'dsr': apply_net(models.dsr, params['dsr'], batch)}
  if models.denet is not None:
    outs['denet'] = models.denet.apply({'params': params['denet']}, batch['rgb'], batch['lr_depth'],
                                       train=True)
  if models.teacher is not None:
    outs['teacher'] = apply_net(models.teacher, params['teacher'], batch)
  return outs


def loss_fn(params, batch, *, models, phase: roles.Phase, loss_cfg, parts: bool = False):
  """Returns (total, logged terms), or with parts=True (total, logged terms, {term: weight * value}).

  total = sum of the phase's terms, weight * value, in the phase's order. A network that does not train in
  this phase enters as a constant (stop_gradient of its parameters: no backward pass is built for it).
  """
  tr = phase.train
  params = {k: p if tr.get(k, False) else jax.lax.stop_gradient(p) for k, p in params.items()}
  hr, v = batch['hr_depth'], batch['valid']
  outs = forward(params, batch, models=models)
  zero = jnp.zeros((), jnp.float32)
  t = dict.fromkeys(TERMS, zero)
  t['e_dsr'] = losses.l1(outs['dsr'].depth, hr, v)
  if 'denet' in outs:
    t['e_de'] = losses.l1(outs['denet'].depth, hr, v)
  if 'teacher' in outs:  # logged only: how good the frozen teacher is on the training batches
    t['e_teacher'] = losses.l1(jax.lax.stop_gradient(outs['teacher'].depth), hr, v)
  if loss_cfg.side_weight:  # logged only: how close the side heads come to the main output's error
    t['side_dsr'] = terms_lib.side_l1(jax.lax.stop_gradient(outs['dsr'].sides), hr, v)
    if 'denet' in outs:
      t['side_de'] = terms_lib.side_l1(jax.lax.stop_gradient(outs['denet'].sides), hr, v)
  total, weighted = None, {}
  per_student = terms_lib.per_student()
  for term in phase.terms:
    value = terms_lib.value(term, outs, params, batch, models=models, loss_cfg=loss_cfg)
    t[term.name] = t[term.name] + value if term.name in per_student else value
    part = value if term.weight == 1.0 else term.weight * value
    weighted[term.name] = weighted[term.name] + part if term.name in weighted else part
    total = part if total is None else total + part
  for name in per_student:  # 'mutual' distils both ways: log the mean, comparable with one direction
    n = sum(term.name == name for term in phase.terms)
    if n > 1:
      t[name] = t[name] / n
  t['total'] = total
  return (total, t, weighted) if parts else (total, t)


def with_lr(batch, scale: int, lr_method: str):
  """The batch with its LR made on device by `lr_method` (data.lr_on_device), or as it is ('')."""
  return dict(batch, lr_depth=make_lr(batch, scale, lr_method)) if lr_method else batch


def term_grad_norms(params, batch, *, models, phase: roles.Phase, loss_cfg, scale: int, lr_method: str = ''):
  """{term: {net: global norm}} of the gradient each weighted term of the phase sends into each network.

  The same loss_fn and routing as the train step (frozen networks get zero), before gradient clipping.
  """
  batch = with_lr(batch, scale, lr_method)
  # One forward pass, one pullback per term.
  weighted, pullback = jax.vjp(lambda p: loss_fn(p, batch, models=models, phase=phase, loss_cfg=loss_cfg,
                                                 parts=True)[2], params)
  out = {}
  for name in weighted:
    cotangent = {k: jnp.ones_like(v) if k == name else jnp.zeros_like(v) for k, v in weighted.items()}
    grads, = pullback(cotangent)
    out[name] = {net: optax.tree.norm(g) for net, g in grads.items()}
  return out


def train_step(state: TrainState, batch, *, models, tx, phase: roles.Phase, loss_cfg, scale: int,
               lr_method: str = '') -> tuple[TrainState, dict[str, Any]]:
  batch = with_lr(batch, scale, lr_method)
  (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params, batch, models=models, phase=phase, loss_cfg=loss_cfg)
  trainable = {k: phase.train[k] for k in state.params}
  updates, opt_state = tx.update(grads, state.opt_state, state.params, trainable=trainable)
  counted = jnp.asarray([bool(trainable.get(k)) for k in state_lib.NETS], jnp.int32)  # static per phase
  params = optax.apply_updates(state.params, updates)
  if 'teacher' in params:  # carried over, not added to its zero update: x + 0 turns a -0.0 into +0.0
    params = {**params, 'teacher': state.params['teacher']}
  vec = jnp.stack([terms[k] for k in TERMS])
  finite = jnp.isfinite(vec)
  first_bad = jnp.argmin(finite)  # first False
  newly_bad = (state.bad_step < 0) & ~jnp.all(finite)
  new = state.replace(
      step=state.step + 1, params=params, opt_state=opt_state,
      err_sum=state.err_sum + jnp.stack([terms['e_dsr'], terms['e_de']]),
      err_count=state.err_count + 1,
      bad_step=jnp.where(newly_bad, state.step, state.bad_step),
      bad_term=jnp.where(newly_bad, first_bad.astype(jnp.int32), state.bad_term),
      updates=state.updates + counted)
  return new, terms


def logged_step(state: TrainState, batch, sums, *, schedules: dict, **kwargs):
  """The training loop's step: `train_step`, with what the log reads kept on the device, so that the host
  does no work between log steps. Returns (state, sums + this step's TERMS, {net: learning rate}).

  The rate is each net's schedule at its update count before this step: the rate it trained with here, or
  for a net frozen in this phase the one it resumes with.
  """
  rates = {k: fn(state.updates[state_lib.NETS.index(k)]) for k, fn in schedules.items()}
  state, terms = train_step(state, batch, **kwargs)  # the module's global: tests count its traces
  return state, sums + jnp.stack([terms[k] for k in TERMS]), rates


def zero_sums():
  return jnp.zeros((len(TERMS),), jnp.float32)


def start_round(state: TrainState, teacher) -> TrainState:
  """Stores the finished round's mean errors, sets the new teacher and clears the running sums."""
  mean = state.err_sum / jnp.maximum(state.err_count, 1).astype(jnp.float32)
  return state.replace(prev_err=mean, teacher=jnp.asarray(teacher, jnp.int32),
                       err_sum=jnp.zeros_like(state.err_sum), err_count=jnp.zeros_like(state.err_count))
