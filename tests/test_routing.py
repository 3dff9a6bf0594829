"""The gradient-routing contract of ARCHITECTURE.md Revision 2, and its rules 1-7.

ROUTING below is the table at the end of Revision 2, written out by hand from the spec (not from
roles.py): for every phase and train.teacher_update mode, which networks each loss term's gradient may
reach. The test computes the actual jax.grad of each term alone, through steps.loss_fn with the phase's
masks, and checks that exactly those networks get a non-zero gradient and every other one exactly zero.
"""
import dataclasses
import functools
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import count_calls
from dsr_jax.configs import test as test_config
from dsr_jax import losses
from dsr_jax import models as models_lib
from dsr_jax import roles
from dsr_jax import state as state_lib
from dsr_jax import steps
from dsr_jax import train
from dsr_jax.errors import ConfigError

pytestmark = pytest.mark.usefixtures('fast_xla')

ALL = {'dsr', 'denet', 'spnet'}
# Distillation terms are keyed 'term>student'.
ROUTING = {
    ('stage1', 'task'): {'dsr': {'dsr'}, 'de': {'denet'}},
    ('stage1', 'frozen'): {'dsr': {'dsr'}, 'de': {'denet'}},
    ('dsr_student', 'task'): {'dsr': {'dsr'}, 'de': {'denet'}, 'out>dsr': {'dsr'}, 'aff>dsr': {'dsr'},
                              'struct': ALL},
    ('de_student', 'task'): {'dsr': {'dsr'}, 'de': {'denet'}, 'out>denet': {'denet'}, 'aff>denet': {'denet'},
                             'struct': ALL},
    ('dsr_student', 'frozen'): {'dsr': {'dsr'}, 'out>dsr': {'dsr'}, 'aff>dsr': {'dsr'},
                                'struct': {'spnet', 'dsr'}},
    ('de_student', 'frozen'): {'de': {'denet'}, 'out>denet': {'denet'}, 'aff>denet': {'denet'},
                               'struct': {'spnet', 'denet'}},
    ('mutual', 'task'): {'dsr': {'dsr'}, 'de': {'denet'}, 'out>dsr': {'dsr'}, 'aff>dsr': {'dsr'},
                         'out>denet': {'denet'}, 'aff>denet': {'denet'}, 'struct': ALL},
    ('dsr_only', 'task'): {'dsr': {'dsr'}},
    ('dsr_only', 'frozen'): {'dsr': {'dsr'}},
}


def _cfg(mode='task', **changes):
  cfg = test_config.get_config()
  cfg.train.teacher_update = mode
  for dotted, v in changes.items():
    sec, leaf = dotted.split('__')
    cfg[sec][leaf] = v
  return cfg


