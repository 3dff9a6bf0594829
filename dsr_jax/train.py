"""train_and_evaluate(config, workdir): a training run, read top to bottom.

  check_config / validate   the training mode's checks of a config
  validation                the validation set, its Evaluator, and `run_validation` (scalars, the best
                            checkpoint, one console line)
  setup                     every check and read that needs no workdir, as one `Setup`
  train_and_evaluate        the loop: rounds and phases (roles.Rounds), the compiled steps, logging, images,
                            checkpoints and the stop requests (trainer.py holds those parts)
  the console               progress and stop lines

No math lives here: losses are in losses.py and terms.py, the steps in steps.py, the role logic in roles.py.
"""
import dataclasses
import functools
import os
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from dsr_jax import checkpointing
from dsr_jax import config_lib
from dsr_jax import evaluate
from dsr_jax import inference
from dsr_jax import lifecycle
from dsr_jax import models as models_lib
from dsr_jax import optim
from dsr_jax import paths
from dsr_jax import restore
from dsr_jax import roles
from dsr_jax import sharding
from dsr_jax import state as state_lib
from dsr_jax import steps
from dsr_jax import teacher as teacher_lib
from dsr_jax import trainer
from dsr_jax import writers
from dsr_jax.errors import ConfigError
from dsr_jax.input_pipeline import degradation
from dsr_jax.input_pipeline import pipeline
from dsr_jax.input_pipeline import sources
from dsr_jax.protocol import Protocol


# ----------------------------------------------------------------------------------------------- the config

def check_config(config) -> None:
  """The training mode's checks of a config, before a run reads data or starts a jax backend (main calls it
  before it sets XLA's flags); ConfigError names the field. The data fields are the pipeline's, checked where
  the training set is built (`pipeline.check_train_config`), before the workdir is created; only their
  cross-task rule (one depth convention in data.name) is checked here."""
  config_lib.check_fields(config)
  roles.check_config(config)
  models_lib.check(config.model)  # not build: resolving model.dtype='auto' would start the jax backend
  optim.schedules(config)  # its ConfigError names a bad optim.*.schedule
  if config.model.use_denet:
    pipeline.check_one_convention(config.data.name)


def validate(config) -> None:
  """check_config, and the batch over this machine's devices."""
  check_config(config)
  n = jax.device_count()
  if config.train.batch_size % n:
    raise ConfigError(f'train.batch_size={config.train.batch_size}: expected a multiple of the '
                      f'device count {n}')


# ------------------------------------------------------------------------------------------------- validation

def val_dataset(config):
  """Whole-image batches of data.val_split of data.val_name (or of data.name when that is empty)."""
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
VALIDATION = Protocol('dataset units', 1.0, reference='training-time validation')


def val_evaluator(config, dataset=None) -> evaluate.Evaluator:
  """The Evaluator of data.val_split of data.val_name (or data.name) that picks the best checkpoint."""
  name = config.data.val_name or config.data.name
  return evaluate.Evaluator(val_dataset(config) if dataset is None else dataset, VALIDATION,
                            config.model.scale, metrics=('mad',),
                            name=f'data.val_name={name!r}: split {config.data.val_split!r}')


def validate_params(evaluator: evaluate.Evaluator, models, params) -> dict:
  """DSRNet through inference.super_resolve (mirrored borders, shape buckets), exactly as eval mode runs it,
  with the bicubic baseline beside it: {'per_scene', 'mean', 'images', 'bicubic', ...} (see Evaluator). A
  teacher trained alone (model.name 'guided' or 'ae') runs on whole images with its guides, as eval mode
  runs it too."""
  if models_lib.reads_more_than_lr(models.dsr):
    return evaluator(teacher_lib.predictor(models.dsr, params['dsr']), baseline=True, guided=True)
  dsr_params = inference.to_device(params['dsr'])  # once, not with every window
  return evaluator(lambda lr: inference.super_resolve(models.dsr, dsr_params, lr), baseline=True)


def validation_scalars(result: dict) -> dict:
  """TensorBoard's eval/<metric> and eval/bicubic_<metric>, for whichever metrics the result holds."""
  out = {f'eval/{k}': v for k, v in result['mean'].items() if v is not None}
  out.update({f'eval/bicubic_{k}': v for k, v in result['bicubic']['mean'].items() if v is not None})
  return out


