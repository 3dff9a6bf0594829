"""The degradation mixture (data.degrade='random'), the named evaluation degradations and the robustness table:
each part's effect on a known input, determinism through the pipeline, and the table from stored JSON."""
import dataclasses
import json

from absl import flags
import numpy as np
import pytest

from dsr_jax import resize
from dsr_jax import robustness
from dsr_jax.configs import default
from dsr_jax.errors import ConfigError
from dsr_jax.input_pipeline import degradation, pipeline, synthetic

RNG = np.random.default_rng(0)
X = RNG.random((32, 40))


def test_resamplers_match_what_libraries_do():
  s = 4
  blocks = X.reshape(8, 4, 10, 4)
  # Offset 0 antialiased bicubic is MATLAB imresize, mirrored border included.
  np.testing.assert_allclose(degradation.resample(X, s, 'bicubic'), resize.downsample(X, s), atol=1e-12)
  np.testing.assert_allclose(degradation.resample(X, s, 'area'), blocks.mean(axis=(1, 3)), atol=1e-12)
  # Bilinear without antialiasing (OpenCV INTER_LINEAR, torch) averages the 2 x 2 pixels at the block centre.
  np.testing.assert_allclose(degradation.resample(X, s, 'bilinear_noaa'),
                             blocks[:, 1:3, :, 1:3].mean(axis=(1, 3)), atol=1e-12)
  # The two point-sampling conventions.
  top_left = degradation.eval_degradation('point_u8', s)
  assert top_left.offset == (-1.5, -1.5)
  np.testing.assert_array_equal(degradation.resample(X, s, 'point', top_left.offset), X[::4, ::4])
  np.testing.assert_array_equal(degradation.resample(X, s, 'point', (0.5, 0.5)), X[2::4, 2::4])
  for r in degradation.RESAMPLERS:
    m = degradation.resample_matrix(37, s, r, 0.3)
    assert m.shape == (10, 37)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-12)
  # Without antialiasing the kernel keeps its width, so a pixel-scale checkerboard aliases instead of
  # averaging away.
  checker = np.indices((32, 32)).sum(axis=0) % 2 * 1.0
  assert np.ptp(degradation.resample(checker, s, 'bicubic')) < 0.05
  assert np.ptp(degradation.resample(checker, s, 'point')) == 0  # every sample lands on the same colour
  assert np.ptp(degradation.resample(checker + np.arange(32)[None] % 3, s, 'bicubic_noaa')) > 0.5


def test_subpixel_offset_shifts_a_ramp():
  ramp = np.tile(np.arange(64.0), (16, 1))
  base = degradation.resample(ramp, 4, 'bicubic')
  shifted = degradation.resample(ramp, 4, 'bicubic', (0.0, 0.5))
  # Away from the mirrored border the sample centres move by half an HR pixel.
  np.testing.assert_allclose((shifted - base)[:, 3:-3], 0.5, atol=1e-9)


def test_each_part_of_a_fixed_degradation():
  hr = np.full((32, 32), 0.5)
  hr[:, 16:] = 0.7
  rng = lambda: np.random.default_rng(1)
  clean = degradation.Fixed().apply(hr, 4, rng())
  np.testing.assert_array_equal(clean, resize.downsample(hr, 4).astype(np.float32))
  noisy = degradation.Fixed(noise=2.0).apply(hr, 4, rng())
  assert 1.5 / 255 < np.std(noisy - clean) < 2.5 / 255
  tof = degradation.Fixed(tof=0.02).apply(hr, 4, rng())
  rel = (tof - clean) / clean
  assert 0.015 < np.std(rel) < 0.025
  u8 = degradation.Fixed(bits=8).apply(hr, 4, rng())
  np.testing.assert_allclose(u8 * 255, np.round(u8 * 255), atol=1e-4)
  assert np.abs(u8 - clean).max() <= 0.5 / 255 + 1e-6
  blurred = degradation.Fixed(blur=1.5).apply(hr, 4, rng())
  assert np.abs(np.diff(blurred, axis=1)).max() < np.abs(np.diff(clean, axis=1)).max()
  holes = degradation.Fixed(holes=0.3).apply(np.linspace(0.1, 0.9, 32 * 32).reshape(32, 32), 4, rng())
  base = resize.downsample(np.linspace(0.1, 0.9, 32 * 32).reshape(32, 32), 4).astype(np.float32)
  changed = holes != base
  assert 0.1 < changed.mean() < 0.5 and np.isfinite(holes).all() and (holes > 0).all()


