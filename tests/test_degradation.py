"""MATLAB-style imresize degradation: weights, shapes, JAX parity and the paper's Middlebury bicubic row."""
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from dsr_jax.errors import ConfigError
from dsr_jax.input_pipeline import degradation

# Table 1 of Sun et al. (CVPR 2021), Bicubic row: MAD on the 0-255 scale for x2/x4/x8/x16.
PAPER_BICUBIC_MAD = {
    'art': (0.48, 0.97, 1.85, 3.59),
    'books': (0.13, 0.29, 0.59, 1.15),
    'moebius': (0.13, 0.30, 0.59, 1.13),
}


@pytest.mark.parametrize('method', degradation.METHODS)
@pytest.mark.parametrize('n,scale', [(16, 1 / 4), (37, 1 / 4), (53, 1 / 16), (9, 1 / 2), (5, 4.0), (7, 2.0)])
def test_weights_shape_and_rows_sum_to_one(n, scale, method):
  w = degradation.resize_weights(n, scale, method)
  assert w.shape == (int(np.ceil(n * scale)), n)
  np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)


def test_box_is_block_mean_and_nearest_picks_one_pixel():
  x = np.random.default_rng(0).random((8, 12))
  box = degradation.downsample(x, 4, 'box')
  np.testing.assert_allclose(box, x.reshape(2, 4, 3, 4).mean(axis=(1, 3)), atol=1e-12)
  # MATLAB nearest with scale 1/4 maps output k to input 4k + 2 (0-based): u = 4k + 2.5 (1-based).
  np.testing.assert_array_equal(degradation.downsample(x, 4, 'nearest'), x[2::4, 2::4])


def test_shapes_ceil_and_layouts_agree():
  rng = np.random.default_rng(1)
  x = rng.random((37, 53)).astype(np.float32)
  lr = degradation.downsample(x, 4)
  assert lr.shape == (10, 14) and lr.dtype == np.float32
  lr3 = degradation.downsample(x[..., None], 4)
  np.testing.assert_allclose(lr3[..., 0], lr, atol=1e-6)
  xb = np.stack([x, 2 * x])[..., None].repeat(3, axis=-1)  # (2, 37, 53, 3)
  lrb = degradation.downsample(xb, 4)
  assert lrb.shape == (2, 10, 14, 3)
  np.testing.assert_allclose(lrb[1, ..., 2], 2 * lr, atol=1e-5)
  up = degradation.upsample_bicubic(lr, 4)
  assert up.shape == (40, 56)
  assert degradation.upsample_bicubic(lrb, 4).shape == (2, 40, 56, 3)
  # Integer input is computed in float, not truncated.
  assert degradation.downsample(np.full((8, 8), 7, np.uint8), 2).dtype.kind == 'f'


def test_constant_and_linear_are_preserved():
  np.testing.assert_allclose(degradation.downsample(np.full((20, 24), 0.3), 4), 0.3, atol=1e-12)
  # Cubic convolution reproduces linear functions away from the (mirrored) border.
  ramp = np.add.outer(np.arange(16.0), 2 * np.arange(16.0))
  up = degradation.upsample_bicubic(ramp, 2)
  yy, xx = np.meshgrid((np.arange(32) + 0.5) / 2 - 0.5, (np.arange(32) + 0.5) / 2 - 0.5, indexing='ij')
  np.testing.assert_allclose(up[4:-4, 4:-4], (yy + 2 * xx)[4:-4, 4:-4], atol=1e-9)


def test_bad_method_and_scale():
  with pytest.raises(ConfigError, match='data.degrade'):
    degradation.downsample(np.zeros((8, 8)), 2, 'lanczos')
  with pytest.raises(ConfigError, match='model.scale'):
    degradation.downsample(np.zeros((8, 8)), 2.5)


@pytest.mark.parametrize('method', degradation.METHODS)
def test_jax_path_matches_numpy_under_jit(method):
  x = np.random.default_rng(2).random((3, 40, 36, 1)).astype(np.float32)
  f = jax.jit(lambda a: degradation.downsample(a, 4, method, xp=jnp))
  np.testing.assert_allclose(np.asarray(f(x)), degradation.downsample(x, 4, method), atol=1e-6)
  g = jax.jit(lambda a: degradation.upsample_bicubic(a, 4, xp=jnp))
  lr = degradation.downsample(x, 4)
  np.testing.assert_allclose(np.asarray(g(lr)), degradation.upsample_bicubic(lr, 4), atol=1e-5)
  h = jax.jit(lambda a: degradation.downsample(a, 2, xp=jnp))  # 2-D input
  np.testing.assert_allclose(np.asarray(h(x[0, ..., 0])), degradation.downsample(x[0, ..., 0], 2), atol=1e-6)


@pytest.mark.parametrize('s', [2, 4, 8])
def test_matches_jax_scale_and_translate_in_the_interior(s):
  """JAX's antialiased Keys cubic (a=-0.5) with the same pixel-centre map agrees away from the border.

  Border difference: JAX drops out-of-image taps and renormalises, MATLAB mirrors them, so the outermost
  output pixels (those within the kernel half-support 2*s input pixels of the edge) differ.
  """
  x = np.random.default_rng(3).random((64 + 5, 96 + 3)).astype(np.float64)
  ours = degradation.downsample(x, s)
  out_shape = ours.shape
  theirs = jax.image.scale_and_translate(
      jnp.asarray(x, jnp.float32), out_shape, (0, 1), jnp.array([1 / s, 1 / s]), jnp.zeros(2),
      method='cubic', antialias=True)
  theirs = np.asarray(theirs)
  m = 3  # Output x0 samples input s*x0 + (s-1)/2 with half-support 2s: x0 <= 1 reaches the edge.
  np.testing.assert_allclose(ours[m:-m, m:-m], theirs[m:-m, m:-m], atol=2e-5)
  assert np.abs(ours[0] - theirs[0]).max() > 1e-4  # the border really is handled differently


def test_add_noise():
  lr = np.zeros((200, 200), np.float32)
  assert degradation.add_noise(lr, 0.0, np.random.default_rng(0)) is lr
  noisy = degradation.add_noise(lr, 0.05, np.random.default_rng(0))
  assert noisy.dtype == np.float32 and abs(noisy.std() - 0.05) < 0.003
  np.testing.assert_array_equal(noisy, degradation.add_noise(lr, 0.05, np.random.default_rng(0)))
  dev = degradation.add_noise(jnp.asarray(lr), 0.05, jax.random.key(0))
  assert abs(float(jnp.std(dev)) - 0.05) < 0.003


def test_middlebury2005_bicubic_reproduces_paper_mad(shared_data_dir):
  """The protocol of ../shared/data/README.md reproduces the paper's Bicubic row to two decimals."""
  got = {}
  for scene, expected in PAPER_BICUBIC_MAD.items():
    gt = np.asarray(Image.open(shared_data_dir / 'middlebury2005' / 'depth' / f'{scene}.bmp'), np.float64)
    assert gt.shape == (1080, 1320)
    h, w = gt.shape
    row = []
    for s in (2, 4, 8, 16):
      lr = degradation.downsample(gt, s)  # float, not rounded
      assert lr.shape == (-(-h // s), -(-w // s))
      pred = degradation.upsample_bicubic(lr, s)[:h, :w]
      pred = np.round(np.clip(pred, 0, 255))  # to uint8 values
      row.append(round(float(np.mean(np.abs(pred - gt))), 2))
    got[scene] = tuple(row)
  assert got == PAPER_BICUBIC_MAD
