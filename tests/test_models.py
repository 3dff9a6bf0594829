"""Networks: shapes, parameter counts, the fast back-projection form, sharding, config validation."""
import importlib.util
import pathlib

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from dsr_jax import models
from dsr_jax import sharding
from dsr_jax.errors import ConfigError
from dsr_jax.models import layers
from dsr_jax.models.dsrnet import DSRNet

SCALES = (2, 4, 8, 16)


def tiny_cfg(**kw):
  base = dict(name='dsrnet', scale=4, channels=4, feat=8, stages=2, de_blocks=1, residual=True, bp_impl='polyphase',
              dtype='float32', use_denet=True, use_spnet=True, side_residual=False, teacher_input='rgb',
              teacher_residual=True, teacher='', teacher_width=4, teacher_blocks=1, ae_rgb=False)
  base.update(kw)
  return ml_collections.ConfigDict(base)


@pytest.mark.parametrize('scale', SCALES)
def test_dsrnet_shapes_odd_sizes(scale):
  m = models.build(tiny_cfg(scale=scale)).dsr
  lr = jnp.ones((2, 17, 23, 1))
  params = m.init(jax.random.key(0), lr, train=True)
  out = m.apply(params, lr)
  chex.assert_shape(out, (2, 17 * scale, 23 * scale, 1))
  tr = m.apply(params, lr, train=True)
  assert len(tr.feats) == len(tr.sides) == 2
  chex.assert_shape(tr.feats, (2, 17 * scale, 23 * scale, 4))
  chex.assert_shape(tr.sides, (2, 17 * scale, 23 * scale, 1))
  # The test-time forward pass never runs the side heads: its graph has no op on their params.
  n_ops = lambda j: j.count('conv_general_dilated') + j.count('dot_general')
  infer = n_ops(str(jax.make_jaxpr(lambda p: m.apply(p, lr))(params)))
  train = n_ops(str(jax.make_jaxpr(lambda p: m.apply(p, lr, train=True))(params)))
  assert infer + 2 * 2 == train  # two convs per side head, T = 2 heads


@pytest.mark.parametrize('name', sorted(models.REGISTRY))
def test_every_registered_network_keeps_the_contract(name):
  """Each network inits from its own dummy inputs, has an integer receptive margin, and a depth network's
  train-mode output is a NetOutput with one side output per feature map, at HR."""
  cfg = tiny_cfg()
  net = models.REGISTRY[name](cfg, jnp.float32)
  inputs = net.dummy_inputs(3, cfg.scale)
  params = net.init(jax.random.key(0), *inputs, train=True)
  assert isinstance(net.receptive_margin(), int) and net.receptive_margin() > 0
  out = net.apply(params, *inputs, train=True)
  if name == 'spnet':
    chex.assert_shape(out, (1, 3 * cfg.scale, 3 * cfg.scale, 1))
    return
  assert isinstance(out, models.NetOutput)
  assert len(out.feats) == len(out.sides) == cfg.stages
  chex.assert_shape(out.depth, (1, 3 * cfg.scale, 3 * cfg.scale, 1))
  chex.assert_shape(list(out.sides), (1, 3 * cfg.scale, 3 * cfg.scale, 1))


def test_unknown_network_name_is_one_line_error():
  with pytest.raises(ConfigError, match=r"model.name='unet': expected one of 'dsrnet'"):
    models.build(tiny_cfg(name='unet'))
  with pytest.raises(ConfigError, match='eval.baseline=bicubic'):
    models.build(tiny_cfg(name='bicubic'))


def test_denet_spnet_shapes():
  ms = models.build(tiny_cfg())
  rgb = jnp.ones((2, 20, 28, 3))
  p = ms.denet.init(jax.random.key(0), rgb, train=True)
  out = ms.denet.apply(p, rgb, train=True)
  chex.assert_shape(out.depth, (2, 20, 28, 1))
  chex.assert_shape(out.feats, (2, 20, 28, 4))
  f = jnp.ones((2, 20, 28, 4))
  d = jnp.ones((2, 20, 28, 1))
  ps = ms.spnet.init(jax.random.key(1), f, f, d, d, d)
  chex.assert_shape(ms.spnet.apply(ps, f, f, d, d, d), (2, 20, 28, 1))


def _conv_params(cin, cout, k):
  return cin * cout * k * k + cout


