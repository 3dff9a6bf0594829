"""The train state: parameters, optimizer state, and the role bookkeeping of the current round."""
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from dsr_jax.models import NETS  # the order of TrainState.updates


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32: optimiser steps taken.
  params: Any  # {'dsr': ..., 'denet': ..., 'spnet': ...} (plain dicts; 'dsr' alone for "w/o CT"; + 'teacher').
  opt_state: Any
  err_sum: jax.Array  # f32[2]: sum over this round's steps of (e_dsr, e_de).
  err_count: jax.Array  # int32: steps summed in err_sum.
  teacher: jax.Array  # int32: roles.NO_TEACHER (stage 1), roles.DSR or roles.DENET.
  prev_err: jax.Array  # f32[2]: the previous round's mean errors, which picked the teacher.
  bad_step: jax.Array  # int32: first step with a non-finite loss term (-1: none yet).
  bad_term: jax.Array  # int32: index into steps.TERMS of that term.
  # int32[3]: updates each network has received, in NETS order (a frozen net's count stands still). Its
  # schedule runs on this count; kept here so the step can report its rates without reading optax's state.
  updates: jax.Array


def init_params(models, key, scale: int, size: int = 16):
  """Initial parameters of every network (side heads included) from one key."""
  keys = dict(zip(NETS, jax.random.split(key, 3)))
  params = {name: net.init(keys[name], *net.dummy_inputs(size, scale), train=True)['params']
            for name, net in models.nets().items()}
  if models.teacher is not None:  # a key of its own: the other networks start as they do without a teacher
    t = models.teacher
    params['teacher'] = t.init(jax.random.fold_in(key, len(NETS)), *t.dummy_inputs(size, scale), train=True)['params']
  return params


def create(models, tx, key, scale: int) -> TrainState:
  params = init_params(models, key, scale)
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
      err_sum=jnp.zeros((2,), jnp.float32), err_count=jnp.zeros((), jnp.int32),
      teacher=jnp.full((), -1, jnp.int32), prev_err=jnp.zeros((2,), jnp.float32),
      bad_step=jnp.full((), -1, jnp.int32), bad_term=jnp.full((), -1, jnp.int32),
      updates=jnp.zeros((len(NETS),), jnp.int32))


def role_state(state: TrainState) -> dict:
  """The non-array-tree part of the state, as host numpy (checkpointed alongside params)."""
  return {k: np.asarray(jax.device_get(getattr(state, k))) for k in ROLE_KEYS}


ROLE_KEYS = ('step', 'err_sum', 'err_count', 'teacher', 'prev_err', 'bad_step', 'bad_term', 'updates')
