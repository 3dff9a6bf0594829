"""Frozen teachers (docs/method.md, "Frozen teachers"; issue 39): the config checks, a teacher trained alone and
validated with its RGB, loaded frozen into a student run, and refused where it does not fit.

The routing of the frozen-teacher phase (zero gradient into the teacher, bit-identical after a round) is in
test_routing.py with the rest of the routing contract.
"""
import jax
import numpy as np
import pytest

from dsr_jax.configs import test as test_config
from dsr_jax import models as models_lib
from dsr_jax import restore
from dsr_jax import state as state_lib
from dsr_jax import study
from dsr_jax import study_teachers
from dsr_jax import teacher as teacher_lib
from dsr_jax import train
from dsr_jax.errors import ConfigError
from dsr_jax.errors import UserError

pytestmark = pytest.mark.usefixtures('fast_xla_module')


def _cfg(**changes):
  cfg = test_config.get_config()
  cfg.model.use_denet = cfg.model.use_spnet = False
  for dotted, v in changes.items():
    sec, leaf = dotted.split('.')
    cfg[sec][leaf] = v
  return cfg


@pytest.mark.parametrize('changes,field', [
    ({'model.teacher': 'guided'}, 'model.teacher_checkpoint'),
    ({'model.teacher_checkpoint': 'runs/T_s0'}, 'model.teacher_checkpoint'),
    ({'model.teacher': 'dsrnet', 'model.teacher_checkpoint': 'x'}, 'model.teacher'),
    ({'model.teacher': 'guided', 'model.teacher_checkpoint': 'x', 'model.use_denet': True}, 'model.teacher'),
    ({'model.name': 'ae', 'model.use_denet': True}, 'model.name'),
    ({'loss.feature_distill': 'l2'}, 'loss.feature_distill'),
    ({'loss.kd_out_weight': -0.1}, 'loss.kd_out_weight'),
    ({'loss.kd_feature_weight': float('inf')}, 'loss.kd_feature_weight'),
    ({'loss.kd_affinity_weight': -1.0}, 'loss.kd_affinity_weight'),
    ({'model.teacher_width': 0}, 'model.teacher_width'),
    ({'model.teacher_blocks': -1}, 'model.teacher_blocks')])
def test_teacher_fields_are_checked(changes, field):
  with pytest.raises(ConfigError) as e:
    train.check_config(_cfg(**changes))
  assert str(e.value).startswith(f'{field}=') and '\n' not in str(e.value), str(e.value)


def test_defaults_build_no_teacher_and_the_same_phases():
  """At the defaults nothing of the teacher exists: no network, no parameters, no term, no mask entry."""
  cfg = test_config.get_config()
  models = models_lib.build(cfg.model)
  assert models.teacher is None
  assert set(jax.eval_shape(lambda: state_lib.init_params(models, jax.random.key(0), 2))) == {'dsr', 'denet',
                                                                                              'spnet'}
  from dsr_jax import roles  # pylint: disable=g-import-not-at-top
  for phase in roles.make_phases(cfg).values():
    assert 'teacher' not in phase.train and not any(t.name.startswith('kd_') for t in phase.terms)


def test_study_rows_name_the_teacher_of_their_own_runs():
  assert study_teachers.sees_more(_cfg(**{'model.name': 'guided'}))
  assert not study_teachers.sees_more(_cfg())
  arg, overrides, _ = study.row_spec('KOF+byT2+c192b2+kdA', 8, '/r')
  assert arg == 'x8,wo_ct' and overrides['model.teacher_checkpoint'] == '/r/T2+c192b2_s0'
  assert study.row_spec('KO', 8, '/r')[1]['model.teacher_checkpoint'] == '/r/T_s0'
  teacher_arg, teacher_rows, _ = study.row_spec('T2+c192b2', 8, '/r')
  assert teacher_arg == arg
  for k in ('model.teacher_width', 'model.teacher_blocks'):
    assert overrides[k] == teacher_rows[k]
  assert overrides['loss.kd_affinity_weight'] > 0 and overrides['loss.feature_distill'] == 'cosine'


def test_predictor_runs_whole_images_of_any_size_with_the_guides():
  """The interior, beyond the receptive margin, is the network's own output; the borders are reflected; an HR
  guide one row short of s times the LR is reflected to size."""
  cfg = _cfg(**{'model.name': 'ae', 'model.ae_rgb': True})
  net = models_lib.build(cfg.model).dsr
  params = state_lib.init_params(models_lib.build(cfg.model), jax.random.key(0), 2)['dsr']
  k = jax.random.split(jax.random.key(1), 3)
  lr = np.asarray(jax.random.uniform(k[0], (48, 40)))
  hr = np.asarray(jax.random.uniform(k[1], (96, 80)))
  rgb = np.asarray(jax.random.uniform(k[2], (96, 80, 3)))
  got = teacher_lib.predictor(net, params)(lr, rgb=rgb[:-1], hr=hr[:-1])
  assert got.shape == (96, 80)
  direct = net.apply({'params': params}, lr[None, ..., None], hr[None, ..., None], rgb[None])[0, ..., 0]
  m = 2 * (net.receptive_margin() + 1)  # HR pixels out of reach of the borders and of the reflected last row
  np.testing.assert_allclose(got[m:-m, m:-m], direct[m:-m, m:-m], atol=1e-5)


