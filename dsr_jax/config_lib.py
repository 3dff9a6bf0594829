"""Loading configs without absl flags (Colab, tests): `load_config('configs/test.py', **{'train.num_steps': 5})`.

Overrides use dotted names like the command line's `--config.train.num_steps=5`; an unknown name or a value
of the wrong type raises ConfigError naming it, as `--config.*` typos do.
"""
import importlib.util
import os

import ml_collections

from dsr_jax.errors import ConfigError


def load_config(path: str, arg=None, **overrides) -> ml_collections.ConfigDict:
  if not os.path.isfile(path):
    raise ConfigError(f'{path}: no such config file (expected e.g. configs/default.py)')
  spec = importlib.util.spec_from_file_location(f'_dsr_config_{abs(hash(path))}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise ConfigError(f'{path}: expected a get_config(arg=None) function')
  config = module.get_config(arg)
  for dotted, value in overrides.items():
    *parents, leaf = dotted.split('.')
    node = config
    try:
      for p in parents:
        node = node[p]
      if leaf not in node:
        raise KeyError(leaf)
    except (KeyError, TypeError, AttributeError) as e:
      raise ConfigError(f'config override {dotted}={value!r}: no such field') from e
    try:
      node[leaf] = value
    except (TypeError, ValueError) as e:  # ml_collections refuses a value of another type
      raise ConfigError(f'config override {dotted}={value!r}: {" ".join(str(e).split())}') from e
  return config