def _batch(cfg, n=2, seed=0):
  s, crop = cfg.model.scale, cfg.data.crop
  k = jax.random.split(jax.random.key(seed), 3)
  hr = jax.random.uniform(k[0], (n, crop, crop, 1))
  return {'hr_depth': hr, 'lr_depth': jax.image.resize(hr, (n, crop // s, crop // s, 1), 'cubic'),
          'rgb': jax.random.uniform(k[1], (n, crop, crop, 3)),
          'valid': (jax.random.uniform(k[2], (n, crop, crop, 1)) > 0.1).astype(jnp.float32)}


def _params(cfg, seed=0):
  models = models_lib.build(cfg.model)
  return models, state_lib.init_params(models, jax.random.key(seed), cfg.model.scale)


def _key(term):
  return f'{term.name}>{term.student}' if term.student else term.name


def _reached(grads) -> set:
  return {net for net, g in grads.items() if any(np.any(np.asarray(x) != 0) for x in jax.tree.leaves(g))}


def _term_grads(cfg, models, params, phase, batch):
  """{term key: gradient tree} of each term of the phase on its own, through loss_fn and the phase's masks."""
  out = {}
  for term in phase.terms:
    one = dataclasses.replace(phase, terms=(term,))
    f = functools.partial(steps.loss_fn, batch=batch, models=models, phase=one, loss_cfg=cfg.loss)
    out[_key(term)] = jax.grad(lambda p, f=f: f(p)[0])(params)
  return out


@pytest.mark.parametrize('name,mode', sorted(ROUTING), ids=lambda x: x)
def test_routing_table(name, mode):
  cfg = _cfg(mode, train__roles='mutual' if name == 'mutual' else 'rule')
  if name == 'dsr_only':
    cfg.model.use_denet = cfg.model.use_spnet = False
  models, params = _params(cfg)
  phase = roles.make_phases(cfg)[name]
  want = ROUTING[(name, mode)]
  assert sorted(_key(t) for t in phase.terms) == sorted(want), 'the phase has other terms than the spec'
  grads = _term_grads(cfg, models, params, phase, _batch(cfg))
  for key, g in grads.items():
    assert _reached(g) == want[key], (name, mode, key)
    if '>' in key:  # L_distill: exactly zero into the teacher
      teacher = 'denet' if key.endswith('>dsr') else 'dsr'
      assert teacher not in _reached(g)
  # The optimizer mask: 'frozen' steps only the student (and SPNet); 'task' steps every network it has.
  trained = {n for n, on in phase.train.items() if on and n in params}
  if mode == 'frozen' and name in ('dsr_student', 'de_student'):
    assert trained == {phase.students[0], 'spnet'}
  else:
    assert trained == {n for n in params if n != 'spnet' or name not in ('stage1', 'dsr_only')}


# The frozen teacher's phase (docs/method.md, "Frozen teachers"): DSRNet alone learns, the teacher is read.
FROZEN_TEACHER = {'dsr': {'dsr'}, 'kd_out>dsr': {'dsr'}, 'kd_feat>dsr': {'dsr'}, 'kd_aff>dsr': {'dsr'}}


def _teacher_cfg(teacher='guided', feature='cosine', **changes):
  cfg = _cfg('task', model__use_denet=False, model__use_spnet=False, model__teacher=teacher,
             model__teacher_checkpoint='unused: the parameters are made here', loss__feature_distill=feature,
             loss__kd_affinity_weight=0.1, **changes)
  train.check_config(cfg)
  return cfg


@pytest.mark.parametrize('teacher,feature,ae_rgb', [('guided', 'cosine', False), ('ae', 'l1', True)])
def test_frozen_teacher_routing(teacher, feature, ae_rgb):
  """Every term of the frozen-teacher phase reaches DSRNet alone; the teacher gets exactly zero gradient from
  each, and its feature maps have DSRNet's shapes (the feature term compares them one by one)."""
  cfg = _teacher_cfg(teacher, feature, model__ae_rgb=ae_rgb)
  models, params = _params(cfg)
  phase = roles.make_phases(cfg)['dsr_only']
  assert sorted(_key(t) for t in phase.terms) == sorted(FROZEN_TEACHER)
  assert phase.train == {'dsr': True, 'denet': False, 'spnet': False, 'teacher': False}
  b = _batch(cfg)
  for key, g in _term_grads(cfg, models, params, phase, b).items():
    assert _reached(g) == FROZEN_TEACHER[key], key
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(g['teacher'])), key
  student = steps.apply_net(models.dsr, params['dsr'], b)
  taught = steps.apply_net(models.teacher, params['teacher'], b)
  assert [f.shape for f in student.feats] == [f.shape for f in taught.feats]
  assert models_lib.input_keys(models.teacher) == (('lr_depth', 'rgb') if teacher == 'guided' else
                                                   ('lr_depth', 'hr_depth', 'rgb'))


def test_frozen_teacher_bit_identical_after_a_round():
  """Over a round of train steps the teacher's parameters stay bit-identical (a -0.0 included: they are
  carried over, not added to a zero update), it has no optimizer state, and DSRNet learns."""
  from dsr_jax import optim  # pylint: disable=g-import-not-at-top
  cfg = _teacher_cfg(feature='l1')
  models = models_lib.build(cfg.model)
  tx = optim.make(cfg, tuple(models.nets()), frozen=('teacher',))
  st = state_lib.create(models, tx, jax.random.key(0), cfg.model.scale)
  bias = st.params['teacher']['tail']['bias']
  st = st.replace(params={**st.params, 'teacher': {**st.params['teacher'], 'tail': {
      **st.params['teacher']['tail'], 'bias': jnp.full_like(bias, -0.0)}}})
  assert not jax.tree.leaves(st.opt_state.inner_states['teacher'])  # set_to_zero: no moments, no count
  step = jax.jit(functools.partial(steps.train_step, models=models, tx=tx, phase=roles.make_phases(cfg)['dsr_only'],
                                   loss_cfg=cfg.loss, scale=cfg.model.scale))
  before = jax.device_get(st)
  for k in range(cfg.train.round_steps + 1):
    st, terms = step(st, _batch(cfg, seed=k))
    assert float(terms['kd_out']) > 0 and float(terms['kd_feat']) > 0 and float(terms['e_teacher']) > 0
  after = jax.device_get(st)
  bits = lambda t: [np.asarray(x).view(np.uint32) for x in jax.tree.leaves(t)]
  for a, b in zip(bits(before.params['teacher']), bits(after.params['teacher'])):
    np.testing.assert_array_equal(a, b)
  assert any(np.any(a != b) for a, b in zip(bits(before.params['dsr']), bits(after.params['dsr'])))
  assert list(after.updates) == [cfg.train.round_steps + 1, 0, 0]


def test_struct_weights_spnet_unit_and_depth_nets_rho1():
  """'with which weight': SPNet learns L_struct at weight 1, the depth nets' features at rho1 (checked
  against an independent computation of L_struct)."""
  cfg = _cfg('task', loss__rho1=0.25)
  models, params = _params(cfg)
  phase = roles.make_phases(cfg)['dsr_student']
  b = _batch(cfg)
  got = _term_grads(cfg, models, params, phase, b)['struct']

  def l_struct(p):
    sr = models.dsr.apply({'params': p['dsr']}, b['lr_depth'], train=True)
    de = models.denet.apply({'params': p['denet']}, b['rgb'], b['lr_depth'], train=True)
    s = models.spnet.apply({'params': p['spnet']}, sr.feats[-1], de.feats[-1],
                           jax.lax.stop_gradient(sr.depth), jax.lax.stop_gradient(de.depth), b['hr_depth'])
    return losses.l1(s, losses.gradient_magnitude(b['hr_depth']), losses.gradient_valid(b['valid']))
  ref = jax.grad(l_struct)(params)
  for net, w in (('spnet', 1.0), ('dsr', 0.25), ('denet', 0.25)):
    for a, r in zip(jax.tree.leaves(got[net]), jax.tree.leaves(ref[net])):
      np.testing.assert_allclose(a, w * r, rtol=2e-4, atol=1e-8)


@pytest.mark.parametrize('detach', [True, False])
def test_rule4_detached_uncertainty_struct_reaches_features_only(detach):
  cfg = _cfg('task', loss__detach_uncertainty=detach)
  models, params = _params(cfg)
  g = _term_grads(cfg, models, params, roles.make_phases(cfg)['dsr_student'], _batch(cfg))['struct']
  # DSRNet's tail makes only the depth map, its side heads only the side outputs: with the uncertainty
  # branch detached, L_struct reaches DSRNet through the features F^T alone.
  tail = np.abs(np.asarray(g['dsr']['tail']['kernel'])).max()
  assert (tail == 0) == detach
  assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(g['dsr']['side_0']))
  assert np.abs(np.asarray(g['dsr']['up_0']['deconv1']['kernel'])).max() > 0


