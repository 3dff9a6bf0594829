"""Evaluation: the paper's bicubic row, exact tiled inference, self-ensemble, protocols, restore 8 -> 1."""
import functools
import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from conftest import count_calls
from dsr_jax.configs import test as test_config
from dsr_jax import evaluate
from dsr_jax import inference
from dsr_jax.config_lib import load_config
from dsr_jax import main as main_lib
from dsr_jax import metrics
from dsr_jax import protocol
from dsr_jax import reports
from dsr_jax import restore
from dsr_jax.errors import ConfigError
from dsr_jax.errors import UserError
from dsr_jax.input_pipeline import readers
from dsr_jax.models.dsrnet import DSRNet

REPO = pathlib.Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures('fast_xla')


def _eval_config(ckpt_dir, **eval_overrides):
  cfg = test_config.get_config()
  cfg.mode = 'eval'
  cfg.eval.checkpoint_dir = str(ckpt_dir)
  cfg.eval.dataset = 'synthetic_rgbd'
  for k, v in eval_overrides.items():
    cfg.eval[k] = v
  return cfg


@functools.lru_cache(maxsize=None)
def _tiny_params(scale, stages, seed, feat):
  dsr = DSRNet(scale=scale, channels=4, feat=feat, stages=stages)
  return dsr, dsr.init(jax.random.key(seed), jnp.zeros((1, 8, 8, 1)))['params']


def _tiny_dsr(scale, stages=2, seed=0, feat=8):
  """A random-weight tiny DSRNet (initialised once per session: op-by-op init is slow on CPU)."""
  dsr, params = _tiny_params(scale, stages, seed, feat)
  return dsr, jax.tree.map(lambda x: x, params)  # a fresh dict: tests may edit it


# ----------------------------------------------------------------------------------- paper's bicubic row


@pytest.mark.parametrize('scale', [4, 8])
def test_bicubic_middlebury2005_reproduces_paper(shared_data_dir, tmp_path, scale):
  cfg = load_config('eval:middlebury2005')
  cfg.eval.baseline = 'bicubic'
  cfg.model.scale = scale
  cfg.data.dir = str(shared_data_dir)
  cfg.eval.images = scale == 8  # pictures once (they cost a few seconds)
  cfg.eval.figure_scenes = 2
  res = evaluate.run(cfg, str(tmp_path))
  paper = reports.PAPER_TABLE1_MAD['Bicubic']
  i = protocol.PAPER_SCALES.index(scale)
  for scene in ('art', 'books', 'moebius'):  # the scenes whose GT is the paper's (shared/data/README.md)
    assert round(res['per_scene'][scene]['mad'], 2) == paper[scene][i], scene
  assert set(res['per_scene']) == set(reports.SCENES_2005)
  for m in res['per_scene'].values():
    assert m['rmse'] >= m['mad'] > 0 and 0 < m['ssim'] <= 1 and m['psnr'] > 20
  on_disk = json.loads((tmp_path / 'eval' / f'middlebury2005_x{scale}_bicubic.json').read_text())
  assert on_disk['per_scene']['art']['mad'] == pytest.approx(res['per_scene']['art']['mad'])
  assert on_disk['paper_table1_mad']['DSRNet']['art'] == reports.PAPER_TABLE1_MAD['DSRNet']['art'][i]
  md = (tmp_path / 'eval' / f'middlebury2005_x{scale}_bicubic.md').read_text()
  assert '| Bicubic (paper) |' in md and '| DSRNet w/o CT (paper) |' in md and '| DSRNet (paper) |' in md
  assert f'| **Bicubic (ours)** | {paper["art"][i]:.2f} | {paper["books"][i]:.2f} |' in md
  pics = tmp_path / 'eval' / f'middlebury2005_x{scale}_bicubic_images'
  if scale != 8:
    assert not pics.exists()
    return
  assert res['files']['images']['figure'] == str(pics / 'figure.png')
  index = json.loads((pics / 'index.json').read_text())['scenes']
  assert set(index) == set(reports.SCENES_2005)
  assert sorted(p.name for p in pics.glob('*_panel.png')) == ['art_panel.png', 'books_panel.png']
  for scene in ('art', 'books'):  # a panel's MADs are the report's: here both columns are bicubic
    for key in ('panel_mad_bicubic', 'panel_mad_ours'):
      assert index[scene][key] == pytest.approx(res['per_scene'][scene]['mad'], abs=1e-9), (scene, key)
  for scene in reports.SCENES_2005:
    sr = np.asarray(Image.open(pics / f'{scene}_sr.png'))
    colour = np.asarray(Image.open(pics / f'{scene}_color.png'))
    err = np.asarray(Image.open(pics / f'{scene}_error.png'))
    assert sr.dtype == np.uint16 and colour.shape == err.shape == sr.shape + (3,)
  # The 16-bit SR of Art is the prediction that was scored: rounded to 0-255 as the protocol does, it gives
  # the report's MAD against the GT.
  from dsr_jax.input_pipeline import sources
  src = sources.get_source(evaluate._data_config(cfg, 'middlebury2005', 8).data, 'test')
  gt = next(src[i] for i in range(len(src)) if src[i]['name'] == 'art')
  art = np.asarray(Image.open(pics / 'art_sr.png'), np.float64) / 65535 * index['art']['norm'] * index['art']['factor']
  mad = np.abs(np.round(np.clip(art, 0, 255)) - gt['depth']).mean()  # the source holds 0-255 disparity
  assert mad == pytest.approx(res['per_scene']['art']['mad'], abs=2e-3)
  assert Image.open(pics / 'figure.png').size[1] > Image.open(pics / 'art_panel.png').size[1]