def expected_counts(s, c, feat, t, r):
  """Parameter counts from the architecture text (independent of the Flax modules)."""
  k = s + 4
  shallow = lambda cin: _conv_params(cin, feat, 3) + _conv_params(feat, feat, 3) + _conv_params(feat, c, 1) + 3
  side = _conv_params(c, c, 3) + 1 + _conv_params(c, 1, 3)
  bp_unit = 3 * _conv_params(c, c, k) + 3  # three k x k convs + three PReLU slopes
  dsr = shallow(1) + (2 * t - 1) * bp_unit + t * side + _conv_params(c * t, 1, 3)
  res = 2 * _conv_params(c, c, 3) + 1
  de = shallow(3) + t * r * res + t * side + _conv_params(c * t, 1, 3)
  sp = 2 * _conv_params(1, c, 1) + _conv_params(2 * c, c, 3) + 3 * _conv_params(c, c, 3) + 4 + _conv_params(c, 1, 3)
  return {'dsr': dsr, 'denet': de, 'spnet': sp}


@pytest.mark.parametrize('s,c,feat,t,r', [(4, 64, 256, 4, 2), (8, 64, 256, 7, 2), (2, 16, 32, 3, 1),
                                          (16, 8, 12, 2, 3)])
def test_param_counts(s, c, feat, t, r):
  from dsr_jax import bench
  cfg = tiny_cfg(scale=s, channels=c, feat=feat, stages=t, de_blocks=r)
  got = {k: bench.count(v) for k, v in bench.abstract_params(models.build(cfg), s).items()}
  assert got == expected_counts(s, c, feat, t, r)


# Known counts printed by ../shared/peers/torch_ctkt.py for the paper-size nets (cross-check of the formula).
def test_formula_matches_peer_printout():
  assert expected_counts(4, 64, 256, 4, 2) == {'dsr': 6267809, 'denet': 1356884, 'spnet': 185413}
  assert expected_counts(8, 64, 256, 7, 2) == {'dsr': 23881337, 'denet': 1914272, 'spnet': 185413}


@pytest.mark.parametrize('scale', SCALES)
def test_polyphase_equals_reference_forward_and_grad(scale):
  k, _, _ = layers.bp_geometry(scale)
  kx, kw, kX, kw2, kg = jax.random.split(jax.random.key(scale), 5)
  x = jax.random.normal(kx, (2, 5, 6, 3))
  w = jax.random.normal(kw, (k, k, 3, 4)) / k
  big_x = jax.random.normal(kX, (2, 5 * scale, 6 * scale, 3))
  w2 = jax.random.normal(kw2, (k, k, 3, 4)) / k

  def fast_up(x, w):
    return layers.groups_to_hr(layers.deconv_groups(x, w, scale), scale)

  def fast_down(big_x, w):
    return layers.conv_s_groups(layers.hr_to_groups(big_x, scale), w, scale)

  # Independent reference: jax.lax.conv_transpose with PyTorch (gradient-of-conv) semantics.
  def ref_up(x, w):
    return jax.lax.conv_transpose(x, w, (scale, scale), ((k - 3, k - 3), (k - 3, k - 3)),
                                  dimension_numbers=('NHWC', 'HWOI', 'NHWC'), transpose_kernel=True)

  def ref_down(big_x, w):
    return jax.lax.conv_general_dilated(big_x, w, (scale, scale), ((2, 2), (2, 2)),
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))

  for fast, ref, a, kern in ((fast_up, ref_up, x, w), (fast_down, ref_down, big_x, w2)):
    yf, yr = fast(a, kern), ref(a, kern)
    assert yf.shape == yr.shape
    np.testing.assert_allclose(yf, yr, atol=1e-5, rtol=1e-5)
    ct = jax.random.normal(kg, yr.shape)
    gf = jax.grad(lambda a, kk: jnp.sum(fast(a, kk) * ct), argnums=(0, 1))(a, kern)
    gr = jax.grad(lambda a, kk: jnp.sum(ref(a, kk) * ct), argnums=(0, 1))(a, kern)
    for u, v in zip(gf, gr):
      np.testing.assert_allclose(u, v, atol=1e-5 * float(jnp.abs(v).max()), rtol=1e-5)


@pytest.mark.parametrize('scale', (2, 4))
def test_whole_dsrnet_polyphase_equals_reference(scale):
  kw = dict(scale=scale, channels=4, feat=8, stages=3, residual=True)
  fast, ref = DSRNet(**kw, impl='polyphase'), DSRNet(**kw, impl='reference')
  lr = jax.random.uniform(jax.random.key(1), (2, 9, 7, 1))
  params = fast.init(jax.random.key(0), lr, train=True)
  np.testing.assert_allclose(fast.apply(params, lr), ref.apply(params, lr), atol=1e-5)
  loss = lambda m: lambda p: jnp.mean(m.apply(p, lr) ** 2)
  chex.assert_trees_all_close(jax.grad(loss(fast))(params), jax.grad(loss(ref))(params), atol=1e-5, rtol=1e-4)


