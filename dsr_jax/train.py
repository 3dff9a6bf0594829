"""train_and_evaluate(config, workdir): mesh, state, the phase schedule, logging, checkpoints, validation.

No math lives here: losses are in losses.py, the steps in steps.py, the role logic in roles.py.
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
from dsr_jax import config_lib
from dsr_jax import evaluate
from dsr_jax import lifecycle
from dsr_jax import models as models_lib
from dsr_jax import optim
from dsr_jax import paths
from dsr_jax import pictures
from dsr_jax import resize
from dsr_jax import roles
from dsr_jax import sharding
from dsr_jax import state as state_lib
from dsr_jax import steps
from dsr_jax import writers
from dsr_jax import xla_options
from dsr_jax.errors import ConfigError
from dsr_jax.errors import UserError
from dsr_jax.errors import one_line


class NonFiniteLoss(UserError):
  """Training produced a NaN/Inf loss; the message names the step and the term."""


def cross_task(config) -> bool:
  return bool(config.model.use_denet)


def validate(config) -> None:
  """A training config's checks (config_lib.validate's train mode) and the batch over this machine's devices."""
  config_lib.validate(config, mode='train')
  n = jax.device_count()
  if config.train.batch_size % n:
    raise ConfigError(f'train.batch_size={config.train.batch_size}: expected a multiple of the '
                      f'device count {n}')


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


def image_summaries(models, params, batch, scale: int):
  """LR, SR, GT, DE output, structure prediction and target, error map of the first example."""
  from dsr_jax import losses  # pylint: disable=g-import-not-at-top
  one = jax.tree.map(lambda x: x[:1], batch)
  sr = models.dsr.apply({'params': params['dsr']}, one['lr_depth'], train=True)
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


def _write_images(writer, step, imgs):
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
  sr = evaluate.super_resolve(dsr, params, lr)[:h, :w]
  bic = resize.upsample_bicubic(np.asarray(lr, np.float64)[None], scale)[0, :h, :w, 0]
  gt, v = hr[..., 0], valid[..., 0] > 0
  lo, hi = (float(gt[v].min()), float(gt[v].max())) if v.any() else (float(gt.min()), float(gt.max()))
  depth = lambda x: pictures.colourise(x, 'viridis', lo, hi)
  err = np.abs(sr - gt) * v
  return pictures.strip([depth(bic), depth(sr), depth(gt),
                         pictures.colourise(err, 'inferno', 0.0, max((hi - lo) / 10, 1e-6))])


def val_dataset(config):
  """Whole-image batches of data.val_split of data.val_name (or of data.name when that is empty)."""
  from dsr_jax.input_pipeline import pipeline  # pylint: disable=g-import-not-at-top
  from dsr_jax.input_pipeline import sources  # pylint: disable=g-import-not-at-top
  from dsr_jax.input_pipeline import degradation  # pylint: disable=g-import-not-at-top
  names = degradation.parse_names(config.data.val_degradations, 'data.val_degradations')
  name = config.data.val_name
  if not name:
    return pipeline.eval_dataset(config, config.data.val_split, degradations=names)
  data = config.data.copy_and_resolve_references()
  data.unlock()
  data.name = name
  return pipeline.eval_dataset(config, config.data.val_split,
                               source=sources.get_source(data, config.data.val_split), degradations=names)


# Validation scores in dataset units over each image's valid pixels (no border crop, no rounding): the
# validation mix may hold datasets of different units, and MAD alone picks the best checkpoint.
VALIDATION = evaluate.Protocol('dataset units', 1.0, reference='training-time validation')


def val_evaluator(config, dataset=None) -> evaluate.Evaluator:
  """The Evaluator of data.val_split of data.val_name (or data.name) that picks the best checkpoint."""
  name = config.data.val_name or config.data.name
  return evaluate.Evaluator(val_dataset(config) if dataset is None else dataset, VALIDATION,
                            config.model.scale, metrics=('mad',),
                            name=f'data.val_name={name!r}: split {config.data.val_split!r}')