def test_bicubic_needs_explicit_scale(tmp_path):
  cfg = load_config('eval:middlebury2005')
  cfg.eval.baseline = 'bicubic'
  with pytest.raises(ConfigError, match='model.scale=0'):
    evaluate.run(cfg, str(tmp_path))


# ------------------------------------------------------------------------------------------ inference


@pytest.mark.parametrize('scale', [2, 4])
def test_tiled_equals_untiled(scale):
  dsr, params = _tiny_dsr(scale)
  rng = np.random.default_rng(0)
  # Windows (margin 12, buckets of 32): whole 64x96, tiles 32x32 / 64x64 / 96x96; both sizes share them.
  combos = {2: (((37, 53), ((8, 0), (16, 12), (25, 5), (10, 40))), ((19, 70), ((25, 5), (10, 40)))),
            4: (((37, 53), ((8, 0), (25, 5))), ((19, 70), ((16, 12),)))}[scale]
  for (h, w), combos in combos:
    lr = rng.random((h, w)).astype(np.float32)
    full = inference.super_resolve(dsr, params, lr)
    assert full.shape == (scale * h, scale * w) and full.dtype == np.float32
    for tile, overlap in combos:
      tiled = inference.super_resolve(dsr, params, lr[..., None], tile=tile, overlap=overlap)
      np.testing.assert_allclose(tiled, full, atol=1e-4, err_msg=f'{h}x{w} tile={tile} overlap={overlap}')


def test_interior_equals_plain_apply():
  # Away from the border (farther than the receptive field) the reflected windows change nothing.
  dsr, params = _tiny_dsr(2)
  lr = np.random.default_rng(1).random((60, 64)).astype(np.float32)
  plain = np.asarray(dsr.apply({'params': params}, lr[None, ..., None]))[0, ..., 0]
  ours = inference.super_resolve(dsr, params, lr, tile=16)
  m = 2 * inference.receptive_margin(dsr)
  np.testing.assert_allclose(ours[m:-m, m:-m], plain[m:-m, m:-m], atol=1e-5)


def test_receptive_margin_bounds_influence():
  dsr, params = _tiny_dsr(2, stages=3)
  x = np.random.default_rng(2).random((1, 64, 64, 1)).astype(np.float32)
  y0 = np.asarray(dsr.apply({'params': params}, x))[0, ..., 0]
  x[0, 32, 32, 0] += 1.0
  y1 = np.asarray(dsr.apply({'params': params}, x))[0, ..., 0]
  rows = np.nonzero(np.abs(y1 - y0).max(axis=1) > 0)[0]
  reach = max(32 - rows.min() / 2, (rows.max() + 1) / 2 - 33)
  assert 0 < reach <= inference.receptive_margin(dsr)