def test_random_draws_are_deterministic_and_cover_every_part():
  spec = degradation.Random()
  a = [spec.draw(4, np.random.default_rng([7, i])) for i in range(400)]
  b = [spec.draw(4, np.random.default_rng([7, i])) for i in range(400)]
  assert a == b
  assert 0.15 < sum(d == degradation.Fixed() for d in a) / len(a) < 0.35  # clean = 0.25
  assert {d.resampler for d in a} == set(degradation.RESAMPLERS)
  assert any(d.blur for d in a) and any(d.noise for d in a) and any(d.tof for d in a) and any(d.holes for d in a)
  assert {d.bits for d in a} == {0, 8, 16}
  points = {d.offset for d in a if d.resampler == 'point'}
  assert points <= {(dy, dx) for dy in (-1.5, -0.5, 0.5, 1.5) for dx in (-1.5, -0.5, 0.5, 1.5)}
  assert all(abs(v) <= 0.5 for d in a if d.resampler not in ('point',) for v in d.offset)


def small_config(**data):
  c = default.get_config()
  c.model.scale, c.data.crop, c.data.workers, c.train.batch_size = 4, 16, 0, 4
  for k, v in data.items():
    c.data[k] = v
  return c


def test_random_lr_in_the_pipeline_is_a_function_of_the_seed_for_any_worker_count():
  flags.FLAGS.mark_as_parsed()  # grain's spawned workers read absl flags
  src = synthetic.SyntheticSource(10, 24, 24)
  take = lambda ds, n: [b for b, _ in zip(iter(ds), range(n))]
  ref = take(pipeline.train_dataset(small_config(degrade='random'), src, process_index=0, process_count=1), 4)
  again = take(pipeline.train_dataset(small_config(degrade='random'), src, process_index=0, process_count=1), 4)
  it = iter(pipeline.train_dataset(small_config(degrade='random', workers=2), src, process_index=0,
                                   process_count=1))
  try:
    workers = [next(it) for _ in range(4)]
  finally:
    it.close()
  protocol = take(pipeline.train_dataset(small_config(), src, process_index=0, process_count=1), 4)
  for a, b, c in zip(ref, again, workers):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
      np.testing.assert_array_equal(a[k], c[k])
  # Same crops as the protocol's pipeline, other LR.
  np.testing.assert_array_equal(ref[0]['hr_depth'], protocol[0]['hr_depth'])
  assert any(not np.array_equal(a['lr_depth'], p['lr_depth']) for a, p in zip(ref, protocol))


def test_eval_degradations_per_image_and_names():
  from tests.test_pipeline import ListSource, example  # pylint: disable=g-import-not-at-top
  src = ListSource([example(np.linspace(10, 200, 32 * 32).reshape(32, 32), 'a', norm=255.0)])
  c = small_config()
  ds = pipeline.eval_dataset(c, source=src, degradations=('protocol', 'noise2_u8', 'point_u8'))
  names = [str(b['name'][0]) for b in ds]
  assert names == ['a', 'a@noise2_u8', 'a@point_u8']
  lrs = [b['lr_depth'][0, ..., 0] for b in ds]
  np.testing.assert_allclose(lrs[0], resize.downsample(np.linspace(10, 200, 32 * 32).reshape(32, 32) / 255, 4),
                             atol=1e-6)
  np.testing.assert_allclose(lrs[1] * 255, np.round(lrs[1] * 255), atol=1e-3)
  again = [b['lr_depth'][0, ..., 0] for b in pipeline.eval_dataset(c, source=src,
                                                                     degradations=('protocol', 'noise2_u8'))]
  np.testing.assert_array_equal(lrs[1], again[1])  # fixed seed: every evaluation sees the same LR


@pytest.mark.parametrize('field,value', [
    ('degrade', 'bicubicc'), ('random.clean', 1.5), ('random.resamplers', 'bicubic,lanczos'),
    ('random.noise_sigma', (3.0, 1.0)), ('random.bits8', 0.9), ('val_degradations', 'protocol,noise9')])
def test_bad_degradation_fields_name_themselves(field, value):
  c = small_config(degrade='random')
  node, *rest = field.split('.')
  if rest:
    c.data[node][rest[0]] = value
  else:
    c.data[node] = value
  with pytest.raises(ConfigError, match=field.split('.')[-1]):
    degradation.check_config(c.data)


