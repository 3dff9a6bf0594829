"""The parts that train.train_and_evaluate drives: the prefetcher, the compiled steps, the checkpoints (with the
best validation MAD) and the image summaries.

Each owns its state; the loop in train.py reads top to bottom and holds no closures.
"""
import contextlib
import functools
import json
import os
import queue
import threading
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from dsr_jax import checkpointing
from dsr_jax import inference
from dsr_jax import losses
from dsr_jax import optim
from dsr_jax import pictures
from dsr_jax import resize
from dsr_jax import restore
from dsr_jax import sharding
from dsr_jax import state as state_lib
from dsr_jax import steps
from dsr_jax import xla_options
from dsr_jax.errors import CheckpointWriteError
from dsr_jax.errors import ConfigError
from dsr_jax.errors import UserError
from dsr_jax.errors import one_line


class NonFiniteLoss(UserError):
  """Training produced a NaN/Inf loss; the message names the step and the term."""


def check_finite(state):
  """Raises NonFiniteLoss once the state has recorded a non-finite loss term (steps.train_step)."""
  bad_step, bad_term = (int(x) for x in jax.device_get((state.bad_step, state.bad_term)))
  if bad_step >= 0:
    raise NonFiniteLoss(f'non-finite loss at step {bad_step} in term {steps.TERMS[bad_term]!r}; '
                        'training stopped before it could be checkpointed')


# ---------------------------------------------------------------------------------------------- the data

class Prefetcher:
  """Background thread: next(iterator) -> global device arrays, `size` batches ahead of the step.

  Each item carries the iterator state just after its batch, so a checkpoint taken after consuming it
  records the exact position regardless of how far ahead the thread has read.
  """

  def __init__(self, iterator, mesh, size: int):
    self._it, self._mesh = iterator, mesh
    self._q = queue.Queue(maxsize=max(size, 1))
    self._stop = threading.Event()
    self._t = threading.Thread(target=self._run, daemon=True)
    self._t.start()

  def _run(self):
    try:
      while not self._stop.is_set():
        batch = next(self._it)
        st = self._it.get_state()
        item = (sharding.to_global(batch, self._mesh), st)
        while not self._stop.is_set():
          try:
            self._q.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
    except Exception as e:  # pylint: disable=broad-except
      self._q.put(e)

  def get(self):
    item = self._q.get()
    if isinstance(item, Exception):
      raise item
    return item

  def close(self):
    self._stop.set()
    self._t.join(timeout=5)


# ------------------------------------------------------------------------------------- the compiled steps


class CompiledSteps:
  """One compiled train step per phase, and one gradient-norm diagnostic per phase, each built on first use;
  the round start, the zeroed log sums and the image summaries. Phases are static, so a role switch picks an
  already-compiled step and never recompiles."""

  def __init__(self, config, models, tx, nets, replicated, data_sharded):
    self._repl, self._data = replicated, data_sharded
    self._schedules = optim.schedules(config, nets)
    self._tx = tx
    lr_method = config.data.degrade if config.data.lr_on_device else ''
    self._common = dict(models=models, loss_cfg=config.loss, scale=config.model.scale, lr_method=lr_method)
    self._train, self._grad_norms = {}, {}
    self.zero_sums = jax.jit(steps.zero_sums, out_shardings=replicated)
    self.new_round = jax.jit(steps.start_round, out_shardings=replicated, donate_argnums=0)
    self.images = jax.jit(functools.partial(image_summaries, models))

  def train(self, phase):
    """(state, batch, sums) -> (state, sums, rates): the logged terms add up on the device (steps.logged_step)."""
    if phase.name not in self._train:
      fn = functools.partial(steps.logged_step, schedules=self._schedules, tx=self._tx, phase=phase,
                             **self._common)
      self._train[phase.name] = jax.jit(
          fn, in_shardings=(self._repl, self._data, self._repl), out_shardings=(self._repl,) * 3,
          donate_argnums=(0, 2), compiler_options=xla_options.compiler_options())
    return self._train[phase.name]

  def grad_norms(self, phase):
    """(params, batch) -> {term: {net: norm}}. Diagnostics only, at log steps: its own compiled function, so
    the train step stays as it is."""
    if phase.name not in self._grad_norms:
      fn = functools.partial(steps.term_grad_norms, phase=phase, **self._common)
      self._grad_norms[phase.name] = jax.jit(fn, in_shardings=(self._repl, self._data), out_shardings=self._repl,
                                             compiler_options=xla_options.compiler_options())
    return self._grad_norms[phase.name]


