"""Training: frozen teachers, one trace per phase, device-count invariance, exact resume, smoke run."""
import functools
import glob
import json
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import count_calls
from conftest import poisoned_batch
from dsr_jax.configs import test as test_config
from dsr_jax import models as models_lib
from dsr_jax import optim
from dsr_jax import roles
from dsr_jax import sharding
from dsr_jax import state as state_lib
from dsr_jax import steps
from dsr_jax import train
from dsr_jax import trainer

# Compile with most optimisations off, module fixtures (the smoke run) included: every check here compares
# runs made under the same setting.
pytestmark = pytest.mark.usefixtures('fast_xla_module')


def _batch(cfg, n=8, seed=0):
  s, crop = cfg.model.scale, cfg.data.crop
  k = jax.random.split(jax.random.key(seed), 3)
  hr = jax.random.uniform(k[0], (n, crop, crop, 1))
  return {'hr_depth': hr,
          'lr_depth': jax.image.resize(hr, (n, crop // s, crop // s, 1), 'cubic'),
          'rgb': jax.random.uniform(k[1], (n, crop, crop, 3)),
          'valid': (jax.random.uniform(k[2], (n, crop, crop, 1)) > 0.1).astype(jnp.float32)}


def _phases(cfg=None):
  return roles.make_phases(cfg or test_config.get_config())


def _setup(cfg=None):
  cfg = cfg or test_config.get_config()
  models = models_lib.build(cfg.model)
  tx = optim.make(cfg)
  st = state_lib.create(models, tx, jax.random.key(0), cfg.model.scale)
  return cfg, models, tx, st


def _step(cfg, models, tx, phase):
  return jax.jit(functools.partial(steps.train_step, models=models, tx=tx, phase=phase, loss_cfg=cfg.loss,
                                   scale=cfg.model.scale))


def _logged_step(cfg, models, tx, phase):
  return jax.jit(functools.partial(steps.logged_step, schedules=optim.schedules(cfg), models=models, tx=tx,
                                   phase=phase, loss_cfg=cfg.loss, scale=cfg.model.scale))


def _opt_leaves(opt_state, net):
  # PartitionState.inner_states[net] is a MaskedState whose inner_state is the ConditionallyMaskState
  # (step counter of the gate, inner Adam state).
  inner = opt_state.inner_states[net].inner_state
  return inner.inner_state


@pytest.mark.parametrize('phase,teacher,student', [('dsr_student', 'denet', 'dsr'),
                                                   ('de_student', 'dsr', 'denet')])
def test_frozen_teacher_bit_identical_over_a_round(phase, teacher, student):
  """train.teacher_update='frozen': over a whole round (two steps) the teacher's parameters, Adam moments and
  count stay bit-identical, while the student and SPNet move."""
  cfg = test_config.get_config()
  cfg.train.teacher_update = 'frozen'
  cfg, models, tx, st = _setup(cfg)
  phases = _phases(cfg)
  # One stage-1 step first, so the teacher's Adam moments and count are non-trivial.
  st, _ = _step(cfg, models, tx, phases['stage1'])(st, _batch(cfg))
  before = jax.device_get(st)
  after, terms = _step(cfg, models, tx, phases[phase])(st, _batch(cfg, seed=1))
  # The second step as the training loop runs it: it also reports each net's rate.
  after, sums, rates = _logged_step(cfg, models, tx, phases[phase])(after, _batch(cfg, seed=2), steps.zero_sums())
  after = jax.device_get(after)
  assert np.isfinite(float(terms['total'])) and np.isfinite(float(sums[0]))
  chex.assert_trees_all_equal(before.params[teacher], after.params[teacher])
  chex.assert_trees_all_equal(_opt_leaves(before.opt_state, teacher), _opt_leaves(after.opt_state, teacher))
  t_adam = [x for x in jax.tree.leaves(_opt_leaves(after.opt_state, teacher))]
  assert any(np.any(np.asarray(x) != 0) for x in t_adam), 'teacher moments should be non-trivial'
  for net in (student, 'spnet'):
    diff = jax.tree.map(lambda a, b: np.any(a != b), before.params[net], after.params[net])
    assert any(jax.tree.leaves(diff)), f'{net} should have changed'
  # Adam count of the student advanced, the teacher's did not.
  count = lambda s, n: [x for x in jax.tree.leaves(_opt_leaves(s.opt_state, n)) if np.ndim(x) == 0]
  assert count(before, teacher) == count(after, teacher)
  assert count(before, student) != count(after, student)
  # Each net's update count (SPNet was frozen in the stage-1 step): the state keeps the counts optax's
  # schedules hold, so the step reports its rates without reading optax's internal state.
  counts = {k: int(v) for k, v in optim.update_counts(after.opt_state).items()}
  assert counts == {student: 3, teacher: 1, 'spnet': 2}
  assert list(after.updates) == [counts[k] for k in state_lib.NETS]
  # The reported rates follow each net's own count before the step (student 2, teacher 1, SPNet 1): the
  # teacher's one update (warm-up 1) leaves it at the peak rate, where the global step (2) has begun the cosine.
  sched = lambda net, count: float(optim.schedule(cfg.optim[net], cfg.train.num_steps)(count))
  assert sched(student, 2) < 0.99 * cfg.optim[student].lr
  assert float(rates[student]) == pytest.approx(sched(student, 2))
  assert float(rates[teacher]) == pytest.approx(cfg.optim[teacher].lr)
  assert float(rates['spnet']) == pytest.approx(sched('spnet', 1))


def test_logged_step_sums_the_terms_and_trains_as_train_step():
  """The loop's step adds the logged terms up on the device; its training is train_step's, bit for bit."""
  cfg, models, tx, st = _setup()
  phase = _phases(cfg)['dsr_student']
  plain, logged = _step(cfg, models, tx, phase), _logged_step(cfg, models, tx, phase)
  a, b, sums, want = st, st, steps.zero_sums(), 0.0
  for seed in (0, 1, 2):
    a, terms = plain(a, _batch(cfg, seed=seed))
    b, sums, _ = logged(b, _batch(cfg, seed=seed), sums)
    want = want + np.asarray([terms[k] for k in steps.TERMS])
  chex.assert_trees_all_equal(jax.device_get(a), jax.device_get(b))
  np.testing.assert_allclose(np.asarray(sums), want, rtol=1e-6)


@pytest.mark.parametrize('phase', ['dsr_student', 'de_student'])
def test_task_mode_teacher_keeps_learning(phase):
  """train.teacher_update='task' (Revision 2, rule 2): every network steps, the teacher's Adam count too."""
  cfg, models, tx, st = _setup()
  before = jax.device_get(st)
  after, _ = _step(cfg, models, tx, _phases(cfg)[phase])(st, _batch(cfg))
  after = jax.device_get(after)
  for net in ('dsr', 'denet', 'spnet'):
    assert any(jax.tree.leaves(jax.tree.map(lambda a, b: np.any(a != b), before.params[net],
                                            after.params[net]))), net
  assert {k: int(v) for k, v in optim.update_counts(after.opt_state).items()} == {'dsr': 1, 'denet': 1,
                                                                                    'spnet': 1}


def test_stage1_spnet_frozen_and_both_nets_train():
  cfg, models, tx, st = _setup()
  before = jax.device_get(st)
  after, _ = _step(cfg, models, tx, _phases(cfg)['stage1'])(st, _batch(cfg))
  after = jax.device_get(after)
  chex.assert_trees_all_equal(before.params['spnet'], after.params['spnet'])
  for net in ('dsr', 'denet'):
    assert any(jax.tree.leaves(jax.tree.map(lambda a, b: np.any(a != b), before.params[net], after.params[net])))


def test_frozen_teacher_gets_no_backward_pass():
  """A frozen teacher's backward pass is never built: the frozen DSR-student gradient has fewer convs."""
  cfg, models, tx, st = _setup()
  b = _batch(cfg)
  def n_convs(phase):
    f = functools.partial(steps.loss_fn, models=models, phase=phase, loss_cfg=cfg.loss)
    jaxpr = jax.make_jaxpr(jax.grad(lambda p: f(p, b)[0]))(st.params)
    return str(jaxpr).count('conv_general_dilated')
  frozen_cfg = test_config.get_config()
  frozen_cfg.train.teacher_update = 'frozen'
  assert n_convs(_phases(frozen_cfg)['dsr_student']) < n_convs(_phases(cfg)['dsr_student'])


def test_role_logic_sequence_and_ties():
  phases = _phases()
  errs = [(0.1, 0.2), (0.3, 0.2), (0.2, 0.2), (0.5, 0.05), (0.01, 0.9)]
  assert [roles.pick_teacher(a, b) for a, b in errs] == [roles.DSR, roles.DENET, roles.DSR, roles.DENET, roles.DSR]
  assert [roles.phase_for(phases, roles.pick_teacher(a, b)).name for a, b in errs] == [
      'de_student', 'dsr_student', 'de_student', 'dsr_student', 'de_student']
  assert roles.role_rule('fixed_denet')(0.1, 0.9) == roles.DENET
  assert roles.role_rule('fixed_dsr')(0.9, 0.1) == roles.DSR
  assert roles.role_rule('mutual')(0.1, 0.9) == roles.MUTUAL
  assert 'mutual' not in phases  # its step exists only for train.roles='mutual'
  mutual = test_config.get_config()
  mutual.train.roles = 'mutual'
  assert roles.phase_for(_phases(mutual), roles.MUTUAL).name == 'mutual'
  assert roles.phase_for(phases, roles.NO_TEACHER).name == 'stage1'
  assert roles.phase_for(phases, roles.DSR, cross_task=False).name == 'dsr_only'
  assert [roles.is_round_start(s, 4, 2) for s in range(9)] == [False] * 4 + [True, False, True, False, True]


def test_one_device_equals_eight_devices():
  assert jax.device_count() == 8
  cfg, models, tx, st0 = _setup()
  batches = [_batch(cfg, seed=i) for i in range(3)]
  results = []
  for devs in (jax.devices()[:1], jax.devices()):
    mesh = sharding.make_mesh(devs)
    repl, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
    fn = jax.jit(functools.partial(steps.train_step, models=models, tx=tx, phase=_phases(cfg)['dsr_student'],
                                   loss_cfg=cfg.loss, scale=cfg.model.scale),
                 in_shardings=(repl, data), out_shardings=(repl, repl))
    st = jax.device_put(st0, repl)
    with jax.set_mesh(mesh):
      for b in batches:
        st, terms = fn(st, jax.device_put(b, data))
    results.append((jax.device_get(st.params), float(terms['total'])))
  np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5)
  chex.assert_trees_all_close(results[0][0], results[1][0], atol=1e-5, rtol=1e-4)


def _event_tags(workdir):
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(glob.glob(f'{workdir}/events.out.tfevents.*')[0],
                                           size_guidance={'tensors': 0})
  acc.Reload()
  return acc


def _train_with_teachers(cfg, workdir, teachers):
  """train_and_evaluate with the role rule replaced by a fixed sequence (forces role switches)."""
  it = iter(teachers)
  return train.train_and_evaluate(cfg, str(workdir), role_rule=lambda *_: next(it))


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  """One tiny full run (stage 1 + several stage-2 rounds, role switches forced by a patched picker)."""
  wd = tmp_path_factory.mktemp('smoke')
  cfg = test_config.get_config()
  cfg.train.num_steps, cfg.train.stage1_steps, cfg.train.round_steps = 10, 2, 2
  cfg.ckpt.every_steps = 6
  with count_calls(steps, 'train_step', lambda *a, phase, **k: phase.name) as traces:
    summary = _train_with_teachers(cfg, wd, [roles.DENET, roles.DSR, roles.DENET, roles.DSR, roles.DENET])
  return cfg, wd, summary, dict(traces)


def test_smoke_all_phases_one_trace_each_and_images(smoke_run):
  cfg, wd, summary, traces = smoke_run
  assert summary['step'] == 10 and np.isfinite(summary['val_mad'])
  # The final validation is the only one here, so it is the best checkpoint, and a workdir resolves to it.
  from dsr_jax import restore
  assert restore.resolve_checkpoint(str(wd)) == (str(wd / 'checkpoints_best'), 10)
  assert summary['best_val_mad'] == summary['val_mad']
  # stage 1, then rounds alternating DSR-student / DE-student: each phase traced exactly once.
  assert traces == {'stage1': 1, 'dsr_student': 1, 'de_student': 1}
  acc = _event_tags(wd)
  tags = acc.Tags()['tensors']
  for t in ('images/train_crop', 'images/val_scene', 'train/total', 'train/struct', 'train/aff', 'train/teacher',
            'train/side_dsr', 'train/side_de'):
    assert t in tags, t
  import tensorflow as tf
  # The pictures are strips: a training crop (LR at HR size | SR | DE | GT | error | structure target |
  # prediction) and the fixed validation scene (bicubic | SR | GT | error), panels split by 2 white columns.
  png = lambda tag: tf.io.decode_png(tf.make_ndarray(acc.Tensors(tag)[-1].tensor_proto)[2]).numpy()
  crop, scene = png('images/train_crop'), png('images/val_scene')
  c = cfg.data.crop
  assert crop.shape == (c, 7 * c + 6 * 2, 3), crop.shape
  h, w = cfg.data.synthetic.size  # the validation scenes' size
  assert scene.shape == (h, 4 * w + 3 * 2, 3), scene.shape
  assert np.all(scene[:, w:w + 2] == 255) and not np.all(scene[:, :w] == 255)
  assert sorted(e.step for e in acc.Tensors('images/val_scene')) == sorted(e.step for e in acc.Tensors('images/train_crop'))
  log = lambda tag: {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)}
  teacher_log = log('train/teacher')
  assert -1.0 in teacher_log.values() and 0.0 in teacher_log.values() and 1.0 in teacher_log.values()
  # Gradient diagnostics at every log step: each term of the phase that ran, into each network. Log step 4
  # ends the DSR-student round (DENet teaching) and step 6 the DE-student round.
  assert teacher_log[4] == roles.DENET and teacher_log[6] == roles.DSR, teacher_log
  g = {t: log(t) for t in tags if t.startswith('grad/')}
  assert g['grad/out/dsr'][4] > 0 and g['grad/aff/dsr'][4] > 0 and g['grad/out/denet'][4] == 0
  assert g['grad/out/denet'][6] > 0 and g['grad/out/dsr'][6] == 0
  # 'task' mode: the teacher keeps learning its own task, and SPNet's gradient reaches both networks.
  for step in (4, 6):
    assert g['grad/dsr/dsr'][step] > 0 and g['grad/de/denet'][step] > 0
    assert g['grad/struct/dsr'][step] > 0 and g['grad/struct/denet'][step] > 0 and g['grad/struct/spnet'][step] > 0
  assert 'grad/struct/spnet' not in g or 2 not in g['grad/struct/spnet']  # stage 1 has no L_struct