@pytest.mark.skipif(importlib.util.find_spec('torch') is None, reason='torch not installed (peer check)')
@pytest.mark.parametrize('scale', SCALES)
def test_back_projection_matches_pytorch_semantics(scale):
  import torch
  k, s, p = layers.bp_geometry(scale)
  rng = np.random.default_rng(scale)
  x = rng.standard_normal((1, 3, 4, 5)).astype(np.float32)  # NCHW
  w = rng.standard_normal((3, 2, k, k)).astype(np.float32) / k  # ConvTranspose2d: (in, out, k, k)
  y_t = torch.nn.functional.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), stride=s, padding=p)
  ours = layers.groups_to_hr(layers.deconv_groups(
      jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(w.transpose(2, 3, 0, 1)), s), s)
  np.testing.assert_allclose(np.asarray(ours), y_t.numpy().transpose(0, 2, 3, 1), atol=1e-5)


def test_jit_forward_sharded_over_8_devices():
  assert jax.device_count() == 8, 'tests/conftest.py should give 8 fake CPU devices'
  m = models.build(tiny_cfg(scale=2)).dsr
  mesh = sharding.make_mesh()
  lr = jax.random.uniform(jax.random.key(0), (8, 6, 5, 1))
  params = m.init(jax.random.key(1), lr[:1], train=True)
  data, repl = NamedSharding(mesh, P('data')), NamedSharding(mesh, P())
  fwd = jax.jit(m.apply, in_shardings=(repl, data), out_shardings=data)
  with jax.set_mesh(mesh):
    out = fwd(jax.device_put(params, repl), jax.device_put(lr, data))
  assert out.sharding.spec == P('data')
  assert len(out.addressable_shards) == 8
  np.testing.assert_allclose(np.asarray(out), np.asarray(m.apply(params, lr)), atol=1e-5)


@pytest.mark.parametrize('field,value,allowed', [
    ('scale', 3, '2, 4, 8, 16'), ('channels', 0, 'positive integer'), ('stages', 0, 'positive integer'),
    ('feat', -1, 'positive integer'), ('de_blocks', 0, 'positive integer'), ('bp_impl', 'fft', 'polyphase'),
    ('dtype', 'float16', 'bfloat16')])
def test_bad_hyperparameters_name_the_field(field, value, allowed):
  with pytest.raises(ValueError) as e:
    models.build(tiny_cfg(**{field: value}))
  assert isinstance(e.value, ConfigError)
  msg = str(e.value)
  assert f'model.{field}' in msg and allowed in msg and '\n' not in msg


def test_module_validates_directly():
  with pytest.raises(ValueError, match=r'model\.scale=3.*2, 4, 8, 16'):
    DSRNet(scale=3)


def test_bench_params_cli(capsys):
  from dsr_jax import bench
  assert bench.main(['params', '--scale', '2', '--stages', '3', '--channels', '16', '--feat', '32',
                     '--de-blocks', '1']) == 0
  import json
  line = json.loads(capsys.readouterr().out.strip())
  assert line['params'] == expected_counts(2, 16, 32, 3, 1)


def test_peer_file_counts_if_available():
  """Runs the PyTorch peer itself (when torch and ../shared are present) and compares counts."""
  peer = pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'peers' / 'torch_ctkt.py'
  if importlib.util.find_spec('torch') is None or not peer.exists():
    pytest.skip('torch or ../shared/peers/torch_ctkt.py not available')
  import subprocess
  import sys
  import json
  args = ['--scale', '8', '--stages', '3', '--channels', '8', '--feat', '16', '--de-blocks', '2']
  out = subprocess.run([sys.executable, str(peer), *args, '--mode', 'infer', '--hr', '16', '--iters', '1'],
                       capture_output=True, text=True, check=True).stdout
  assert json.loads(out.strip().splitlines()[-1])['params'] == expected_counts(8, 8, 16, 3, 2)


@pytest.mark.parametrize('features', [1, 6])  # the tap form (few outputs) and the conv form
def test_conv_of_a_list_is_the_conv_of_its_concatenation(features):
  k = jax.random.split(jax.random.key(3), 3)
  a, b = jax.random.normal(k[0], (2, 9, 7, 3)), jax.random.normal(k[1], (2, 9, 7, 5))
  conv = layers.Conv(features, 3)
  params = conv.init(k[2], jnp.concatenate([a, b], -1))
  assert params['params']['kernel'].shape == (3, 3, 8, features)
  whole = lambda p, a, b: jnp.sum(jnp.sin(conv.apply(p, jnp.concatenate([a, b], -1))))
  split = lambda p, a, b: jnp.sum(jnp.sin(conv.apply(p, [a, b])))
  for x, y in zip(jax.tree.leaves(jax.value_and_grad(whole, argnums=(0, 1, 2))(params, a, b)),
                  jax.tree.leaves(jax.value_and_grad(split, argnums=(0, 1, 2))(params, a, b))):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-5)