def test_one_compile_per_bucket():
  dsr, params = _tiny_dsr(2, seed=3, feat=6)  # a model no other test compiled
  # DSRNet.apply runs (as Python) only when super_resolve's jitted function traces it.
  with count_calls(DSRNet, 'apply', lambda *a, **k: 'DSRNet') as traces:
    for h, w in ((37, 53), (35, 50), (36, 60)):  # + 2 * 12 margin -> all in the 64 x 96 bucket
      inference.super_resolve(dsr, params, np.ones((h, w), np.float32))
    assert traces['DSRNet'] == 1
    inference.super_resolve(dsr, params, np.ones((100, 100), np.float32), tile=20)  # 20 + 24 -> 64 x 64
    inference.super_resolve(dsr, params, np.ones((70, 41), np.float32), tile=20)
    assert traces['DSRNet'] == 2


def test_ensemble():
  dsr, params = _tiny_dsr(2)
  yy, xx = np.mgrid[:23, :31]
  smooth = (0.5 + 0.2 * np.sin(yy / 7.0) * np.cos(xx / 9.0)).astype(np.float32)
  single = inference.super_resolve(dsr, params, smooth)
  ens = inference.super_resolve(dsr, params, smooth, ensemble=True)
  assert ens.shape == single.shape == (46, 62) and np.isfinite(ens).all()
  assert np.abs(ens - single).mean() < 0.5 * np.abs(single - single.mean()).mean() + 0.1
  # With the output conv zeroed DSRNet is its bicubic residual, which commutes with flips and transposes:
  # the ensemble must then reproduce the single pass (this checks every inverse transform).
  zeroed = jax.tree.map(lambda x: x, params)
  zeroed['tail'] = jax.tree.map(jnp.zeros_like, params['tail'])
  np.testing.assert_allclose(inference.super_resolve(dsr, zeroed, smooth, ensemble=True, tile=8),
                             inference.super_resolve(dsr, zeroed, smooth), atol=1e-5)


def test_bad_tiling_arguments():
  dsr, params = _tiny_dsr(2)
  with pytest.raises(ConfigError, match='tile'):
    inference.super_resolve(dsr, params, np.ones((8, 8)), tile=-1)
  with pytest.raises(ConfigError, match='overlap'):
    inference.super_resolve(dsr, params, np.ones((8, 8)), overlap=-3)


# ------------------------------------------------------------------------------------------ protocols


def test_protocol_units_and_crops():
  gt = np.full((40, 50), 2.0)  # dataset units
  valid = np.ones(gt.shape, bool)
  valid[0, 0] = False
  # NYU: metres -> cm with a 6-pixel border; the error sits only in the border and in one valid pixel.
  pred = gt + 0.0
  pred[:6] += 1.0
  pred[20, 20] += 0.01
  m, (p, g, mask, peak) = metrics.score_image(pred / 10, gt / 10, valid, 10.0, readers.PROTOCOLS['nyu_v2'])
  assert p.shape == (28, 38) and peak == 1000.0
  assert m['mad'] == pytest.approx(1.0 / (28 * 38), rel=1e-6)
  assert m['rmse'] == pytest.approx(np.sqrt(1.0 / (28 * 38)), rel=1e-6)
  # RGB-D-D: mm -> cm, no crop, invalid pixels ignored.
  pred = gt * 1000 + 10.0
  pred[0, 0] = 1e6
  m, _ = metrics.score_image(pred / 4000, gt * 1000 / 4000, valid, 4000.0, readers.PROTOCOLS['rgbdd'])
  assert m['mad'] == pytest.approx(1.0) and m['rmse'] == pytest.approx(1.0)
  assert m['psnr'] == pytest.approx(20 * np.log10(400.0))
  # Middlebury 2005: rounded to uint8, every pixel counts.
  gt8 = np.full((10, 10), 100.0)
  m, (p, _, mask, _) = metrics.score_image((gt8 + 0.4) / 255, gt8 / 255, np.zeros((10, 10)), 255.0,
                                            readers.PROTOCOLS['middlebury2005'])
  assert m['mad'] == 0.0 and mask.all() and m['psnr'] is None and m['ssim'] == pytest.approx(1.0)


