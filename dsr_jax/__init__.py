"""dsr_jax: single depth-map super-resolution with cross-task knowledge transfer, in JAX/Flax.

Importing the package only mounts the checkout's top-level configs/ and input_pipeline/ as dsr_jax.configs and
dsr_jax.input_pipeline: the repository keeps them at the top, where its readers look first, while a wheel
installs them inside the package so that no generic `configs` package lands in site-packages.
"""
import importlib.util as _ilu
import os as _os
import sys as _sys

__version__ = "0.1.0"


def _mount_checkout_dirs():
  """Registers configs/ and input_pipeline/ under this package, unless a wheel installed them inside it
  (pyproject's package-dir). Code imports one name in both layouts, so no module is ever loaded twice."""
  here = _os.path.dirname(_os.path.abspath(__file__))
  for name in ('configs', 'input_pipeline'):
    full = f'{__name__}.{name}'
    if full in _sys.modules or _os.path.isdir(_os.path.join(here, name)):
      continue  # installed from a wheel: a real subpackage
    src = _os.path.join(_os.path.dirname(here), name)
    if not _os.path.isfile(_os.path.join(src, '__init__.py')):
      continue
    spec = _ilu.spec_from_file_location(full, _os.path.join(src, '__init__.py'), submodule_search_locations=[src])
    module = _ilu.module_from_spec(spec)
    _sys.modules[full] = module
    spec.loader.exec_module(module)
    globals()[name] = module


_mount_checkout_dirs()