@pytest.mark.parametrize('side_weight', [0.0, 1.0])
def test_rule1_side_supervision(side_weight):
  cfg = _cfg('task', loss__side_weight=side_weight)
  models, params = _params(cfg)
  b = _batch(cfg)
  g = _term_grads(cfg, models, params, roles.make_phases(cfg)['stage1'], b)
  for net, term in (('dsr', 'dsr'), ('denet', 'de')):
    side = np.abs(np.asarray(g[term][net]['side_1']['Conv_1']['kernel'])).max()
    assert (side > 0) == bool(side_weight), (net, side_weight)
  _, t = steps.loss_fn(params, b, models=models, phase=roles.make_phases(cfg)['stage1'], loss_cfg=cfg.loss)
  if side_weight:
    np.testing.assert_allclose(float(t['dsr']), float(t['e_dsr'] + t['side_dsr']), rtol=1e-5)
  else:
    np.testing.assert_allclose(float(t['dsr']), float(t['e_dsr']), rtol=0)


def _zero_last_side_conv(p):
  p = jax.tree.map(lambda x: x, p)
  for n in range(2):  # SideHead builds its output conv first, so flax names it Conv_0
    p[f'side_{n}']['Conv_0'] = jax.tree.map(jnp.zeros_like, p[f'side_{n}']['Conv_0'])
  p['tail'] = jax.tree.map(jnp.zeros_like, p['tail'])
  return p


