"""Model registry: the networks by name, built from a config's `model` section.

Each registered network is a Flax module that exports
  `dummy_inputs(lr_size, scale)`  the positional inputs `init` traces it with (LR side `lr_size`);
  `receptive_margin()`            the input pixels of context an output pixel depends on (tiled inference);
and, called with `train=True`, returns a `NetOutput` (depth, feats, sides): the contract the losses read.
`model.name` picks the SR network (the product: the one network that runs at test time); the cross-task
partners are the registry's 'denet' and 'spnet' (model.use_denet, model.use_spnet). Adding a network is one
`@register` builder here and `--config.model.name=<it>`.

A network whose inputs are more than the LR depth says so with `input_keys()`, the batch keys of its
positional inputs in order (`input_keys` here; DSRNet has none and reads the LR alone). The frozen teachers
('guided', 'ae': guided.py) are such networks: `model.name=<it>` trains one alone, and `model.teacher=<it>`
builds one beside DSRNet, as `Models.teacher`, for distillation from a checkpoint (docs/method.md, "Frozen
teachers").

`model.dtype` and `model.bp_impl` may be 'auto': each backend's choice (`auto_dtype`, `auto_bp_impl`). A run
resolves them once (`resolve_config`, in train) before it builds anything, so its checkpoints' saved configs,
and the eval results read from them, name the dtype and form the network was trained with.
"""
import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from dsr_jax.errors import ConfigError
from dsr_jax.models.denet import DENet
from dsr_jax.models.dsrnet import DSRNet
from dsr_jax.models.dsrnet import validate
from dsr_jax.models.guided import GuidedDSR
from dsr_jax.models.layers import BP_IMPLS
from dsr_jax.models.output import NetOutput  # pylint: disable=unused-import
from dsr_jax.models.spnet import SPNet

NETS = ('dsr', 'denet', 'spnet')
TEACHER_INPUTS = ('rgb', 'rgbd')
TEACHERS = ('guided', 'ae')  # model.teacher: the registered networks a frozen teacher may be
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
AUTO = 'auto'
# jax.default_backend() says 'gpu' for CUDA and ROCm; JAX_PLATFORMS and a device's platform may say 'cuda'/'rocm'.
ACCELERATOR_BACKENDS = ('gpu', 'cuda', 'rocm', 'tpu')
REGISTRY: dict[str, Callable] = {}  # name -> builder(model_cfg, dtype) -> module
PARTNERS = ('denet', 'spnet')  # registry entries that are not SR networks


def register(name: str):
  def add(builder):
    REGISTRY[name] = builder
    return builder
  return add


@dataclasses.dataclass(frozen=True)
class Models:
  dsr: Any  # the SR network (model.name)
  denet: Any  # DENet or None ("w/o CT")
  spnet: Any  # SPNet or None
  dtype: str = 'float32'  # the compute dtype they were built with ('auto' resolved)
  bp_impl: str = 'polyphase'  # DSRNet's back-projection form ('auto' resolved)
  teacher: Any = None  # model.teacher's frozen network, or None; never optimised, so not in nets()

  def nets(self) -> dict:
    """{'dsr': module, 'denet': ..., 'spnet': ...} for the networks that exist, in NETS order: the ones that
    have an optimizer."""
    return {k: getattr(self, k) for k in NETS if getattr(self, k) is not None}


def input_keys(net) -> tuple:
  """The batch keys of a network's positional inputs, in order: ('lr_depth',) unless it says otherwise."""
  keys = getattr(net, 'input_keys', None)
  return tuple(keys()) if keys is not None else ('lr_depth',)


def reads_more_than_lr(net) -> bool:
  """Whether a network needs more than the LR depth (a teacher): it cannot run where only the LR is given."""
  return input_keys(net) != ('lr_depth',)


def auto_dtype(backend: str) -> str:
  """model.dtype='auto': bfloat16 compute on GPU and TPU (BENCHMARKS.md: on an H200 its train step is 1.78-1.81x
  float32's and its loss tracks float32's within 0.41 % over 500 steps), float32 on CPU (XLA:CPU computes
  bfloat16 at float32's speed or slower). Parameters and optimizer state are float32 either way."""
  return 'bfloat16' if backend.lower() in ACCELERATOR_BACKENDS else 'float32'


def auto_bp_impl(backend: str) -> str:
  """model.bp_impl='auto': 'polyphase' everywhere for now. It was made for XLA:CPU and is the faster form there
  (BENCHMARKS.md); on GPU and TPU the two forms have not been measured against each other, and until they
  are the default stays the one whose numbers the project has."""
  del backend
  return 'polyphase'


def _backend(backend):
  if backend is not None:
    return backend
  return jax.default_backend()