def validate_params(evaluator: evaluate.Evaluator, models, params) -> dict:
  """DSRNet through evaluate.super_resolve (mirrored borders, shape buckets), exactly as eval mode runs it,
  with the bicubic baseline beside it: {'per_scene', 'mean', 'images', 'bicubic', ...} (see Evaluator)."""
  dsr_params = jax.device_get(params['dsr'])
  return evaluator(lambda lr: evaluate.super_resolve(models.dsr, dsr_params, lr), baseline=True)


def validation_scalars(result: dict) -> dict:
  """TensorBoard's eval/<metric> and eval/bicubic_<metric>, for whichever metrics the result holds."""
  out = {f'eval/{k}': v for k, v in result['mean'].items() if v is not None}
  out.update({f'eval/bicubic_{k}': v for k, v in result['bicubic']['mean'].items() if v is not None})
  return out


def check_resume_config(config, workdir: str) -> bool:
  """Whether `workdir` has checkpoints to resume; refuses them when their networks have other shapes.

  Orbax would fail on every step with shape errors, and restore_latest would report them as unreadable;
  the checkpoints are fine, the model config changed. Checked on the newest step's saved config.
  """
  from dsr_jax import restore  # pylint: disable=g-import-not-at-top
  root = os.path.join(workdir, restore.CKPT_DIR)
  steps_ = restore.saved_steps(root)
  if not steps_:
    return False
  try:
    saved = restore.read_config(root, steps_[-1])
    old = jax.tree.map(lambda x: x.shape, restore.abstract_params(saved, optim.NETS))
  except Exception:  # pylint: disable=broad-except
    return True  # Unreadable or from older code: restore_latest falls back or explains.
  new = jax.tree.map(lambda x: x.shape, restore.abstract_params(config, optim.NETS))
  if old == new:
    return True
  # Both through JSON, as the checkpoint's copy was (tuples become lists there).
  before = _flat(saved.model.to_dict(), 'model.')
  now = _flat(json.loads(config.model.to_json_best_effort()), 'model.')
  diffs = [f'{k}={before[k]!r} there, {now[k]!r} now' for k in sorted(before.keys() & now.keys())
           if before[k] != now[k]]
  raise ConfigError(f'{root}: its checkpoints hold networks of other shapes than this config\'s '
                    f'({"; ".join(diffs) or "model settings differ"}); resume with the model settings they '
                    'were trained with, or give another --workdir')