# ------------------------------------------------------------------------------------ the image summaries

def image_summaries(models, params, batch):
  """LR, SR, GT, DE output, structure prediction and target, error map of the first example."""
  one = jax.tree.map(lambda x: x[:1], batch)
  sr = steps.apply_net(models.dsr, params['dsr'], one)
  out = {'lr': one['lr_depth'], 'sr': sr.depth, 'gt': one['hr_depth'],
         'error': jnp.abs(sr.depth - one['hr_depth']) * one['valid'],
         'structure_target': losses.gradient_magnitude(one['hr_depth'])}
  if models.denet is not None:
    de = models.denet.apply({'params': params['denet']}, one['rgb'], one['lr_depth'], train=True)
    out['de'] = de.depth
    if models.spnet is not None:
      out['structure_pred'] = models.spnet.apply({'params': params['spnet']}, sr.feats[-1],
                                                 de.feats[-1], sr.depth, de.depth, one['hr_depth'])
  return out


def write_images(writer, step, imgs):
  """One strip of the first training crop: LR (nearest, at HR size) | SR | DE | GT | error | structure."""
  imgs = jax.device_get(imgs)
  gt = imgs['gt'][0, ..., 0]
  lo, hi = float(gt.min()), float(gt.max())
  s = gt.shape[0] // imgs['lr'].shape[1]
  depth = lambda v: pictures.colourise(v, 'viridis', lo, hi)
  panels = [depth(np.kron(imgs['lr'][0, ..., 0], np.ones((s, s), np.float32))), depth(imgs['sr'][0, ..., 0])]
  if 'de' in imgs:
    panels.append(depth(imgs['de'][0, ..., 0]))
  err = imgs['error'][0, ..., 0]
  panels += [depth(gt), pictures.colourise(err, 'inferno', 0.0, max(float(err.max()), 1e-3))]
  target = imgs['structure_target'][0, ..., 0]
  panels.append(pictures.colourise(target, 'magma', 0.0, max(float(target.max()), 1e-6)))
  if 'structure_pred' in imgs:
    panels.append(pictures.colourise(imgs['structure_pred'][0, ..., 0], 'magma', 0.0,
                                     max(float(target.max()), 1e-6)))
  writer.write_images(step, {'images/train_crop': pictures.strip(panels)[None]})


def first_val_scene(dataset):
  """The first validation image as (lr (h, w, 1), hr (H, W, 1), valid (H, W, 1)): one fixed scene whose
  pictures are comparable from one image step to the next."""
  for b in dataset:
    for i in range(len(b['mask'])):
      if b['mask'][i]:
        return b['lr_depth'][i], b['hr_depth'][i], b['valid'][i]
  return None


def val_scene_strip(dsr, params, scene, scale: int) -> np.ndarray:
  """bicubic-upsampled LR | SR | GT on the GT's colour scale | |SR - GT| (inferno, 0 to a tenth of the GT's
  range, fixed so that steps compare)."""
  lr, hr, valid = scene
  h, w = hr.shape[:2]
  sr = inference.super_resolve(dsr, inference.to_device(params), lr)[:h, :w]
  bic = resize.upsample_bicubic(np.asarray(lr, np.float64)[None], scale)[0, :h, :w, 0]
  gt, v = hr[..., 0], valid[..., 0] > 0
  lo, hi = (float(gt[v].min()), float(gt[v].max())) if v.any() else (float(gt.min()), float(gt.max()))
  depth = lambda x: pictures.colourise(x, 'viridis', lo, hi)
  err = np.abs(sr - gt) * v
  return pictures.strip([depth(bic), depth(sr), depth(gt),
                         pictures.colourise(err, 'inferno', 0.0, max((hi - lo) / 10, 1e-6))])


# ---------------------------------------------------------------------------------------- the checkpoints


