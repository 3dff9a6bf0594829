"""The per-compilation XLA:CPU convolution choice (dsr_jax/xla_options.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsr_jax import xla_options
from dsr_jax.errors import ConfigError
from dsr_jax.models import layers


def test_bad_choice_names_the_field():
  with pytest.raises(ConfigError, match="cpu_convolutions='mkl'"):
    xla_options.compiler_options('mkl')


def test_options_on_cpu():
  assert jax.default_backend() == 'cpu'
  opts = xla_options.compiler_options('eigen')
  assert opts == {'xla_cpu_experimental_ynn_fusion_type': xla_options._VALUES['eigen']}
  assert xla_options.compiler_options('ynnpack') == {}


def test_unknown_option_value_is_dropped_with_a_warning(absl_caplog):
  assert xla_options._accepted('xla_cpu_experimental_ynn_fusion_type', 'NOT_A_FUSION_TYPE') == {}
  assert 'does not accept' in absl_caplog.text


def test_eigen_and_ynnpack_give_the_same_conv_and_gradients():
  k = jax.random.split(jax.random.key(0), 2)
  x = jax.random.normal(k[0], (2, 16, 16, 8))
  w = jax.random.normal(k[1], (3, 3, 8, 16)) / 8

  def f(x, w):
    return jnp.sum(jnp.tanh(layers.conv(x, w)) ** 2)
  results = {}
  for choice in xla_options.CPU_CONVOLUTIONS:
    fn = jax.jit(jax.value_and_grad(f, argnums=(0, 1)), compiler_options=xla_options.compiler_options(choice))
    results[choice] = jax.tree.map(np.asarray, fn(x, w))
  for a, b in zip(jax.tree.leaves(results['eigen']), jax.tree.leaves(results['ynnpack'])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