def train_and_evaluate(config, workdir: str, *, role_rule=None, started: float | None = None) -> dict:
  """Trains (resuming from the latest checkpoint in workdir) and returns the final validation summary.

  role_rule: (e_dsr, e_de) of the finished round -> the next round's teacher code (roles.DSR, DENET or
  MUTUAL); default roles.role_rule(config.train.roles). Tests pass one to force role switches.
  started: the time.time() from which train.time_budget counts (main passes the process's start); default
  now, so that a notebook's long-lived kernel does not count against the run.
  """
  from dsr_jax.input_pipeline import pipeline  # pylint: disable=g-import-not-at-top
  started = time.time() if started is None else started
  validate(config)
  # model.dtype / bp_impl 'auto' become this backend's choices, once: everything below, the configs saved
  # with the checkpoints included, sees what the run used.
  config = models_lib.resolve_config(config)
  paths.check_dir_target(workdir, '--workdir')
  workdir = os.path.abspath(workdir)
  resuming = check_resume_config(config, workdir)
  tcfg = config.train
  is_ct = cross_task(config)
  models = models_lib.build(config.model)
  nets = tuple(models.nets())
  tx = optim.make(config, nets)
  mesh = sharding.make_mesh()
  repl = sharding.replicated(mesh)
  data_sh = sharding.data_sharded(mesh)
  scale = config.model.scale

  create = functools.partial(state_lib.create, models, tx, scale=scale)
  key = jax.random.key(config.seed)
  abstract = jax.eval_shape(create, key)
  train_iter = iter(pipeline.train_dataset(config))
  if not resuming:
    # The first batch reads, crops and degrades real examples, so a data mistake that shows only there (an
    # image smaller than data.crop) fails before the workdir exists; the rewind keeps the data order.
    first_state = train_iter.get_state()
    next(train_iter)
    train_iter.set_state(first_state)
  # The validation split too is opened before anything is written: a missing or empty one fails now, with
  # no workdir left behind, not after the whole run.
  val_data = val_dataset(config)
  val_eval = val_evaluator(config, val_data)
  val_scene = first_val_scene(val_data) if jax.process_index() == 0 else None  # TensorBoard's fixed scene
  # Read before the workdir exists, so that a wrong checkpoint leaves nothing behind; a resume ignores it.
  init_dsr = None
  if tcfg.init_from and not resuming:
    from dsr_jax import restore  # pylint: disable=g-import-not-at-top
    init_dsr = restore.init_from(tcfg.init_from, abstract.params)['dsr']
  # clu's writer and actions import TensorFlow (~4 s): only once every check above has passed. Without
  # TensorFlow the metrics go to the console and metrics.jsonl (writers.py).
  sink = writers.Sink()
  os.makedirs(workdir, exist_ok=True)
  # Held until the run ends; a second run on this workdir refuses instead of mixing its checkpoints in.
  with lifecycle.workdir_lock(workdir), lifecycle.StopRequest(tcfg.time_budget, started) as stop:

    mngr = checkpointing.manager(workdir, config.ckpt.keep)
    best_mngr = checkpointing.best_manager(workdir)
    best = {'mad': checkpointing.best_metric(best_mngr)}  # survives resumes: read back from the best checkpoint
    restored = checkpointing.restore_latest(mngr, abstract, repl)
    if restored is None:
      state = jax.jit(create, out_shardings=repl)(key)
      data_state = None
      if init_dsr is not None:
        state = state.replace(params={**state.params, 'dsr': jax.device_put(init_dsr, repl)})
        _say(f'DSRNet starts from {tcfg.init_from} (train.init_from)')
    else:
      step0, params, opt_state, role, data_state = restored
      role = state_lib.upgrade_role(role, opt_state, nets)
      state = jax.device_put(abstract.replace(
          params=params, opt_state=opt_state,
          **{k: jnp.asarray(np.asarray(role[k], dtype=getattr(abstract, k).dtype)) for k in role}), repl)
      train_iter.set_state(data_state)
      logging.info('resumed from step %d', step0)
      _say(f'resumed from step {step0}')
    start = int(jax.device_get(state.step))

    # One compiled step per phase; phases are static, so a role switch never recompiles.
    lr_method = config.data.degrade if config.data.lr_on_device else ''
    phases = roles.make_phases(config)
    pick = role_rule or roles.role_rule(tcfg.roles)
    jitted, jitted_grads = {}, {}

    schedules = optim.schedules(config, nets)

    def step_fn(phase):
      # (state, batch, sums) -> (state, sums, rates): the logged terms add up on the device (steps.logged_step).
      if phase.name not in jitted:
        fn = functools.partial(steps.logged_step, schedules=schedules, models=models, tx=tx, phase=phase,
                               loss_cfg=config.loss, scale=scale, lr_method=lr_method)
        jitted[phase.name] = jax.jit(fn, in_shardings=(repl, data_sh, repl), out_shardings=(repl, repl, repl),
                                     donate_argnums=(0, 2), compiler_options=xla_options.compiler_options())
      return jitted[phase.name]

    zero_sums = jax.jit(steps.zero_sums, out_shardings=repl)

    def grads_fn(phase):
      # Diagnostics only, at log steps: its own compiled function, so the train step stays as it is.
      if phase.name not in jitted_grads:
        fn = functools.partial(steps.term_grad_norms, models=models, phase=phase, loss_cfg=config.loss,
                               scale=scale, lr_method=lr_method)
        jitted_grads[phase.name] = jax.jit(fn, in_shardings=(repl, data_sh), out_shardings=repl,
                                           compiler_options=xla_options.compiler_options())
      return jitted_grads[phase.name]

    new_round = jax.jit(steps.start_round, out_shardings=repl, donate_argnums=0)
    images_fn = jax.jit(functools.partial(image_summaries, models, scale=scale))

    writer = sink.writer(workdir, just_logging=jax.process_index() > 0)
    if not sink.tensorboard:
      _say(sink.notice(workdir))
    if start == 0:
      writer.write_hparams({k: v for k, v in _flat(config.to_dict()).items()})
    report = sink.report(tcfg.num_steps, writer)
    hooks = [report]
    if tcfg.profile and jax.process_index() == 0:
      hooks.append(sink.profile(workdir, 5))

    prefetch = Prefetcher(train_iter, mesh, config.data.prefetch)
    def keep_best(step, mad, bic):
      # The best checkpoint (by validation MAD) is what eval and predict pick from a workdir.
      if mad < best['mad']:
        _check_finite(state)
        with _saving(os.path.join(workdir, checkpointing.BEST_DIR), step):
          checkpointing.save_best(best_mngr, step, state, config, {'val_mad': mad, 'bicubic_mad': bic})
        best['mad'] = mad

    def save(step):
      _check_finite(state)
      t0 = time.perf_counter()
      with _saving(checkpointing.ckpt_dir(workdir), step):
        checkpointing.save(mngr, step, state, state_lib.role_state(state), last_data_state, config)
      took['save'] = max(took['save'], time.perf_counter() - t0)

    def validate_now(step):
      t0 = time.perf_counter()
      val = validate_params(val_eval, models, state.params)
      took['validation'] = time.perf_counter() - t0
      writer.write_scalars(step, validation_scalars(val))
      return val, val['mean']['mad'], val['bicubic']['mean']['mad']

    def validate_and_keep(step):
      """A validation during the run: scalars, the best checkpoint, one console line."""
      val, mad, bic = validate_now(step)
      keep_best(step, mad, bic)
      _say(f'step {step}: validation MAD {mad:.4g} (bicubic {bic:.4g}, {val["images"]} images)'
           + ('; best so far' if best['mad'] == mad else f'; best {best["mad"]:.4g}'))
      return val

    # What the budget rule (configs/default.py, train.time_budget) adds to the time spent: the last log
    # interval (the next one should take about as long), the last validation (before any: the start-up's
    # length, a validation being mostly compilation and reading) and the slowest save.
    took = {'validation': time.time() - started, 'save': 0.0}

    sums, n_acc = zero_sums(), 0
    last_data_state = data_state if data_state is not None else train_iter.get_state()
    t_log = time.perf_counter()
    t_budget = t_log
    single_process = jax.process_count() == 1
    val, val_step = None, -1
    summary = {}
    try:
      with writers.ensure_flushes(writer), jax.set_mesh(mesh):
        # Host copy of the teacher: it only changes at round starts, so reading state.teacher every step
        # would be a needless per-step host sync that stalls asynchronous dispatch.
        teacher = int(jax.device_get(state.teacher))
        if teacher == roles.MUTUAL and 'mutual' not in phases:
          # Resumed from a 'mutual' run under other train.roles: pick this round's teacher by the new rule.
          e = jax.device_get(state.prev_err)
          teacher = pick(float(e[0]), float(e[1]))
          state = state.replace(teacher=jax.device_put(jnp.asarray(teacher, jnp.int32), repl))
        for step in range(start, tcfg.num_steps):
          if is_ct and roles.is_round_start(step, tcfg.stage1_steps, tcfg.round_steps):
            s_ = jax.device_get(state.err_sum) / max(int(jax.device_get(state.err_count)), 1)
            teacher = pick(float(s_[0]), float(s_[1]))
            state = new_round(state, teacher)
          elif not is_ct or step < tcfg.stage1_steps:
            if step % tcfg.round_steps == 0 and step > 0:
              state = new_round(state, roles.NO_TEACHER)
          phase = roles.phase_for(phases, teacher if is_ct and step >= tcfg.stage1_steps else roles.NO_TEACHER,
                                  is_ct)
          batch, last_data_state = prefetch.get()
          state, sums, rates = step_fn(phase)(state, batch, sums)
          n_acc += 1
          done = step + 1
          for h in hooks:
            h(done)
          is_last = done == tcfg.num_steps
          if done % tcfg.log_every == 0 or is_last:
            _check_finite(state)
            got_sums, got_rates, role = jax.device_get((sums, rates, (state.teacher, state.prev_err)))
            vals = {f'train/{k}': float(v) / n_acc for k, v in zip(steps.TERMS, got_sums)}
            now = time.perf_counter()
            vals['train/steps_per_s'] = n_acc / (now - t_log)
            t_log = now
            vals['train/teacher'] = float(role[0])
            vals['train/e_dsr_prev_round'], vals['train/e_de_prev_round'] = map(float, role[1])
            vals.update({f'train/lr_{k}': float(v) for k, v in got_rates.items()})
            if tcfg.grad_diagnostics:
              for term, per_net in jax.device_get(grads_fn(phase)(state.params, batch)).items():
                vals.update({f'grad/{term}/{net}': float(g) for net, g in per_net.items()})
            writer.write_scalars(done, vals)
            _say(_progress_line(done, tcfg.num_steps, vals, teacher if is_ct else None))
            sums, n_acc = zero_sums(), 0
          if sink.tensorboard and (done % tcfg.image_every == 0 or is_last):
            _write_images(writer, done, images_fn(state.params, batch))
            if val_scene is not None:
              writer.write_images(done, {'images/val_scene': val_scene_strip(
                  models.dsr, jax.device_get(state.params['dsr']), val_scene, scale)[None]})
          if config.eval.every_steps and (done % config.eval.every_steps == 0) and not is_last:
            with report.timed('eval'):
              val, val_step = validate_and_keep(done), done
          saved = done % config.ckpt.every_steps == 0 or is_last
          if saved:
            save(done)
          if not is_last and done % tcfg.log_every == 0:
            now = time.perf_counter()
            stop.over_budget((now - t_budget) + took['validation'] + took['save'])
            t_budget = now
          elif not is_last and single_process:
            # Between log steps too, where no other process must agree: a first interval that compiles the
            # phases' steps can outlast a short budget.
            stop.over_budget(took['validation'] + took['save'])
          if not is_last and stop.requested(done):
            # Preempted, or out of time: this step is saved (unless it just was) and the run ends cleanly;
            # the same command resumes from exactly here.
            if not saved:
              save(done)
            with _saving(checkpointing.ckpt_dir(workdir), done):
              mngr.wait_until_finished()
            summary = {'preempted': True, 'step': done, 'signal': stop.signal_name, 'workdir': workdir,
                       'checkpoints': checkpointing.ckpt_dir(workdir)}
            if stop.on_budget:
              # A budget leaves time for what a preemption notice does not: the final validation, so the
              # best checkpoint holds the best network so far (unless this step was just validated).
              if val is None or val_step != done:
                val = validate_and_keep(done)
              summary.update(stopped_on_budget=True, budget_min=float(tcfg.time_budget),
                             elapsed_min=stop.elapsed() / 60, num_steps=tcfg.num_steps,
                             val_mad=val['mean']['mad'], bicubic_mad=val['bicubic']['mean']['mad'],
                             val_images=val['images'], best_val_mad=best['mad'],
                             best_checkpoint=os.path.join(workdir, checkpointing.BEST_DIR))
            break
        else:
          _check_finite(state)
          final_step = int(jax.device_get(state.step))
          val, mad, bic = validate_now(final_step)
          keep_best(final_step, mad, bic)
          summary = {'val_mad': mad, 'bicubic_mad': bic, 'val_images': val['images'], 'workdir': workdir,
                     'checkpoints': checkpointing.ckpt_dir(workdir), 'step': final_step,
                     'best_val_mad': best['mad'],
                     'best_checkpoint': os.path.join(workdir, checkpointing.BEST_DIR)}
      if not sink.tensorboard:
        summary['metrics_file'] = writers.metrics_path(workdir)
    finally:
      prefetch.close()
      try:
        # An asynchronous save that failed reports here (or at the next save).
        with _saving(checkpointing.ckpt_dir(workdir), None):
          mngr.wait_until_finished()
      finally:
        for m in (mngr, best_mngr):
          try:
            m.close()
          except Exception as e:  # pylint: disable=broad-except
            logging.warning('closing %s: %s', m.directory, one_line(e))  # already reported by the wait
    return summary