class Checkpoints:
  """The run's two checkpoint managers (every ckpt.every_steps and the last; the best by validation MAD) and
  the best MAD so far, which survives resumes: it is read back from the best checkpoint."""

  def __init__(self, workdir: str, config):
    self.workdir, self._config = workdir, config
    self.manager = checkpointing.manager(workdir, config.ckpt.keep)
    self.best_manager = checkpointing.best_manager(workdir)
    self.best_mad = checkpointing.best_metric(self.best_manager)
    self.slowest_save = 0.0  # seconds: what the budget rule reserves for the last save

  def save(self, step: int, state, data_state) -> None:
    """The state after `step`, and the data position after its batch."""
    check_finite(state)
    t0 = time.perf_counter()
    with saving(checkpointing.ckpt_dir(self.workdir)):
      checkpointing.save(self.manager, step, state, state_lib.role_state(state), data_state, self._config)
    self.slowest_save = max(self.slowest_save, time.perf_counter() - t0)

  def keep_best(self, step: int, state, mad: float, bicubic_mad: float) -> None:
    """Saves the state as the best checkpoint (what eval and predict pick from a workdir) if `mad` beats it."""
    if mad < self.best_mad:
      check_finite(state)
      with saving(os.path.join(self.workdir, checkpointing.BEST_DIR)):
        checkpointing.save_best(self.best_manager, step, state, self._config,
                                {'val_mad': mad, 'bicubic_mad': bicubic_mad})
      self.best_mad = mad

  def wait(self) -> None:
    """Until every asynchronous save has landed; a failed one reports here (or at the next save), naming the
    step directory it could not write."""
    with saving(checkpointing.ckpt_dir(self.workdir)):
      self.manager.wait_until_finished()

  def close(self) -> None:
    try:
      self.wait()
    finally:
      for m in (self.manager, self.best_manager):
        try:
          m.close()
        except Exception as e:  # pylint: disable=broad-except
          logging.warning('closing %s: %s', m.directory, one_line(e))  # already reported by the wait


def check_resume_config(config, workdir: str) -> bool:
  """Whether `workdir` has checkpoints to resume; refuses them when their networks have other shapes.

  Orbax would fail on every step with shape errors, and restore_latest would report them as unreadable;
  the checkpoints are fine, the model config changed. Checked on the newest step's saved config.
  """
  root = os.path.join(workdir, restore.CKPT_DIR)
  steps_ = restore.saved_steps(root)
  if not steps_:
    return False
  nets = optim.NETS + ('teacher',)  # a frozen teacher is part of the state too
  try:
    saved = restore.read_config(root, steps_[-1])
    old = jax.tree.map(lambda x: x.shape, restore.abstract_params(saved, nets))
  except Exception:  # pylint: disable=broad-except
    return True  # Unreadable or from older code: restore_latest falls back or explains.
  new = jax.tree.map(lambda x: x.shape, restore.abstract_params(config, nets))
  if old == new:
    return True
  # Both through JSON, as the checkpoint's copy was (tuples become lists there).
  before = flat(saved.model.to_dict(), 'model.')
  now = flat(json.loads(config.model.to_json_best_effort()), 'model.')
  diffs = [f'{k}={before[k]!r} there, {now[k]!r} now' for k in sorted(before.keys() & now.keys())
           if before[k] != now[k]]
  raise ConfigError(f'{root}: its checkpoints hold networks of other shapes than this config\'s '
                    f'({"; ".join(diffs) or "model settings differ"}); resume with the model settings they '
                    'were trained with, or give another --workdir')


def _os_cause(e: BaseException):
  """The OSError behind `e` (orbax wraps the one its writer thread met), or None."""
  seen = set()
  while e is not None and id(e) not in seen:
    if isinstance(e, OSError):
      return e
    seen.add(id(e))
    e = e.__cause__ or e.__context__
  return None


@contextlib.contextmanager
def saving(directory: str):
  """Turns a failed checkpoint write into one line that names the directory and the cause.

  The checkpoints already committed are untouched (orbax writes a step into a temporary directory and
  renames it only when complete; the old ones are deleted only after that), so the same command resumes
  from the newest of them once the disk has room again.
  """
  try:
    yield
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    logging.info('checkpoint write failed', exc_info=True)  # the traceback, for --verbosity=0
    cause = _os_cause(e)
    why = (f'{cause.strerror or type(cause).__name__}' + (f': {cause.filename}' if cause.filename else '')
           if cause is not None else one_line(e, 160))
    raise CheckpointWriteError(f'{directory}: saving a checkpoint failed: {why}; the checkpoints saved '
                               'before it are intact, and the same command resumes from the newest once '
                               'the directory takes writes again') from None


def flat(d, prefix=''):
  """{'a.b': leaf} of a nested dict; leaves other than numbers, strings and bools as their str."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v if isinstance(v, (int, float, str, bool)) else str(v)
  return out