def test_resume_is_exact(smoke_run, tmp_path):
  cfg, wd, summary, _ = smoke_run
  resumed = tmp_path / 'resumed'
  shutil.copytree(wd, resumed)
  shutil.rmtree(resumed / 'checkpoints' / '10')  # as if preempted after the step-6 checkpoint
  # As if saved before the state kept each net's update count: the resume takes them from Adam's state.
  role_file = resumed / 'checkpoints' / '6' / 'role' / 'metadata'
  role = json.loads(role_file.read_text())
  assert role.pop('updates') == [6, 6, 4]  # teachers keep learning ('task'); SPNet is frozen in stage 1
  role_file.write_text(json.dumps(role))
  # Rounds start at steps 6 and 8, with the teachers the first run had there.
  s2 = _train_with_teachers(cfg, resumed, [roles.DENET, roles.DSR])
  assert s2['step'] == 10
  import orbax.checkpoint as ocp
  load = lambda d, item: ocp.StandardCheckpointer().restore(d / 'checkpoints' / '10' / item)
  chex.assert_trees_all_equal(load(wd, 'params'), load(resumed, 'params'))
  chex.assert_trees_all_equal(load(wd, 'opt_state'), load(resumed, 'opt_state'))
  for d in (wd, resumed):
    assert json.loads((d / 'checkpoints' / '10' / 'role' / 'metadata').read_text())['updates'] == [10, 10, 8]