def _check_finite(state):
  bad_step, bad_term = (int(x) for x in jax.device_get((state.bad_step, state.bad_term)))
  if bad_step >= 0:
    raise NonFiniteLoss(f'non-finite loss at step {bad_step} in term {steps.TERMS[bad_term]!r}; '
                        'training stopped before it could be checkpointed')


def _say(line: str) -> None:
  """The console: one line, from the first process only (library logs stay hidden unless --verbosity)."""
  if jax.process_index() == 0:
    print(line, flush=True)


def budget_line(summary: dict) -> str:
  """The one console line of a run that stopped on train.time_budget: where it is and how to go on."""
  return (f"stopped on its time budget at step {summary['step']}/{summary['num_steps']} "
          f"(train.time_budget={summary['budget_min']:g} min, {summary['elapsed_min']:.1f} min used); "
          f"validation MAD {summary['val_mad']:.4f} vs bicubic {summary['bicubic_mad']:.4f}, best "
          f"{summary['best_val_mad']:.4f} in {summary['best_checkpoint']}; checkpoints: "
          f"{summary['checkpoints']}; to go on, re-run the same command with a larger "
          f"--config.train.time_budget (or 0 for none): it resumes from step {summary['step']}")


_TEACHER_NAMES = {roles.NO_TEACHER: 'none', roles.DSR: 'DSRNet', roles.DENET: 'DENet', roles.MUTUAL: 'mutual'}