@pytest.mark.parametrize('residual', [True, False])
def test_rule1_side_outputs_carry_the_bicubic_residual(residual):
  from dsr_jax.models import dsrnet  # pylint: disable=g-import-not-at-top
  cfg = _cfg('task', model__side_residual=residual)
  models, params = _params(cfg)
  b = _batch(cfg)
  out = models.dsr.apply({'params': _zero_last_side_conv(params['dsr'])}, b['lr_depth'], train=True)
  base = dsrnet.bicubic_upsample(b['lr_depth'], cfg.model.scale)
  np.testing.assert_allclose(out.depth, base, atol=1e-6)
  for s in out.sides:
    np.testing.assert_allclose(s, base if residual else jnp.zeros_like(base), atol=1e-6)


def test_rule5_rgbd_teacher_sees_the_lr_and_adds_its_residual():
  from dsr_jax.models import dsrnet  # pylint: disable=g-import-not-at-top
  cfg = _cfg('task', model__teacher_input='rgbd')
  models, params = _params(cfg)
  assert params['denet']['shallow']['Conv_0']['kernel'].shape[2] == 4
  b = _batch(cfg)
  zero = _zero_last_side_conv(params['denet'])
  out = models.denet.apply({'params': zero}, b['rgb'], b['lr_depth'], train=True)
  base = dsrnet.bicubic_upsample(b['lr_depth'], cfg.model.scale)
  np.testing.assert_allclose(out.depth, base, atol=1e-6)
  # The LR depth changes the teacher's output (it is an input, not just the residual).
  other = models.denet.apply({'params': params['denet']}, b['rgb'], 0.5 * b['lr_depth'], train=True)
  mine = models.denet.apply({'params': params['denet']}, b['rgb'], b['lr_depth'], train=True)
  assert float(jnp.abs(other.feats[-1] - mine.feats[-1]).max()) > 0
  rgb_cfg = _cfg('task')
  _, rgb_params = _params(rgb_cfg)
  assert rgb_params['denet']['shallow']['Conv_0']['kernel'].shape[2] == 3


def test_rule3_cosine_affinity_carries_signal():
  k = jax.random.split(jax.random.key(3), 2)
  # Small, smooth features as a network makes them early: raw dot products are tiny, the softmax uniform.
  fa = 0.05 * jax.random.normal(k[0], (2, 16, 16, 8))
  fb = 0.05 * jax.random.normal(k[1], (2, 16, 16, 8))
  v = jnp.ones((2, 16, 16, 1))
  p = 4
  raw = losses.affinity(fa, p, 'raw')
  assert float(raw.max()) < 1.5 / p ** 2  # uniform rows: the first version's fault
  cos = losses.affinity(fa, p, 'cosine', 0.1)
  np.testing.assert_allclose(cos.sum(-1), 1.0, rtol=1e-5)
  assert float(cos.max()) > 3.0 / p ** 2
  l_cos = float(losses.affinity_l1(fa, fb, v, p, 'cosine', 0.1))
  l_raw = float(losses.affinity_l1(fa, fb, v, p, 'raw'))
  assert 0 < l_cos <= 2 and l_cos > 1000 * l_raw
  assert float(losses.affinity_l1(fa, fa, v, p, 'cosine', 0.1)) == 0.0
  # Per-row L1 with all pixels valid: mean over rows of sum over columns.
  want = jnp.abs(cos - losses.affinity(fb, p, 'cosine', 0.1)).sum(-1).mean()
  np.testing.assert_allclose(l_cos, float(want), rtol=1e-5)


PEER = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    'shared', 'peers', 'torch_ctkt.py')
needs_peer = pytest.mark.skipif(importlib.util.find_spec('torch') is None or not os.path.exists(PEER),
                                reason='the PyTorch peer (and torch) are not installed')


def _peer():
  spec = importlib.util.spec_from_file_location('torch_ctkt', PEER)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