def test_depth_metrics():
  gt = np.linspace(1, 5, 100).reshape(10, 10)
  mask = np.ones(gt.shape, bool)
  m = metrics.depth_metrics(gt, gt, mask, 1e-3)
  assert m['delta1'] == 1.0 and m['abs_rel'] == 0.0 and m['rmse'] == 0.0 and m['log10'] == 0.0
  m = metrics.depth_metrics(gt * 1.3, gt, mask, 1e-3)
  assert m['delta1'] == 0.0 and m['delta2'] == 1.0 and m['abs_rel'] == pytest.approx(0.3)
  assert m['log10'] == pytest.approx(np.log10(1.3))


def _batches(names, hr, lr):
  """eval_dataset-like batches of one image each (the Evaluator's input), every image the same maps."""
  one = lambda x: np.asarray(x, np.float32)[None, ..., None]
  return [{'name': np.array([n], object), 'mask': np.ones(1, np.float32), 'norm': np.ones(1, np.float32),
           'hr_depth': one(hr), 'lr_depth': one(lr), 'valid': one(np.ones_like(hr)),
           'rgb': np.zeros((1, *hr.shape, 3), np.float32)} for n in names]


def test_a_registered_metric_reaches_every_report(monkeypatch, tmp_path):
  """Adding a metric is one registered function: the JSON, the Markdown table and the console line show it."""
  monkeypatch.setitem(metrics.METRICS, 'max_err', metrics.Metric(
      lambda p, g, m, peak: float(np.abs(p - g)[m].max()), 'max |error| ({unit})', 3, 'MAXERR'))
  rng = np.random.default_rng(0)
  hr = rng.random((16, 16))
  ev = evaluate.Evaluator(_batches(['a', 'b'], hr, hr[::2, ::2]), readers.PROTOCOLS['synthetic_rgbd'], 2)
  res = ev(lambda lr: np.kron(lr, np.ones((2, 2))), baseline=True)
  want = float(np.abs(np.kron(hr[::2, ::2], np.ones((2, 2))) - hr).max())
  assert res['per_scene']['a']['max_err'] == pytest.approx(want) and 'max_err' in res['bicubic']['mean']
  result = {'dataset': 'synthetic_rgbd', 'scale': 2, 'model': 'dsrnet', 'step': 1, 'split': 'test',
            'protocol': {'unit': 'u', 'reference': 'r'}, **res,
            'files': {'json': str(tmp_path / 'x.json'), 'md': str(tmp_path / 'x.md')}}
  md = reports.markdown(result)
  assert '| Scene | MAD (u) | RMSE (u) | PSNR (dB) | SSIM | max |error| (u) |' in md
  assert '| a | ' in md and f'{want:.3f} |' in md
  assert f'MAXERR {want:.3f}' in reports.summary(result)


def test_evaluator_keeps_repeated_names_and_scores_the_baseline_once():
  hr = np.linspace(0, 1, 64).reshape(8, 8)
  ev = evaluate.Evaluator(_batches(['x', 'x', 'y'], hr, hr[::2, ::2]), readers.PROTOCOLS['synthetic_rgbd'], 2,
                          metrics=('mad',))
  calls = []
  res = ev(lambda lr: calls.append(1) or np.zeros((8, 8)), baseline=True)
  assert list(res['per_scene']) == ['x', 'x#2', 'y'] and res['images'] == 3 and len(calls) == 3
  assert set(res['mean']) == {'mad'} and res['mean']['mad'] == pytest.approx(hr.mean())
  first = res['bicubic']
  assert ev(lambda lr: np.zeros((8, 8)), baseline=True)['bicubic'] is first  # computed once per Evaluator


