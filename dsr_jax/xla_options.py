"""Per-compilation XLA options for the project's jitted functions (train step, inference).

On CPU, XLA 0.10 runs convolutions through YNNPACK by default, and its weight-gradient convolutions are
slow: Eigen's run our train step and inference faster (BENCHMARKS.md). The choice is passed per compilation
(`jax.jit(..., compiler_options=...)`), not through XLA_FLAGS, so it touches only our programs and
never the user's; where XLA does not know the option (another jax version), it is dropped with a warning.
"""
import functools

from absl import logging
import jax
import jax.numpy as jnp

from dsr_jax.errors import ConfigError

CPU_CONVOLUTIONS = ('eigen', 'ynnpack')
_OPTION = 'xla_cpu_experimental_ynn_fusion_type'
# XLA's default YNNPACK fusion list in jax 0.10 is {individual dot, individual convolution, reduce}; 'eigen'
# is that list without the convolutions (checked: the compiled HLO equals the one given by
# XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution).
_VALUES = {'eigen': 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'}

_choice = 'eigen'


def check(choice, field: str = 'cpu_convolutions') -> str:
  if choice not in CPU_CONVOLUTIONS:
    raise ConfigError(f'{field}={choice!r}: expected one of {", ".join(CPU_CONVOLUTIONS)}')
  return choice


def set_cpu_convolutions(choice: str) -> None:
  """Sets the library for programs compiled from now on (the config field `cpu_convolutions`)."""
  global _choice
  _choice = check(choice)


def compiler_options(choice: str | None = None) -> dict[str, str]:
  """Options for `jax.jit(..., compiler_options=...)`; empty off CPU or where XLA rejects them."""
  choice = check(_choice if choice is None else choice)
  if jax.default_backend() != 'cpu' or choice not in _VALUES:
    return {}
  return _accepted(_OPTION, _VALUES[choice])


@functools.cache
def _accepted(option: str, value: str) -> dict[str, str]:
  opts = {option: value}
  try:
    jax.jit(lambda x: x + 1, compiler_options=opts).lower(jnp.zeros((1,), jnp.float32)).compile()
  except Exception as e:  # pylint: disable=broad-except
    logging.warning('XLA does not accept %s=%s (%s); using its defaults', option, value,
                    ' '.join(str(e).split())[:120])
    return {}
  return opts