def run_validation(run: 'Setup', state, step: int, writer, ckpts: trainer.Checkpoints, *,
                   announce: bool = True) -> tuple[dict, float]:
  """One validation of the state after `step`: TensorBoard's eval/*, the best checkpoint when the MAD beats it,
  and (announce) one console line. Returns (the result, the seconds the validation took)."""
  t0 = time.perf_counter()
  val = validate_params(run.evaluator, run.models, state.params)
  seconds = time.perf_counter() - t0
  writer.write_scalars(step, validation_scalars(val))
  mad, bic = val['mean']['mad'], val['bicubic']['mean']['mad']
  ckpts.keep_best(step, state, mad, bic)
  if announce:
    _say(f'step {step}: validation MAD {mad:.4g} (bicubic {bic:.4g}, {val["images"]} images)'
         + ('; best so far' if ckpts.best_mad == mad else f'; best {ckpts.best_mad:.4g}'))
  return val, seconds


# ------------------------------------------------------------------------------------------------------ setup


@dataclasses.dataclass(frozen=True)
class Setup:
  """What a run needs that is read or built before its workdir exists."""
  config: Any  # model.dtype and bp_impl resolved for this backend
  workdir: str  # absolute
  models: models_lib.Models
  nets: tuple[str, ...]
  tx: Any  # optim.make's per-network optimizer
  mesh: jax.sharding.Mesh
  replicated: jax.sharding.NamedSharding
  data_sharded: jax.sharding.NamedSharding
  create: Any  # key -> a fresh TrainState
  key: jax.Array
  abstract: state_lib.TrainState  # eval_shape of create
  train_iter: Any  # the grain iterator of the training set, at its first batch
  evaluator: Any  # val_evaluator's: picks the best checkpoint
  val_scene: tuple | None  # TensorBoard's fixed validation scene (process 0 only)
  init_dsr: Any  # train.init_from's DSRNet parameters (host), or None
  init_teacher: Any = None  # model.teacher_checkpoint's parameters (host), or None


def setup(config, workdir: str) -> Setup:
  """Every check and read of a run that needs no workdir: a mistake in the config, the data, the checkpoints to
  resume or train.init_from fails here, with nothing written."""
  validate(config)
  # model.dtype / bp_impl 'auto' become this backend's choices, once: everything below, the configs saved
  # with the checkpoints included, sees what the run used.
  config = models_lib.resolve_config(config)
  paths.check_dir_target(workdir, '--workdir')
  workdir = os.path.abspath(workdir)
  resuming = trainer.check_resume_config(config, workdir)
  models = models_lib.build(config.model)
  nets = tuple(models.nets())
  tx = optim.make(config, nets, frozen=('teacher',) if models.teacher is not None else ())
  mesh = sharding.make_mesh()
  create = functools.partial(state_lib.create, models, tx, scale=config.model.scale)
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
  evaluator = val_evaluator(config, val_data)
  # The fixed scene's strip runs the network on the LR alone; a teacher trained alone reads more.
  pictured = jax.process_index() == 0 and not models_lib.reads_more_than_lr(models.dsr)
  val_scene = trainer.first_val_scene(val_data) if pictured else None
  # Read before the workdir exists, so that a wrong checkpoint leaves nothing behind; a resume ignores it.
  init_dsr = None
  if config.train.init_from and not resuming:
    init_dsr = restore.init_from(config.train.init_from, abstract.params)['dsr']
  # The frozen teacher too; a resume finds it in its own checkpoint, as it was when the run started.
  init_teacher = None
  if models.teacher is not None and not resuming:
    init_teacher = teacher_lib.load(config, abstract.params['teacher'])
  return Setup(config, workdir, models, nets, tx, mesh, sharding.replicated(mesh), sharding.data_sharded(mesh),
               create, key, abstract, train_iter, evaluator, val_scene, init_dsr, init_teacher)