@pytest.fixture(scope='module')
def trained_teacher(tmp_path_factory):
  """A guided teacher trained alone for two steps, validated with its RGB (configs/test.py shapes)."""
  cfg = _cfg(**{'model.name': 'guided', 'model.teacher_width': 6, 'model.teacher_blocks': 1})
  cfg.train.num_steps = cfg.ckpt.every_steps = cfg.train.log_every = 2
  wd = tmp_path_factory.mktemp('teacher')
  summary = train.train_and_evaluate(cfg, str(wd))
  return cfg, wd, summary


def test_a_teacher_trained_alone_is_validated_with_its_rgb_and_kept_from_lr_only_use(trained_teacher):
  _, wd, summary = trained_teacher
  assert summary['step'] == 2 and np.isfinite(summary['val_mad']) and summary['val_mad'] > 0
  with pytest.raises(UserError, match="'guided' is a training-time teacher"):
    restore.load_for_inference(str(wd))
  # predict and export say the same in one line, before reading any weights or writing anything.
  from dsr_jax import export  # pylint: disable=g-import-not-at-top
  from dsr_jax import predict  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.fromarray(np.full((8, 8), 100, np.uint8)).save(wd.parent / 'lr.png')
  assert predict.main(['--checkpoint', str(wd), '--input', str(wd.parent / 'lr.png'),
                       '--output', str(wd.parent / 'pred')]) != 0
  assert not (wd.parent / 'pred').exists()
  assert export.main(['--checkpoint', str(wd), '--output', str(wd.parent / 'exp')]) != 0
  assert not (wd.parent / 'exp').exists()


def test_a_student_loads_the_teacher_frozen(trained_teacher, tmp_path):
  """The student's state holds the trained teacher bit for bit, after its own training steps too, and the
  gradient diagnostics show the teacher terms reaching DSRNet and nothing reaching the teacher."""
  _, wd, _ = trained_teacher
  cfg = _cfg(**{'model.teacher': 'guided', 'model.teacher_checkpoint': str(wd), 'model.teacher_width': 6,
                'model.teacher_blocks': 1, 'loss.feature_distill': 'cosine'})
  cfg.train.num_steps = cfg.ckpt.every_steps = cfg.train.log_every = 2
  summary = train.train_and_evaluate(cfg, str(tmp_path / 'student'))
  assert summary['step'] == 2 and np.isfinite(summary['val_mad'])
  _, taught, _ = restore.load_params(str(wd), ('dsr',))
  _, held, _ = restore.load_params(str(tmp_path / 'student' / 'checkpoints'), ('dsr', 'teacher'))
  for a, b in zip(jax.tree.leaves(taught['dsr']), jax.tree.leaves(held['teacher'])):
    np.testing.assert_array_equal(np.asarray(a).view(np.uint32), np.asarray(b).view(np.uint32))
  scalars = study._scalars(str(tmp_path / 'student'))  # pylint: disable=protected-access
  logged = {tag: v[-1][1] for tag, v in scalars.items()}
  assert logged['grad/kd_out/dsr'] > 0 and logged['grad/kd_feat/dsr'] > 0
  assert logged['grad/kd_out/teacher'] == 0 and logged['grad/kd_feat/teacher'] == 0
  assert logged['train/e_teacher'] > 0


@pytest.mark.parametrize('changes,needle', [
    ({'model.teacher': 'ae'}, "holds a 'guided' network"),
    ({'model.teacher_width': 8}, 'teacher_width=6 there, 8 here')])
def test_a_teacher_checkpoint_of_another_network_is_refused(trained_teacher, changes, needle):
  _, wd, _ = trained_teacher
  cfg = _cfg(**{'model.teacher': 'guided', 'model.teacher_checkpoint': str(wd), 'model.teacher_width': 6,
                'model.teacher_blocks': 1, **changes})
  abstract = jax.eval_shape(lambda: state_lib.init_params(models_lib.build(cfg.model), jax.random.key(0), 2))
  with pytest.raises(ConfigError, match=needle) as e:
    teacher_lib.load(cfg, abstract['teacher'])
  assert str(e.value).startswith('model.teacher_checkpoint=')
  cfg.model.teacher_checkpoint = str(wd / 'nothing')
  with pytest.raises(ConfigError, match='model.teacher_checkpoint=.*no such file'):
    teacher_lib.load(cfg, abstract['teacher'])
