"""Building blocks: convolutions, PReLU, and the DBPN back-projection convolutions in two forms.

Back-projection geometry (DBPN): kernel k = s + 4, stride s, padding 2. A transposed conv with these
numbers maps h x w to exactly sh x sw and the strided conv maps it back.

Two implementations compute the same function with the same k x k parameters:

* 'reference': the textbook form. The transposed conv is an lhs-dilated convolution (what
  `nn.ConvTranspose` lowers to) and the down-projection a strided convolution. XLA:CPU runs the dilated
  convolution as a dense conv over an s^2-times larger, mostly-zero input, and the gradient of the strided
  conv w.r.t. its input is again a dilated conv, so training is several times slower than PyTorch.
* 'polyphase' (default): output pixel o = s*q + r of the transposed conv only sees the LR pixels
  q-1, q, q+1, through kernel taps t = r + 2 + s*(1 - j), j = 0..2. So the transposed conv is a dense
  conv of the LR map to s*s*C channels (the phases); depth-to-space turns phases into pixels. Not every
  phase reads all three neighbours (the k = s + 4 taps cover only some), so phases that read the same
  neighbours form a group, and each group is one small dense conv (2x2, 2x1, 1x2 or 1x1 windows at LR):
  no zero tap is multiplied. The strided conv is the adjoint, a sum of the same small convs over the
  groups. Both directions and their gradients are plain convolutions at LR resolution.

In the polyphase form the DBPN body keeps HR feature maps as "phase groups": one LR-sized array per
(row group, column group) of phases (`phase_groups`), channel order (ry, rx, c) inside a group. An Up/Down
pair never shuffles pixels; only the features that leave the body (output conv, side heads, SPNet,
affinity) are converted to HR layout (`groups_to_hr`).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dsr_jax import resize
from dsr_jax.errors import ConfigError

SCALES = resize.SCALES
BP_IMPLS = ('polyphase', 'reference')
_DN = ('NHWC', 'HWIO', 'NHWC')


def bp_geometry(scale: int) -> tuple[int, int, int]:
  """(kernel, stride, padding) of the back-projection convs at this scale."""
  return scale + 4, scale, 2


def check_positive(name: str, value: Any) -> None:
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    raise ConfigError(f'{name}={value!r}: expected a positive integer')


def check_scale(scale: Any, field: str = 'model.scale') -> None:
  if scale not in SCALES:
    raise ConfigError(f'{field}={scale!r}: expected one of {", ".join(map(str, SCALES))}')


def conv(x, w, *, stride: int = 1, padding=((1, 1), (1, 1)), lhs_dilation: int = 1):
  return jax.lax.conv_general_dilated(
      x, w, window_strides=(stride, stride), padding=padding,
      lhs_dilation=(lhs_dilation, lhs_dilation), dimension_numbers=_DN)


def depth_to_space(x, s: int):
  b, h, w, c = x.shape
  x = x.reshape(b, h, w, s, s, c // (s * s))
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h * s, w * s, c // (s * s))


def space_to_depth(x, s: int):
  b, hh, ww, c = x.shape
  x = x.reshape(b, hh // s, s, ww // s, s, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, hh // s, ww // s, s * s * c)


def deconv_reference(x, kernel, s: int):
  """Transposed conv (PyTorch ConvTranspose2d semantics, HWIO kernel) as an lhs-dilated convolution."""
  k, _, p = bp_geometry(s)
  q = k - 1 - p
  return conv(x, kernel[::-1, ::-1], padding=((q, q), (q, q)), lhs_dilation=s)


def conv_s_reference(x, kernel, s: int):
  _, _, p = bp_geometry(s)
  return conv(x, kernel, stride=s, padding=((p, p), (p, p)))


def phase_groups(s: int):
  """Phases r in [0, s) grouped by the LR neighbours j in {0, 1, 2} (offset j - 1) they read.

  Tap t = r + 2 + s*(1 - j) of the k = s + 4 kernel exists only for some j: phases 0, 1 also read the
  previous LR pixel and phases s-2, s-1 the next one; the others read only their own pixel. Returns
  [(phases, lr_neighbours)] with contiguous ranges, so each group is one small dense conv.
  """
  groups = {}
  for r in range(s):
    js = tuple(j for j in range(3) if 0 <= r + 2 + s * (1 - j) < s + 4)
    groups.setdefault(js, []).append(r)
  return sorted(((tuple(rs), js) for js, rs in groups.items()), key=lambda g: g[0])


def _group_kernel(kernel, s: int, ry, jy, rx, jx, deconv: bool):
  """Sub-kernel (len(jy), len(jx), cin, len(ry) * len(rx) * cout) of one phase group (deconv) or
  (len(jy), len(jx), len(ry) * len(rx) * cin, cout) (strided conv, the adjoint)."""
  if deconv:
    tap = lambda r, j: r + 2 + s * (1 - j)
  else:  # strided conv reading input phase r of LR neighbour j: t = s*(j - 1) + r + 2, offset j - 1
    tap = lambda r, j: s * (j - 1) + r + 2
  ty = jnp.array([[tap(r, j) for r in ry] for j in jy])  # (len(jy), len(ry))
  tx = jnp.array([[tap(r, j) for r in rx] for j in jx])
  g = kernel[ty[:, None, :, None], tx[None, :, None, :]]  # (jy, jx, ry, rx, cin, cout)
  cin, cout = kernel.shape[2:]
  n = len(ry) * len(rx)
  if deconv:
    return g.transpose(0, 1, 4, 2, 3, 5).reshape(len(jy), len(jx), cin, n * cout)
  return g.reshape(len(jy), len(jx), n * cin, cout)


def _pad_for(js):
  # LR neighbour j sits at offset j - 1: a window over offsets min..max needs this 'valid' padding.
  return (1 - js[0], js[-1] - 1)


def _group_index(s: int):
  """[(ry, jy, rx, jx)] for every (row group, column group) of phases, row-major: the order of a group list."""
  gs = phase_groups(s)
  return [(ry, jy, rx, jx) for ry, jy in gs for rx, jx in gs]


def deconv_groups(x, kernel, s: int):
  """Transposed conv returning the HR map as phase groups: a list of (B, h, w, len(ry)*len(rx)*cout).

  One dense conv per (row group, column group) of phases; each computes only taps that exist (the groups
  read 2 + 1*(s-4) + 2 = s + 4 = k taps per axis), so the multiply-adds equal the transposed conv's
  useful ones at every scale (the dense 3x3 phase conv would do 9s^2 / k^2 times more: 2.25x at x4).
  The groups stay separate arrays: the strided conv that follows reads each one whole, so no slice or
  concatenation copies an HR-sized map (BENCHMARKS.md, "Measurements behind code choices").
  """
  return [conv(x, _group_kernel(kernel, s, ry, jy, rx, jx, True), padding=(_pad_for(jy), _pad_for(jx)))
          for ry, jy, rx, jx in _group_index(s)]


def conv_s_groups(parts, kernel, s: int):
  """Strided conv of an HR map given as phase groups: a sum of small dense convs, one per group."""
  out = None
  for part, (ry, _, rx, _) in zip(parts, _group_index(s)):
    jy = tuple(j for j in range(3) if 0 <= s * (j - 1) + ry[0] + 2 < s + 4)
    jx = tuple(j for j in range(3) if 0 <= s * (j - 1) + rx[0] + 2 < s + 4)
    y = conv(part, _group_kernel(kernel, s, ry, jy, rx, jx, False), padding=(_pad_for(jy), _pad_for(jx)))
    out = y if out is None else out + y
  return out


def groups_to_phase(parts, s: int):
  """Phase groups -> phase layout (B, h, w, s*s*C), channel order (ry, rx, c)."""
  b, h, w, _ = parts[0].shape
  gs = phase_groups(s)
  n = len(gs)
  rows = []
  for a, (ry, _) in enumerate(gs):
    cols = [parts[a * n + bb].reshape(b, h, w, len(ry), len(rx), -1) for bb, (rx, _) in enumerate(gs)]
    rows.append(jnp.concatenate(cols, axis=4) if n > 1 else cols[0])
  out = jnp.concatenate(rows, axis=3) if n > 1 else rows[0]
  return out.reshape(b, h, w, -1)


def groups_to_hr(parts, s: int):
  return depth_to_space(groups_to_phase(parts, s), s)


def hr_to_groups(x, s: int):
  """HR map (B, s*h, s*w, C) -> phase groups: the inverse of `groups_to_hr`."""
  b, hh, ww, _ = x.shape
  xp = space_to_depth(x, s).reshape(b, hh // s, ww // s, s, s, -1)
  return [xp[:, :, :, ry[0]:ry[-1] + 1, rx[0]:rx[-1] + 1].reshape(b, hh // s, ww // s, -1)
          for ry, _, rx, _ in _group_index(s)]


# XLA:CPU runs a k x k conv with one (or a few) output channels far below its conv throughput, so such heads
# use the tap form below (BENCHMARKS.md, "Optimisation log", item 3).
_TAP_FORM_MAX_OUT = 4


def tap_conv(x, w):
  """'Same' k x k conv with few output channels: one matmul to k*k*cout tap maps, then shifted sums.

  Reads the input once (the conv's im2col would read it k*k times), and both the matmul and the shifted
  sums have cheap, well-shaped gradients.
  """
  k, _, cin, cout = w.shape
  p = k // 2
  _, h, wd, _ = x.shape
  z = jnp.einsum('bhwc,cto->bhwto', x, w.transpose(2, 0, 1, 3).reshape(cin, k * k, cout))
  z = jnp.pad(z, ((0, 0), (p, p), (p, p), (0, 0), (0, 0)))
  out = None
  for i in range(k):
    for j in range(k):
      tap = z[:, i:i + h, j:j + wd, i * k + j]
      out = tap if out is None else out + tap
  return out


class PReLU(nn.Module):
  """One learnable slope per layer (PyTorch nn.PReLU() default), init 0.25."""

  @nn.compact
  def __call__(self, x):
    a = self.param('slope', nn.initializers.constant(0.25), (), jnp.float32)
    # x may be a list of phase groups (polyphase HR maps): one slope for all of them.
    return jax.tree.map(lambda t: jnp.where(t >= 0, t, a.astype(t.dtype) * t), x)


def _torch_like_init(fan_in: int):
  # PyTorch's default conv init (kaiming_uniform a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for
  # kernel and bias. It keeps the deep residual back-projection stack well scaled at init.
  bound = 1.0 / (fan_in ** 0.5)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


class Conv(nn.Module):
  """k x k 'same' conv with bias, PyTorch-style init, compute in `dtype`.

  `x` may be a list of arrays, meaning their channel concatenation (same parameters, same result): each
  part is convolved with its slice of the kernel and the results summed. The concatenated map is never
  built, and no input gradient is formed for a part that is a constant (a frozen teacher's features):
  one HR-sized map less in memory per use, at the same step time (BENCHMARKS.md).
  """
  features: int
  kernel_size: int = 3
  dtype: Any = jnp.float32
  stride: int = 1  # > 1: a strided conv, 'same' padding (the guided teachers' encoder: HR down to LR)

  @nn.compact
  def __call__(self, x):
    parts = list(x) if isinstance(x, (list, tuple)) else [x]
    cin = sum(p.shape[-1] for p in parts)
    k = self.kernel_size
    init = _torch_like_init(cin * k * k)
    w = self.param('kernel', init, (k, k, cin, self.features)).astype(self.dtype)
    b = self.param('bias', init, (self.features,))
    out, start = None, 0
    for p in parts:
      wp = w[:, :, start:start + p.shape[-1]]
      start += p.shape[-1]
      if self.stride > 1:
        y = conv(p.astype(self.dtype), wp, stride=self.stride, padding=((k // 2, k // 2),) * 2)
      else:
        y = _conv_same(p.astype(self.dtype), wp)
      out = y if out is None else out + y
    return out + b.astype(self.dtype)


def _conv_same(x, w):
  k = w.shape[0]
  if k > 1 and w.shape[-1] <= _TAP_FORM_MAX_OUT:
    return tap_conv(x, w)
  return conv(x, w, padding=((k // 2, k // 2),) * 2)


class BPConv(nn.Module):
  """A back-projection conv: 'deconv' (LR -> HR) or 'conv' (HR -> LR), k x k params, two forms.

  HR inputs and outputs are lists of phase groups when impl == 'polyphase', HR arrays otherwise.
  """
  features: int
  scale: int
  kind: str  # 'deconv' | 'conv'
  impl: str = 'polyphase'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    s = self.scale
    k, _, _ = bp_geometry(s)
    if self.kind == 'deconv':
      cin = x.shape[-1]
      # PyTorch ConvTranspose2d fan_in is computed from weight dim 1 (= out channels) * k * k.
      fan_in = self.features * k * k
    else:
      if self.impl == 'polyphase':
        ry, _, rx, _ = _group_index(s)[0]
        cin = x[0].shape[-1] // (len(ry) * len(rx))
      else:
        cin = x.shape[-1]
      fan_in = cin * k * k
    init = _torch_like_init(fan_in)
    w = self.param('kernel', init, (k, k, cin, self.features)).astype(self.dtype)
    b = self.param('bias', init, (self.features,)).astype(self.dtype)
    x = jax.tree.map(lambda t: t.astype(self.dtype), x)
    if self.impl == 'polyphase':
      if self.kind == 'deconv':
        return [p + jnp.tile(b, p.shape[-1] // self.features) for p in deconv_groups(x, w, s)]
      return conv_s_groups(x, w, s) + b
    if self.kind == 'deconv':
      return deconv_reference(x, w, s) + b
    return conv_s_reference(x, w, s) + b


def _sub(a, b):
  return jax.tree.map(lambda u, v: u - v.astype(u.dtype), a, b)


def _add(a, b):
  return jax.tree.map(jnp.add, a, b)


class UpProjection(nn.Module):
  """DBPN up-projection: h0 = deconv(L); l0 = conv(h0); h1 = deconv(l0 - L); return h1 + h0."""
  channels: int
  scale: int
  impl: str = 'polyphase'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, lr):
    bp = lambda kind, name: BPConv(self.channels, self.scale, kind, self.impl, self.dtype, name=name)
    h0 = PReLU(name='act1')(bp('deconv', 'deconv1')(lr))
    l0 = PReLU(name='act2')(bp('conv', 'conv1')(h0))
    h1 = PReLU(name='act3')(bp('deconv', 'deconv2')(_sub(l0, lr)))
    return _add(h1, h0)


class DownProjection(nn.Module):
  """DBPN down-projection: l0 = conv(H); h0 = deconv(l0); l1 = conv(h0 - H); return l1 + l0."""
  channels: int
  scale: int
  impl: str = 'polyphase'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hr):
    bp = lambda kind, name: BPConv(self.channels, self.scale, kind, self.impl, self.dtype, name=name)
    l0 = PReLU(name='act1')(bp('conv', 'conv1')(hr))
    h0 = PReLU(name='act2')(bp('deconv', 'deconv1')(l0))
    l1 = PReLU(name='act3')(bp('conv', 'conv2')(_sub(h0, hr)))
    return l1 + l0


class Shallow(nn.Module):
  """conv3x3 cin->F, PReLU; conv3x3 F->F, PReLU; conv1x1 F->C, PReLU."""
  feat: int
  channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = PReLU()(Conv(self.feat, 3, self.dtype)(x))
    x = PReLU()(Conv(self.feat, 3, self.dtype)(x))
    return PReLU()(Conv(self.channels, 1, self.dtype)(x))


class SideHead(nn.Module):
  """Training-only side output of one stage: conv3x3(PReLU(conv3x3(F, C)), 1)."""
  channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, f):
    return Conv(1, 3, self.dtype)(PReLU()(Conv(self.channels, 3, self.dtype)(f)))