def start_state(run: Setup, ckpts: trainer.Checkpoints):
  """(state, data position): the newest checkpoint's, the data iterator set to follow it; or a fresh state
  (with train.init_from's DSRNet) and the data's start."""
  restored = checkpointing.restore_latest(ckpts.manager, run.abstract, run.replicated)
  if restored is None:
    state = jax.jit(run.create, out_shardings=run.replicated)(run.key)
    if run.init_dsr is not None:
      state = state.replace(params={**state.params, 'dsr': jax.device_put(run.init_dsr, run.replicated)})
      _say(f'DSRNet starts from {run.config.train.init_from} (train.init_from)')
    if run.init_teacher is not None:
      state = state.replace(params={**state.params, 'teacher': jax.device_put(run.init_teacher, run.replicated)})
      _say(f'frozen teacher {run.config.model.teacher!r} from {run.config.model.teacher_checkpoint}')
    return state, run.train_iter.get_state()
  step0, params, opt_state, role, data_state = restored
  role = optim.upgrade_role(role, opt_state, run.nets)
  abstract = run.abstract
  state = jax.device_put(abstract.replace(
      params=params, opt_state=opt_state,
      **{k: jnp.asarray(np.asarray(role[k], dtype=getattr(abstract, k).dtype)) for k in role}), run.replicated)
  run.train_iter.set_state(data_state)
  logging.info('resumed from step %d', step0)
  _say(f'resumed from step {step0}')
  return state, data_state


# ------------------------------------------------------------------------------------------------- the loop


