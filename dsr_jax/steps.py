"""Pure, jit-able step functions. The phase (roles.Phase) is static: one compiled step per phase.

The teacher's parameters enter through `stop_gradient`, so its backward pass is never built; its outputs
are constants for the student's distillation terms.
"""
import collections
from typing import Any

import jax
import jax.numpy as jnp
import optax

from dsr_jax import losses
from dsr_jax import roles
from dsr_jax.state import TrainState

# Python-side count of how often each phase's step was traced (a trace runs this module's Python code;
# a cached compiled call does not). Tests use it to prove a role switch never recompiles.
TRACES = collections.Counter()

# Logged loss terms, in the order used by TrainState.bad_term.
TERMS = ('total', 'dsr', 'de', 'struct', 'out', 'aff', 'e_dsr', 'e_de')


def make_lr(batch, scale: int, method: str):
  from input_pipeline import degradation  # pylint: disable=g-import-not-at-top
  return degradation.downsample(batch['hr_depth'], scale, method, xp=jnp)


def loss_fn(params, batch, *, models, phase: roles.Phase, loss_cfg, scale: int):
  """Returns (total, terms) for one phase."""
  tr = phase.train
  sg = lambda net: params[net] if tr[net] else jax.lax.stop_gradient(params[net])
  hr, v = batch['hr_depth'], batch['valid']
  lr = batch['lr_depth']
  sr = models.dsr.apply({'params': sg('dsr')}, lr, train=True)
  zero = jnp.zeros((), jnp.float32)
  t = dict.fromkeys(TERMS, zero)
  t['dsr'] = t['e_dsr'] = losses.l1(sr['depth'], hr, v)
  if phase.name == 'dsr_only':
    t['total'] = t['dsr']
    return t['total'], t
  de = models.denet.apply({'params': sg('denet')}, batch['rgb'], train=True)
  t['e_de'] = losses.l1(de['depth'], hr, v)
  if tr['denet']:  # L_DE (with SSIM) only where DENet learns from it; a frozen teacher needs e_de alone
    t['de'] = losses.de_loss(de['depth'], hr, v, loss_cfg.ssim_lambda)
  if phase.name == 'stage1':
    t['total'] = t['dsr'] + t['de']
    return t['total'], t

  student, teacher = (sr, de) if phase.student == 'dsr' else (de, sr)
  teacher = jax.lax.stop_gradient(teacher)  # already constant (stop_gradient params); explicit for clarity
  t['out'] = losses.side_l1(student['sides'], teacher['sides'], v)
  if loss_cfg.use_affinity:
    t['aff'] = losses.feature_affinity(student['feats'], teacher['feats'], v, loss_cfg.affinity_pool)
  distill = t['out'] + loss_cfg.gamma * t['aff']
  task = t['dsr'] if phase.student == 'dsr' else t['de']
  total = task + loss_cfg.rho2 * distill
  if models.spnet is not None:
    rho1 = loss_cfg.rho1
    # SPNet always trains on L_struct itself; the student sees rho1 * L_struct. One SPNet pass serves both:
    # SPNet's parameter gradient is rescaled by 1 / rho1 (or the features are cut off when rho1 = 0).
    sp_params = losses.scale_gradient(params['spnet'], 1.0 / rho1) if rho1 > 0 else params['spnet']
    feats = (sr['feats'][-1], de['feats'][-1], sr['depth'], de['depth'])
    if rho1 <= 0:
      feats = jax.lax.stop_gradient(feats)
    s_pred = models.spnet.apply({'params': sp_params}, *feats, hr)
    s_gt = losses.gradient_magnitude(hr)
    t['struct'] = losses.l1(s_pred, s_gt, losses.gradient_valid(v))
    total = total + (rho1 if rho1 > 0 else 1.0) * t['struct']
  t['total'] = total
  return total, t


def train_step(state: TrainState, batch, *, models, tx, phase: roles.Phase, loss_cfg, scale: int,
               lr_method: str = '') -> tuple[TrainState, dict[str, Any]]:
  TRACES[phase.name] += 1
  if lr_method:
    batch = dict(batch, lr_depth=make_lr(batch, scale, lr_method))
  (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params, batch, models=models, phase=phase, loss_cfg=loss_cfg, scale=scale)
  trainable = {k: phase.train[k] for k in state.params}
  updates, opt_state = tx.update(grads, state.opt_state, state.params, trainable=trainable)
  params = optax.apply_updates(state.params, updates)
  vec = jnp.stack([terms[k] for k in TERMS])
  finite = jnp.isfinite(vec)
  first_bad = jnp.argmin(finite)  # first False
  newly_bad = (state.bad_step < 0) & ~jnp.all(finite)
  new = state.replace(
      step=state.step + 1, params=params, opt_state=opt_state,
      err_sum=state.err_sum + jnp.stack([terms['e_dsr'], terms['e_de']]),
      err_count=state.err_count + 1,
      bad_step=jnp.where(newly_bad, state.step, state.bad_step),
      bad_term=jnp.where(newly_bad, first_bad.astype(jnp.int32), state.bad_term))
  return new, terms


def start_round(state: TrainState, teacher) -> TrainState:
  """Stores the finished round's mean errors, sets the new teacher and clears the running sums."""
  mean = state.err_sum / jnp.maximum(state.err_count, 1).astype(jnp.float32)
  return state.replace(prev_err=mean, teacher=jnp.asarray(teacher, jnp.int32),
                       err_sum=jnp.zeros_like(state.err_sum), err_count=jnp.zeros_like(state.err_count))


def predict(models, params, lr):
  """Test-time DSRNet (no side heads, no RGB)."""
  return models.dsr.apply({'params': params['dsr'] if 'dsr' in params else params}, lr)