def resolve(model_cfg, backend: str | None = None):
  """`model_cfg`, or a copy of it with 'auto' dtype and bp_impl replaced by `backend`'s choices.

  backend: 'cpu', 'gpu', 'cuda', 'rocm', 'tpu', ...; default jax.default_backend(), asked only when a
  field is 'auto' (it starts the backend).
  """
  if AUTO not in (model_cfg.dtype, model_cfg.bp_impl):
    return model_cfg
  name = _backend(backend)
  out = model_cfg.copy_and_resolve_references()
  if out.dtype == AUTO:
    out.dtype = auto_dtype(name)
  if out.bp_impl == AUTO:
    out.bp_impl = auto_bp_impl(name)
  return out


def resolve_config(config, backend: str | None = None):
  """A whole config (or a copy) whose model section names the dtype and bp_impl this backend uses."""
  m = config.model
  if AUTO not in (m.dtype, m.bp_impl):
    return config
  resolved = resolve(m, backend)
  out = config.copy_and_resolve_references()
  out.model.dtype, out.model.bp_impl = resolved.dtype, resolved.bp_impl
  return out


def compute_dtype(model_cfg):
  if model_cfg.dtype not in DTYPES:
    raise ConfigError(f'model.dtype={model_cfg.dtype!r}: expected one of {", ".join((AUTO, *DTYPES))}')
  return DTYPES[model_cfg.dtype]


def sr_names() -> tuple:
  return tuple(n for n in REGISTRY if n not in PARTNERS)


@register('dsrnet')
def _dsrnet(m, dt):
  return DSRNet(scale=m.scale, channels=m.channels, feat=m.feat, stages=m.stages, residual=m.residual,
                side_residual=m.side_residual, impl=m.bp_impl, dtype=dt)


def _guided_kw(m, dt) -> dict:
  return dict(scale=m.scale, channels=m.channels, feat=m.feat, stages=m.stages, width=m.teacher_width,
              blocks=m.teacher_blocks, residual=m.residual, side_residual=m.side_residual, impl=m.bp_impl,
              dtype=dt)


@register('guided')
def _guided(m, dt):
  return GuidedDSR(**_guided_kw(m, dt), guides=('rgb',))


@register('ae')
def _ae(m, dt):
  return GuidedDSR(**_guided_kw(m, dt), guides=('hr_depth', 'rgb') if m.ae_rgb else ('hr_depth',))


@register('denet')
def _denet(m, dt):
  rgbd = m.teacher_input == 'rgbd'
  return DENet(channels=m.channels, feat=m.feat, stages=m.stages, blocks=m.de_blocks, dtype=dt,
               depth_input=rgbd, residual=rgbd and m.teacher_residual, scale=m.scale)


@register('spnet')
def _spnet(m, dt):
  return SPNet(channels=m.channels, dtype=dt)


def check_name(name: str) -> None:
  if name not in sr_names():
    hint = '; the bicubic baseline is --config.eval.baseline=bicubic' if name == 'bicubic' else ''
    raise ConfigError(f'model.name={name!r}: expected one of {", ".join(map(repr, sr_names()))}{hint}')


def check(model_cfg) -> None:
  """Every check `build` makes, 'auto' accepted, without building or starting a jax backend (config_lib's
  validation runs before main sets XLA's flags)."""
  if model_cfg.dtype != AUTO:
    compute_dtype(model_cfg)
  if model_cfg.bp_impl not in (AUTO, *BP_IMPLS):
    raise ConfigError(f'model.bp_impl={model_cfg.bp_impl!r}: expected one of {", ".join((AUTO, *BP_IMPLS))}')
  check_name(model_cfg.name)
  validate(scale=model_cfg.scale, channels=model_cfg.channels, feat=model_cfg.feat,
           stages=model_cfg.stages, de_blocks=model_cfg.de_blocks)
  if model_cfg.teacher_input not in TEACHER_INPUTS:
    raise ConfigError(f'model.teacher_input={model_cfg.teacher_input!r}: expected one of '
                      f'{", ".join(map(repr, TEACHER_INPUTS))}')
  if model_cfg.teacher not in ('', *TEACHERS):
    raise ConfigError(f'model.teacher={model_cfg.teacher!r}: expected \'\' (none) or one of '
                      f'{", ".join(map(repr, TEACHERS))}')


def build(model_cfg, backend: str | None = None) -> Models:
  """Builds the networks ('auto' fields resolved for `backend`, see `resolve`); ConfigError names a bad field."""
  check(model_cfg)
  model_cfg = resolve(model_cfg, backend)
  dt = compute_dtype(model_cfg)
  dsr = REGISTRY[model_cfg.name](model_cfg, dt)
  use_de = model_cfg.use_denet
  denet = REGISTRY['denet'](model_cfg, dt) if use_de else None
  spnet = REGISTRY['spnet'](model_cfg, dt) if use_de and model_cfg.use_spnet else None
  teacher = REGISTRY[model_cfg.teacher](model_cfg, dt) if model_cfg.teacher else None
  return Models(dsr, denet, spnet, dtype=model_cfg.dtype, bp_impl=model_cfg.bp_impl, teacher=teacher)