def test_evaluator_without_images_is_one_line_error():
  b = _batches(['a'], np.ones((8, 8)), np.ones((4, 4)))
  b[0]['mask'][0] = 0
  with pytest.raises(UserError, match=r"^data.val_name='v': split 'validation' has no image with valid depth$"):
    evaluate.Evaluator(b, readers.PROTOCOLS['synthetic_rgbd'], 2,
                       name="data.val_name='v': split 'validation'")(lambda lr: lr)


# ---------------------------------------------------------------------------------- restore and eval


def test_resolve_checkpoint_forms(ckpt, tmp_path):
  # A training workdir resolves to its best checkpoint (here the final validation, step 8).
  assert restore.resolve_checkpoint(ckpt) == (str(ckpt / 'checkpoints_best'), 8)
  root, step = restore.resolve_checkpoint(ckpt / 'checkpoints')
  assert root == str(ckpt / 'checkpoints') and step == 8
  assert restore.resolve_checkpoint(ckpt / 'checkpoints' / '4') == (root, 4)
  with pytest.raises(UserError, match='no such file'):
    restore.resolve_checkpoint(tmp_path / 'nothing')
  with pytest.raises(UserError, match='no checkpoint found'):
    restore.resolve_checkpoint(tmp_path)
  bad = tmp_path / 'run' / 'checkpoints' / '12'
  (bad / 'config').mkdir(parents=True)
  with pytest.raises(UserError, match=r'12: incomplete, missing params'):
    restore.resolve_checkpoint(tmp_path / 'run')
  # A best-checkpoint directory wins over the latest step.
  best = tmp_path / 'wd'
  os.makedirs(best / 'checkpoints')
  os.symlink(ckpt / 'checkpoints' / '8', best / 'checkpoints' / '8')
  (best / 'checkpoints_best').mkdir()
  os.symlink(ckpt / 'checkpoints' / '4', best / 'checkpoints_best' / '4')
  assert restore.resolve_checkpoint(best) == (str(best / 'checkpoints_best'), 4)


def test_load_for_inference_single_device(ckpt):
  cfg, params = restore.load_for_inference(ckpt)
  assert cfg.model.scale == 2 and cfg.model.channels == 4
  leaves = jax.tree.leaves(params)
  assert leaves and all(len(x.sharding.device_set) == 1 for x in leaves)
  assert 'tail' in params and 'side_0' in params
  _, both, info = restore.load_params(ckpt, ('dsr', 'denet'))
  assert set(both) == {'dsr', 'denet'} and info['step'] == 8
  jax.tree.map(np.testing.assert_array_equal, both['dsr'], params)


def test_report_records_the_checkpoint_path_as_given(tmp_path, monkeypatch):
  # A report written into the repository (the shipped ones) must not carry this machine's layout.
  monkeypatch.chdir(tmp_path)
  step_dir = str(tmp_path / 'checkpoints' / 'dsrnet_x4' / '9000')
  assert reports.shown_path(step_dir, 'checkpoints/dsrnet_x4') == os.path.join('checkpoints', 'dsrnet_x4',
                                                                               '9000')
  assert reports.shown_path(step_dir, step_dir) == step_dir
  outside = str(tmp_path.parent / 'elsewhere' / '8')  # relative, but resolved outside the cwd
  assert reports.shown_path(outside, '../elsewhere') == outside
  assert reports.shown_path('', '') == ''


def test_eval_checkpoint_scale_mismatch(ckpt, tmp_path, capsys):
  cfg = _eval_config(ckpt)
  cfg.model.scale = 4
  with pytest.raises(ConfigError, match=r'model.scale=4 contradicts the checkpoint\'s scale 2'):
    evaluate.run(cfg, str(tmp_path))
  assert main_lib.run(cfg, str(tmp_path)) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'model.scale=4' in err[0]
  cfg = _eval_config(tmp_path / 'missing')
  assert main_lib.run(cfg, str(tmp_path)) == 2
  assert 'no such file' in capsys.readouterr().err


