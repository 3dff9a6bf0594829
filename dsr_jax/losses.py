"""Pure loss functions (docs/method.md, "Losses"). Every term takes the valid mask of the HR depth.

Shapes are NHWC; `valid` is (B, H, W, 1) with 1 where the ground truth is a real measurement.
"""
import functools

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np


def masked_mean(x, valid):
  """Mean of x over valid pixels (x broadcast against valid); 0 when nothing is valid."""
  w = jnp.broadcast_to(valid, x.shape).astype(x.dtype)
  return jnp.sum(x * w) / jnp.maximum(jnp.sum(w), 1.0)


def l1(a, b, valid):
  return masked_mean(jnp.abs(a - b), valid)


def ssim_loss_term(pred, target, valid):
  """(1 - SSIM) / 2 with dm-pix's Gaussian SSIM (11x11, sigma 1.5, data range 1), averaged over the SSIM
  map's pixels whose whole 11x11 window is valid."""
  smap = dm_pix.ssim(pred, target, max_val=1.0, return_map=True)  # (B, H-10, W-10, 1): 'valid' windows
  k = 11
  win_valid = jax.lax.reduce_window(valid, 1.0, jax.lax.min, (1, k, k, 1), (1, 1, 1, 1), 'VALID')
  return masked_mean((1.0 - smap) / 2.0, win_valid)


def de_loss(pred, target, valid, lam: float):
  """L_DE = lam * (1 - SSIM) / 2 + (1 - lam) * L1."""
  return lam * ssim_loss_term(pred, target, valid) + (1.0 - lam) * l1(pred, target, valid)


def gradient_magnitude(d):
  """Forward-difference gradient magnitude, zero differences at the last row / column."""
  dx = jnp.pad(d[:, :, 1:] - d[:, :, :-1], ((0, 0), (0, 0), (0, 1), (0, 0)))
  dy = jnp.pad(d[:, 1:] - d[:, :-1], ((0, 0), (0, 1), (0, 0), (0, 0)))
  return jnp.sqrt(dx * dx + dy * dy + 1e-12)


def gradient_valid(valid):
  """A forward difference is valid when both of its pixels are."""
  vx = jnp.pad(valid[:, :, 1:] * valid[:, :, :-1], ((0, 0), (0, 0), (0, 1), (0, 0)), constant_values=1)
  vy = jnp.pad(valid[:, 1:] * valid[:, :-1], ((0, 0), (0, 1), (0, 0), (0, 0)), constant_values=1)
  return valid * vx * vy


@functools.lru_cache(maxsize=None)
def _pool_matrix(n: int, p: int) -> np.ndarray:
  """PyTorch adaptive_avg_pool bins: bin i covers [floor(i n / p), ceil((i + 1) n / p))."""
  m = np.zeros((p, n), np.float32)
  for i in range(p):
    a, b = (i * n) // p, -((-(i + 1) * n) // p)
    m[i, a:b] = 1.0 / (b - a)
  return m


def adaptive_avg_pool(f, p: int):
  """(B, H, W, C) -> (B, min(H, p), min(W, p), C), PyTorch adaptive average pooling semantics."""
  _, h, w, _ = f.shape
  if h > p:
    f = jnp.einsum('ph,bhwc->bpwc', _pool_matrix(h, p), f)
  if w > p:
    f = jnp.einsum('qw,bhwc->bhqc', _pool_matrix(w, p), f)
  return f


def affinity(f, p: int, kind: str = 'raw', tau: float = 0.1):
  """Row-softmax affinity of F average-pooled to p x p; R is the (h*w) x C matrix of pooled features.

  'raw': softmax_rows(R R^T) (the first version). 'cosine': R's rows L2-normalised after pooling, then
  softmax_rows(R R^T / tau) (docs/method.md, rule 3).
  """
  f = adaptive_avg_pool(f.astype(jnp.float32), p)
  r = f.reshape(f.shape[0], -1, f.shape[-1])
  if kind == 'cosine':
    # rsqrt of a clamped square norm: the gradient stays finite for an all-zero pooled feature vector.
    r = r * jax.lax.rsqrt(jnp.maximum(jnp.sum(r * r, axis=-1, keepdims=True), 1e-24))
    return jax.nn.softmax(jnp.einsum('bic,bjc->bij', r, r) / tau, axis=-1)
  return jax.nn.softmax(jnp.einsum('bic,bjc->bij', r, r), axis=-1)


def affinity_l1(f_a, f_b, valid, p: int, kind: str = 'raw', tau: float = 0.1):
  """|A(F_a) - A(F_b)| with rows and columns weighted by the pooled valid fraction.

  'raw': the weighted mean over all (row, column) entries. 'cosine': per row, the weighted sum over columns
  (an L1 distance between two distributions, in [0, 2]), then the weighted mean over rows, so the size of
  the term does not shrink with p^2.
  """
  v = adaptive_avg_pool(valid, p).reshape(valid.shape[0], -1)
  w = v[:, :, None] * v[:, None, :]
  diff = jnp.abs(affinity(f_a, p, kind, tau) - affinity(f_b, p, kind, tau))
  if kind == 'cosine':
    return jnp.sum(diff * w) / jnp.maximum(jnp.sum(v), 1e-6)
  return jnp.sum(diff * w) / jnp.maximum(jnp.sum(w), 1e-6)


def side_l1(sides_a, sides_b, valid):
  """Output-space distillation: (1/T) sum_n mean |D^n_a - D^n_b|."""
  return sum(l1(a, b, valid) for a, b in zip(sides_a, sides_b)) / len(sides_a)


def feature_affinity(feats_a, feats_b, valid, p: int, kind: str = 'raw', tau: float = 0.1):
  """Affinity-space distillation: (1/T) sum_n L_A(F^n_a, F^n_b) (see affinity_l1)."""
  return sum(affinity_l1(a, b, valid, p, kind, tau) for a, b in zip(feats_a, feats_b)) / len(feats_a)


def feature_distance(feats_a, feats_b, valid, kind: str):
  """The feature term towards a frozen teacher: (1/T) sum_n d(F^n_a, F^n_b), averaged over valid pixels.

  'l1': d is the mean over channels of |F_a - F_b|. 'cosine': d is 1 - cos(F_a, F_b) of the two C-vectors at a
  pixel, in [0, 2], blind to the features' scale, which a network with other layers before the shared body
  (the teacher's encoder) need not share with the student.
  """
  def one(a, b):
    a, b = a.astype(jnp.float32), b.astype(jnp.float32)
    if kind == 'l1':
      return masked_mean(jnp.mean(jnp.abs(a - b), axis=-1, keepdims=True), valid)
    # rsqrt of clamped square norms: finite gradients at an all-zero feature vector (a dead PReLU region).
    inv = lambda x: jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-24))
    cos = jnp.sum(a * b, axis=-1, keepdims=True) * inv(a) * inv(b)
    return masked_mean(1.0 - cos, valid)
  return sum(one(a, b) for a, b in zip(feats_a, feats_b)) / len(feats_a)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def scale_gradient(x, factor: float):
  """Identity forward; multiplies the incoming gradient by `factor` on the way back."""
  del factor
  return x


def _sg_fwd(x, factor):
  del factor
  return x, None


def _sg_bwd(factor, _, g):
  return (jax.tree.map(lambda t: t * factor, g),)


scale_gradient.defvjp(_sg_fwd, _sg_bwd)