def train_and_evaluate(config, workdir: str, *, role_rule=None, started: float | None = None) -> dict:
  """Trains (resuming from the latest checkpoint in workdir) and returns the final validation summary.

  role_rule: (e_dsr, e_de) of the finished round -> the next round's teacher code (roles.DSR, DENET or
  MUTUAL); default roles.role_rule(config.train.roles). Tests pass one to force role switches.
  started: the time.time() from which train.time_budget counts (main passes the process's start); default
  now, so that a notebook's long-lived kernel does not count against the run.
  """
  started = time.time() if started is None else started
  run = setup(config, workdir)
  config, workdir, tcfg = run.config, run.workdir, run.config.train
  # clu's writer and actions import TensorFlow (~4 s): only once every check above has passed. Without
  # TensorFlow the metrics go to the console and metrics.jsonl (writers.py).
  sink = writers.Sink()
  os.makedirs(workdir, exist_ok=True)
  # Held until the run ends; a second run on this workdir refuses instead of mixing its checkpoints in.
  with lifecycle.workdir_lock(workdir), lifecycle.StopRequest(tcfg.time_budget, started) as stop:
    ckpts = trainer.Checkpoints(workdir, config)
    try:
      state, data_state = start_state(run, ckpts)
      start = int(jax.device_get(state.step))
      compiled = trainer.CompiledSteps(config, run.models, run.tx, run.nets, run.replicated, run.data_sharded)
      rounds = roles.Rounds(config, role_rule)

      writer = sink.writer(workdir, just_logging=jax.process_index() > 0)
      if not sink.tensorboard:
        _say(sink.notice(workdir))
      if start == 0:
        writer.write_hparams(trainer.flat(config.to_dict()))
      report = sink.report(tcfg.num_steps, writer)
      hooks = [report]
      if tcfg.profile and jax.process_index() == 0:
        hooks.append(sink.profile(workdir, 5))
      prefetch = trainer.Prefetcher(run.train_iter, run.mesh, config.data.prefetch)

      # What the budget rule (configs/default.py, train.time_budget) adds to the time spent: the last log
      # interval (the next one should take about as long), the last validation (before any: the start-up's
      # length, a validation being mostly compilation and reading) and the slowest save.
      val_took = time.time() - started
      sums, n_acc = compiled.zero_sums(), 0
      t_log = time.perf_counter()
      t_budget = t_log
      single_process = jax.process_count() == 1
      val, val_step, stopped = None, -1, False
      try:
        with writers.ensure_flushes(writer), jax.set_mesh(run.mesh):
          if rounds.resume(int(jax.device_get(state.teacher)), jax.device_get(state.prev_err)):
            state = state.replace(teacher=jax.device_put(jnp.asarray(rounds.teacher, jnp.int32), run.replicated))
          for step in range(start, tcfg.num_steps):
            boundary = rounds.boundary(step)
            if boundary == roles.PICK:
              err = jax.device_get(state.err_sum) / max(int(jax.device_get(state.err_count)), 1)
              state = compiled.new_round(state, rounds.pick_next(err))
            elif boundary == roles.RESTART:
              state = compiled.new_round(state, roles.NO_TEACHER)
            phase = rounds.phase(step)
            batch, data_state = prefetch.get()
            state, sums, rates = compiled.train(phase)(state, batch, sums)
            n_acc += 1
            done = step + 1
            for h in hooks:
              h(done)
            is_last = done == tcfg.num_steps

            if done % tcfg.log_every == 0 or is_last:
              trainer.check_finite(state)
              got = jax.device_get((sums, rates, (state.teacher, state.prev_err)))
              now = time.perf_counter()
              vals = _train_scalars(*got, n_acc, now - t_log)
              t_log = now
              if tcfg.grad_diagnostics:
                vals.update(_grad_scalars(jax.device_get(compiled.grad_norms(phase)(state.params, batch))))
              writer.write_scalars(done, vals)
              _say(_progress_line(done, tcfg.num_steps, vals, rounds.shown_teacher))
              sums, n_acc = compiled.zero_sums(), 0
            if sink.tensorboard and (done % tcfg.image_every == 0 or is_last):
              trainer.write_images(writer, done, compiled.images(state.params, batch))
              if run.val_scene is not None:
                writer.write_images(done, {'images/val_scene': trainer.val_scene_strip(
                    run.models.dsr, jax.device_get(state.params['dsr']), run.val_scene, config.model.scale)[None]})
            if config.eval.every_steps and (done % config.eval.every_steps == 0) and not is_last:
              with report.timed('eval'):
                val, val_took = run_validation(run, state, done, writer, ckpts)
              val_step = done
            saved = done % config.ckpt.every_steps == 0 or is_last
            if saved:
              ckpts.save(done, state, data_state)

            if not is_last and done % tcfg.log_every == 0:
              now = time.perf_counter()
              stop.over_budget((now - t_budget) + val_took + ckpts.slowest_save)
              t_budget = now
            elif not is_last and single_process:
              # Between log steps too, where no other process must agree: a first interval that compiles the
              # phases' steps can outlast a short budget.
              stop.over_budget(val_took + ckpts.slowest_save)
            if not is_last and stop.requested(done):
              # Preempted, or out of time: this step is saved (unless it just was) and the run ends cleanly;
              # the same command resumes from exactly here.
              if not saved:
                ckpts.save(done, state, data_state)
              stopped = True
              break

          if stopped:
            ckpts.wait()
            summary = {'preempted': True, 'step': done, 'signal': stop.signal_name, 'workdir': workdir,
                       'checkpoints': checkpointing.ckpt_dir(workdir)}
            if stop.on_budget:
              # A budget leaves time for what a preemption notice does not: the final validation, so the
              # best checkpoint holds the best network so far (unless this step was just validated).
              if val is None or val_step != done:
                val, _ = run_validation(run, state, done, writer, ckpts)
              summary.update(stopped_on_budget=True, budget_min=float(tcfg.time_budget),
                             elapsed_min=stop.elapsed() / 60, num_steps=tcfg.num_steps,
                             val_mad=val['mean']['mad'], bicubic_mad=val['bicubic']['mean']['mad'],
                             val_images=val['images'], best_val_mad=ckpts.best_mad,
                             best_checkpoint=os.path.join(workdir, checkpointing.BEST_DIR))
          else:
            trainer.check_finite(state)
            final_step = int(jax.device_get(state.step))
            val, _ = run_validation(run, state, final_step, writer, ckpts, announce=False)
            summary = {'val_mad': val['mean']['mad'], 'bicubic_mad': val['bicubic']['mean']['mad'],
                       'val_images': val['images'], 'workdir': workdir,
                       'checkpoints': checkpointing.ckpt_dir(workdir), 'step': final_step,
                       'best_val_mad': ckpts.best_mad,
                       'best_checkpoint': os.path.join(workdir, checkpointing.BEST_DIR)}
      finally:
        prefetch.close()
    finally:
      ckpts.close()
  if not sink.tensorboard:
    summary['metrics_file'] = writers.metrics_path(workdir)
  return summary


def _train_scalars(sums, rates, role, n_acc: int, seconds: float) -> dict:
  """TensorBoard's train/*: each logged term's mean over the interval, the pace, the roles and the rates."""
  vals = {f'train/{k}': float(v) / n_acc for k, v in zip(steps.TERMS, sums)}
  vals['train/steps_per_s'] = n_acc / seconds
  vals['train/teacher'] = float(role[0])
  vals['train/e_dsr_prev_round'], vals['train/e_de_prev_round'] = map(float, role[1])
  vals.update({f'train/lr_{k}': float(v) for k, v in rates.items()})
  return vals


def _grad_scalars(norms: dict) -> dict:
  """TensorBoard's grad/<term>/<net>: the gradient norm each weighted term sends into each network."""
  return {f'grad/{term}/{net}': float(g) for term, per_net in norms.items() for net, g in per_net.items()}


# ---------------------------------------------------------------------------------------------- the console

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