def _report(path, scale, deg, ours, bic):
  path.parent.mkdir(parents=True, exist_ok=True)
  per = lambda v: {s: {'mad': m} for s, m in v.items()}
  path.write_text(json.dumps({'scale': scale, 'degradation': deg, 'per_scene': per(ours),
                              'mean': {'mad': float(np.mean(list(ours.values())))},
                              'bicubic': {'per_scene': per(bic), 'mean': {'mad': float(np.mean(list(bic.values())))}}}))


def test_robustness_table_is_written_from_the_stored_reports(tmp_path):
  _report(tmp_path / 'net' / 'eval' / 'middlebury2005_x4.json', 4, 'protocol', {'art': 0.3, 'books': 0.1},
          {'art': 1.0, 'books': 0.3})
  _report(tmp_path / 'net' / 'eval' / 'middlebury2005_x4_point_u8.json', 4, 'point_u8',
          {'art': 1.2, 'books': 0.2}, {'art': 1.0, 'books': 0.4})
  (tmp_path / 'net' / 'realscene.json').write_text(json.dumps({
      'scale': 4, 'per_scene': {'r1': {'rmse_cm': 7.0, 'bicubic_rmse_cm': 7.5}},
      'mean': {'rmse_cm': 7.0, 'bicubic_rmse_cm': 7.5}}))
  readme = tmp_path / 'README.md'
  readme.write_text(f'intro\n{robustness.README_BEGIN}\nold\n{robustness.README_END}\nrest\n')
  text = robustness.write_table(str(tmp_path), str(readme))
  lines = text.splitlines()
  proto = next(l for l in lines if l.startswith('| protocol |'))
  point = next(l for l in lines if l.startswith('| point_u8 |'))
  real = next(l for l in lines if l.startswith('| realscene |'))
  assert '| 0.6500 | 0.2000 | 0.31 | 0.33 (books) | yes |' in proto
  assert '| 0.7000 | 0.7000 | 1.00 | 1.20 (art) | no |' in point  # mean 0.7 / 0.7, art 1.2 / 1.0
  assert '| 7.000 | 0.93 | 0.93 (r1) | yes |' in real
  assert lines.index(proto) < lines.index(point) < lines.index(real)  # rows in the table's fixed order
  summary = robustness.summary(robustness.load(str(tmp_path)))
  assert summary.splitlines()[2:] == ['| protocol | 0.31 |', '| point_u8 | 1.00* |', '| realscene | 0.93 |']
  assert readme.read_text() == f'intro\n{robustness.README_BEGIN}\n{summary}{robustness.README_END}\nrest\n'
  assert (tmp_path / 'TABLE.md').read_text().endswith(text)


def test_robustness_cli_refuses_unknown_rows(capsys):
  assert robustness.main(['--rows', 'protocol,jpeg', '--table-only']) == 2
  assert "'jpeg' is not one of" in capsys.readouterr().err


def test_fixed_is_picklable_and_frozen():
  import pickle  # pylint: disable=g-import-not-at-top
  spec = degradation.Random.from_config(default.get_config().data.random)
  assert pickle.loads(pickle.dumps(spec)) == spec
  with pytest.raises(dataclasses.FrozenInstanceError):
    spec.clean = 0.0


def test_realscene_registration_measures_shift_and_blur(shared_data_dir):
  if not (shared_data_dir / 'rgbdd' / 'realscene').is_dir():
    pytest.skip('no rgbdd/realscene in the data directory')
  reg = robustness.realscene_registration(str(shared_data_dir), scale=4, shift=1)
  assert reg['per_scene']
  for scene in reg['per_scene'].values():
    # The unshifted upsampling is among the shifts tried, so the best one can only be as good or better.
    assert scene['shifted_rmse_cm'] <= scene['bicubic_rmse_cm']
    assert max(abs(v) for v in scene['best_shift']) <= 1
    assert all(np.isfinite(scene[f'blur{s}_rmse_cm']) for s in (1, 2, 4))


def test_named_degradations_ignore_the_run_seed():
  from tests.test_pipeline import ListSource, example  # pylint: disable=g-import-not-at-top
  src = ListSource([example(np.linspace(10, 200, 32 * 32).reshape(32, 32), 'a', norm=255.0)])
  lrs = []
  for seed in (0, 3):
    c = small_config()
    c.seed = seed
    lrs.append(pipeline.eval_dataset(c, source=src, degradations=('noise2_u8',))[0]['lr_depth'])
  np.testing.assert_array_equal(lrs[0], lrs[1])
