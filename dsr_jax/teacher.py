"""The networks that see more than the LR depth (docs/method.md, "Frozen teachers"): loading a trained one as
a student's frozen teacher (`load`), and running one on whole images with its guides (`predictor`), which
training-time validation and eval mode use for a teacher trained alone.
"""
import jax
import numpy as np

from dsr_jax import inference
from dsr_jax import models as models_lib
from dsr_jax import restore
from dsr_jax import xla_options
from dsr_jax.errors import ConfigError
from dsr_jax.errors import UserError

# The model fields that make a teacher's network: a checkpoint must agree with the student's config on each,
# so that the network built from the student's config is the one that was trained.
ARCHITECTURE = ('scale', 'channels', 'feat', 'stages', 'residual', 'side_residual', 'teacher_width',
                'teacher_blocks', 'ae_rgb')


def load(config, abstract: dict) -> dict:
  """The trained teacher's parameters (host), from model.teacher_checkpoint's network 'dsr'.

  The teacher was trained alone (model.name=model.teacher), so its network is its checkpoint's 'dsr'. A
  workdir resolves to its best checkpoint by validation MAD. `abstract` is the teacher's abstract parameters
  in this run; ConfigError names the field when the checkpoint holds another network.
  """
  m = config.model
  field = f'model.teacher_checkpoint={m.teacher_checkpoint!r}'
  try:
    saved, params, info = restore.load_params(m.teacher_checkpoint, ('dsr',))
  except UserError as e:
    raise ConfigError(f'{field}: {e}') from None
  if saved.model.name != m.teacher:
    raise ConfigError(f'{field}: {info["dir"]} holds a {saved.model.name!r} network, not model.teacher='
                      f'{m.teacher!r}')
  diffs = [f'{k}={saved.model[k]!r} there, {m[k]!r} here' for k in ARCHITECTURE if saved.model[k] != m[k]]
  shapes = lambda t: jax.tree.map(lambda x: tuple(x.shape), t)
  if diffs or shapes(params['dsr']) != shapes(abstract):
    raise ConfigError(f'{field}: the teacher in {info["dir"]} was trained with other model settings '
                      f'({"; ".join(diffs) or "parameter shapes differ"}); expected the same model.* fields')
  return jax.device_get(params['dsr'])


_JITTED = {}


def _apply_fn(net):
  fn = _JITTED.get(net)
  if fn is None:
    fn = _JITTED[net] = jax.jit(lambda params, *xs: net.apply({'params': params}, *xs),
                                compiler_options=xla_options.compiler_options())
  return fn


def _fit(x, h: int, w: int):
  """(H, W, c) cut or reflected at the bottom and right to (h, w, c)."""
  x = x[:h, :w]
  return np.pad(x, ((0, h - x.shape[0]), (0, w - x.shape[1]), (0, 0)), mode='symmetric')


def predictor(net, params):
  """(lr, rgb=, hr=) -> normalised (s*h, s*w): `net` on one whole image, with the guides it reads.

  The borders are treated as `inference.super_resolve` treats the LR: reflected by the receptive margin (the
  guides by s times it, at HR), padded to a multiple of inference.BUCKET LR pixels, and cropped back. The
  guides are cut or reflected to s times the LR's size first (a test image need not be a multiple of s).
  """
  s, fn = int(net.scale), _apply_fn(net)
  params = inference.to_device(params)

  def predict(lr, rgb, hr):
    lr = np.asarray(lr, np.float32)
    lr = lr[..., None] if lr.ndim == 2 else lr
    h, w = lr.shape[:2]
    m = int(net.receptive_margin())
    bh = -(-(h + 2 * m) // inference.BUCKET) * inference.BUCKET - h - m
    bw = -(-(w + 2 * m) // inference.BUCKET) * inference.BUCKET - w - m
    xs = [np.pad(lr, ((m, bh), (m, bw), (0, 0)), mode='symmetric')]
    given = {'rgb': rgb, 'hr_depth': hr}
    for key in models_lib.input_keys(net)[1:]:
      g = np.asarray(given[key], np.float32)
      g = _fit(g[..., None] if g.ndim == 2 else g, s * h, s * w)
      xs.append(np.pad(g, ((s * m, s * bh), (s * m, s * bw), (0, 0)), mode='symmetric'))
    y = fn(params, *(jax.device_put(x[None]) for x in xs))
    return np.asarray(jax.device_get(y))[0, s * m:s * (m + h), s * m:s * (m + w), 0]
  return predict