@needs_peer
@pytest.mark.parametrize('kind', ['cosine', 'raw'])
def test_rule3_affinity_loss_matches_the_peer(kind):
  import torch  # pylint: disable=g-import-not-at-top
  peer = _peer()
  k = jax.random.split(jax.random.key(4), 2)
  fa, fb = jax.random.normal(k[0], (2, 12, 12, 6)), jax.random.normal(k[1], (2, 12, 12, 6))
  ours = float(losses.affinity_l1(fa, fb, jnp.ones((2, 12, 12, 1)), 4, kind, 0.1))
  t = lambda x: torch.from_numpy(np.array(x)).permute(0, 3, 1, 2).contiguous()
  theirs = float(peer.affinity_loss(t(fa), t(fb), 4, kind))
  np.testing.assert_allclose(ours, theirs, rtol=1e-4)


@needs_peer
@pytest.mark.parametrize('teacher_input', ['rgb', 'rgbd'])
def test_rule5_parameter_counts_equal_the_peer(teacher_input):
  peer = _peer()
  cfg = _cfg('task', model__teacher_input=teacher_input)
  m = cfg.model
  _, params = _params(cfg)
  ours = {k: sum(x.size for x in jax.tree.leaves(v)) for k, v in params.items()}
  theirs = {'dsr': peer.DSRNet(m.scale, m.channels, m.feat, m.stages),
            'denet': peer.DENet(m.channels, m.feat, m.stages, m.de_blocks, 4 if teacher_input == 'rgbd' else 3),
            'spnet': peer.SPNet(m.channels)}
  assert ours == {k: sum(p.numel() for p in v.parameters()) for k, v in theirs.items()}


def test_rule6_cross_task_data_has_one_depth_convention():
  cfg = test_config.get_config()
  cfg.data.name = 'middlebury_lu+rgbdd'
  with pytest.raises(ConfigError, match=r"data.name='middlebury_lu\+rgbdd'.*two depth conventions"):
    train.validate(cfg)
  cfg.model.use_denet = cfg.model.use_spnet = False  # DSRNet alone may mix them
  train.validate(cfg)
  cfg = test_config.get_config()
  cfg.data.name = 'middlebury_lu*8+middlebury2005'
  train.validate(cfg)


@pytest.mark.parametrize('field,value,needle', [
    ('train.roles', 'both', 'train.roles'), ('train.teacher_update', 'thaw', 'train.teacher_update'),
    ('loss.affinity', 'l2', 'loss.affinity'), ('loss.affinity_tau', 0.0, 'loss.affinity_tau'),
    ('loss.side_weight', -1.0, 'loss.side_weight'), ('loss.rho2', float('nan'), 'loss.rho2'),
    ('model.teacher_input', 'depth', 'model.teacher_input')])
def test_revision2_fields_are_validated(field, value, needle):
  cfg = test_config.get_config()
  sec, leaf = field.split('.')
  cfg[sec][leaf] = value
  with pytest.raises(ConfigError, match=needle):
    train.validate(cfg)


def test_rule7_mutual_rgbd_run_compiles_one_step_more_and_both_learn(tmp_path):
  """A whole tiny run with train.roles='mutual' and an 'rgbd' teacher (rule 5): image summaries, validation
  and checkpoints all feed DENet the LR depth, and only one step more than stage 1's is compiled."""
  cfg = test_config.get_config()
  cfg.train.roles = 'mutual'
  cfg.model.teacher_input = 'rgbd'
  cfg.train.num_steps, cfg.ckpt.every_steps = 6, 6
  with count_calls(steps, 'train_step', lambda *a, phase, **k: phase.name) as traces:
    summary = train.train_and_evaluate(cfg, str(tmp_path))
  assert summary['step'] == 6 and np.isfinite(summary['val_mad'])
  assert dict(traces) == {'stage1': 1, 'mutual': 1}
  import glob  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  acc = event_accumulator.EventAccumulator(glob.glob(f'{tmp_path}/events.out.tfevents.*')[0],
                                           size_guidance={'tensors': 0})
  acc.Reload()
  log = lambda tag: {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)}
  assert log('train/teacher')[6] == roles.MUTUAL
  for tag in ('grad/out/dsr', 'grad/out/denet', 'grad/aff/dsr', 'grad/aff/denet'):
    assert log(tag)[6] > 0, tag