def test_eval_restores_8_device_checkpoint_on_1_device(ckpt, tmp_path):
  res = evaluate.run(_eval_config(ckpt), str(tmp_path / 'here'))
  assert res['scale'] == 2 and res['step'] == 8 and res['images'] == 2
  # The report of another checkpoint is never replaced: refused before the evaluation runs.
  report = pathlib.Path(res['files']['json'])
  report.write_text(json.dumps({'checkpoint': '/elsewhere/8'}))
  with pytest.raises(UserError, match=re.escape(f'{report}: already holds the report of /elsewhere/8')):
    evaluate.run(_eval_config(ckpt), str(tmp_path / 'here'))
  assert json.loads(report.read_text()) == {'checkpoint': '/elsewhere/8'}
  report.write_text(json.dumps({'checkpoint': res['checkpoint']}))  # the same checkpoint's: replaced
  again = evaluate.run(_eval_config(ckpt), str(tmp_path / 'here'))
  assert json.loads(report.read_text())['per_scene'] == json.loads(json.dumps(again['per_scene']))
  assert set(res['denet']['mean']) == {'delta1', 'delta2', 'delta3', 'abs_rel', 'rmse', 'log10'}
  # Same XLA options as this process (the autouse fixture), one device.
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1', JAX_PLATFORMS='cpu',
             JAX_DISABLE_MOST_OPTIMIZATIONS='1')
  proc = subprocess.run(
      [sys.executable, '-m', 'dsr_jax.main', '--config', str(REPO / 'configs' / 'test.py'),
       '--workdir', str(tmp_path / 'there'), '--config.mode=eval', f'--config.eval.checkpoint_dir={ckpt}',
       '--config.eval.dataset=synthetic_rgbd'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'eval synthetic_rgbd x2' in proc.stdout
  there = json.loads((tmp_path / 'there' / 'eval' / 'synthetic_rgbd_x2.json').read_text())
  assert there['per_scene'].keys() == res['per_scene'].keys()
  for name, m in res['per_scene'].items():
    for k in ('mad', 'rmse', 'psnr', 'ssim'):
      assert there['per_scene'][name][k] == pytest.approx(m[k], rel=1e-5, abs=1e-6), (name, k)
  for k, v in res['denet']['mean'].items():
    assert there['denet']['mean'][k] == pytest.approx(v, rel=1e-5, abs=1e-6), k
  md = (tmp_path / 'there' / 'eval' / 'synthetic_rgbd_x2.md').read_text()
  assert 'DSRNet (ours, step 8)' in md and 'DENet' in md


def test_validation_and_predict_make_no_implicit_transfer(ckpt, tmp_path):
  """Validation puts DSRNet's parameters on the device once (not with every window), and predict's are restored
  there: under jax.transfer_guard('disallow') any implicit host <-> device copy raises, so a parameter tree
  re-uploaded per window, or a window or an output moved without being named, fails here."""
  from dsr_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  from dsr_jax import predict  # pylint: disable=g-import-not-at-top
  from dsr_jax import train  # pylint: disable=g-import-not-at-top
  cfg = test_config.get_config()
  models = models_lib.build(cfg.model)
  _, params, _ = restore.load_params(ckpt, ('dsr',))
  # As training holds them: replicated over the mesh of the 8 fake devices.
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ('data',))
  params = jax.device_put(params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  batches = list(train.val_dataset(cfg))  # the data pipeline is not under test
  evaluator = train.val_evaluator(cfg, batches)
  with jax.transfer_guard('disallow'):
    result = train.validate_params(evaluator, models, params)
  assert result['images'] == len(result['per_scene']) > 0 and np.isfinite(result['mean']['mad'])
  np.save(tmp_path / 'scan.npy', np.linspace(0.25, 1, 12 * 16, dtype=np.float32).reshape(12, 16))
  with jax.transfer_guard('disallow'):
    assert predict.main(['--checkpoint', str(ckpt), '--input', str(tmp_path / 'scan.npy'),
                         '--output', str(tmp_path / 'out'), '--tile', '8', '--ensemble']) == 0
  assert np.load(tmp_path / 'out' / 'scan_x2.npy').shape == (24, 32)