def _progress_line(step: int, total: int, vals: dict, teacher) -> str:
  """'step 300/3000  total 0.0123  dsr ...  teacher DENet  4.1 steps/s  ETA 11 min': the terms in use."""
  terms = '  '.join(f'{k} {vals[f"train/{k}"]:.4g}' for k in steps.TERMS
                    if vals.get(f'train/{k}', 0.0) != 0.0)
  rate = vals['train/steps_per_s']
  left = (total - step) / rate if rate > 0 else float('inf')
  eta = (f'{left:.0f} s' if left < 120 else f'{left / 60:.0f} min' if left < 7200 else f'{left / 3600:.1f} h')
  who = f'  teacher {_TEACHER_NAMES.get(teacher, teacher)}' if teacher is not None else ''
  return f'step {step}/{total}  {terms}{who}  {rate:.3g} steps/s  ETA {eta}'


class CheckpointWriteError(UserError):
  """A checkpoint could not be written (a full disk, a directory turned read-only); the message says where."""


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
def _saving(directory: str, step):
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
    del step  # an asynchronous save reports at a later step; the cause names the step directory
    raise CheckpointWriteError(f'{directory}: saving a checkpoint failed: {why}; the checkpoints saved '
                               'before it are intact, and the same command resumes from the newest once '
                               'the directory takes writes again') from None


def _flat(d, prefix=''):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v if isinstance(v, (int, float, str, bool)) else str(v)
  return out