def test_nan_guard_names_step_and_term(tmp_path):
  cfg = test_config.get_config()
  cfg.train.num_steps, cfg.ckpt.every_steps = 6, 2
  with poisoned_batch(3), pytest.raises(trainer.NonFiniteLoss, match=r"step 3 in term 'total'"):
    train.train_and_evaluate(cfg, str(tmp_path))
  # The last good checkpoint (step 2) exists; nothing at or after the poisoned step was saved.
  assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit()) == ['2']


def test_bfloat16_compute_keeps_float32_params_and_optimizer():
  cfg = test_config.get_config()
  cfg.model.dtype = 'bfloat16'
  cfg, models, tx, st = _setup(cfg)
  for phase in ('stage1', 'dsr_student'):
    st, terms = _step(cfg, models, tx, _phases(cfg)[phase])(st, _batch(cfg))
    assert np.isfinite(float(terms['total']))
  assert {x.dtype for x in jax.tree.leaves(st.params)} == {jnp.dtype('float32')}
  assert {x.dtype for x in jax.tree.leaves(st.opt_state) if jnp.issubdtype(x.dtype, jnp.floating)} == {
      jnp.dtype('float32')}
  # The forward pass really computes in bf16: the jaxpr carries bf16 convolutions.
  f = functools.partial(steps.loss_fn, models=models, phase=_phases(cfg)['stage1'], loss_cfg=cfg.loss)
  assert 'bf16' in str(jax.make_jaxpr(lambda p: f(p, _batch(cfg))[0])(st.params))
