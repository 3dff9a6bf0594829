"""Test session setup: 8 fake CPU devices, set before anything imports jax."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=8").strip()
# TF (pulled in by clu / tfds) must never grab an accelerator in tests.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import contextlib  # noqa: E402
import pathlib  # noqa: E402

import pytest  # noqa: E402

# Real data is read from DSR_DATA_DIR, else from ../shared/data beside the checkout (tests only).
_REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("DSR_DATA_DIR", _REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data_dir():
  if not (SHARED_DATA / "README.md").exists():
    pytest.skip(f"real RGB-D data not found at {SHARED_DATA} (set DSR_DATA_DIR)")
  return SHARED_DATA


@contextlib.contextmanager
def fast_compile():
  """Flax's train_test habit: most XLA optimisations off, which cuts compile time 2-3x on CPU."""
  import jax  # pylint: disable=g-import-not-at-top
  old = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', True)
  try:
    yield
  finally:
    jax.config.update('jax_disable_most_optimizations', old)


@pytest.fixture(scope='session')
def ckpt(tmp_path_factory):
  """A configs/test.py run (x2, 8 steps) trained once per session on the 8 fake devices."""
  from dsr_jax.configs import test as test_config  # pylint: disable=g-import-not-at-top
  from dsr_jax import train  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.getbasetemp() / 'tiny_ckpt'
  with fast_compile():
    train.train_and_evaluate(test_config.get_config(), str(root))
  return root


@pytest.fixture
def absl_caplog(caplog):
  """caplog that also sees absl's logger: once any test in the worker has installed absl's handler (main, app
  runs), absl stops propagating to the root logger, where caplog listens. A CLI's main() run in-process
  (robustness, results_table) may also have left absl's verbosity at ERROR, which drops warnings before any
  handler sees them, so the absl logger's level is opened for the test and put back after it."""
  import logging  # pylint: disable=g-import-not-at-top
  absl_logger = logging.getLogger('absl')
  level = absl_logger.level
  absl_logger.setLevel(logging.DEBUG)
  absl_logger.addHandler(caplog.handler)
  try:
    yield caplog
  finally:
    absl_logger.removeHandler(caplog.handler)
    absl_logger.setLevel(level)


@pytest.fixture
def fast_xla():
  """Opt-in (pytestmark = pytest.mark.usefixtures('fast_xla')): compile with most optimisations off."""
  with fast_compile():
    yield


@pytest.fixture(scope='module')
def fast_xla_module():
  """fast_xla for a whole module, its module-scoped fixtures' compilations included (list it first)."""
  with fast_compile():
    yield


@contextlib.contextmanager
def count_calls(owner, attr: str, key):
  """Counts calls of owner.<attr> by key(*args, **kwargs) while active (a Counter).

  Wrapped around a function that jax.jit traces, the counts are traces: a cached executable runs no Python.
  The product code hosts no counter of its own.
  """
  import collections  # pylint: disable=g-import-not-at-top
  import functools  # pylint: disable=g-import-not-at-top
  counts = collections.Counter()
  original = getattr(owner, attr)

  @functools.wraps(original)
  def counted(*args, **kwargs):
    counts[key(*args, **kwargs)] += 1
    return original(*args, **kwargs)
  setattr(owner, attr, counted)
  try:
    yield counts
  finally:
    setattr(owner, attr, original)


# NaN injection for the NaN-guard tests, from the test side: the training loop hands every batch to
# sharding.to_global in step order (its prefetch thread), so the k-th call (from 0) is step k's batch.
def install_poison(step: int):
  """Makes the batch of training step `step` (counted from the run's first step) all NaN; returns the undo."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from dsr_jax import sharding  # pylint: disable=g-import-not-at-top
  real, calls = sharding.to_global, [0]

  def to_global(batch, mesh):
    if calls[0] == step:
      batch = dict(batch, hr_depth=np.full_like(batch['hr_depth'], np.nan))
    calls[0] += 1
    return real(batch, mesh)
  sharding.to_global = to_global
  return lambda: setattr(sharding, 'to_global', real)


# The same in a training subprocess: a sitecustomize.py on its PYTHONPATH, step from DSR_TEST_POISON_STEP.
POISON_SITECUSTOMIZE = f"""
import os, sys
sys.path.insert(0, {str(pathlib.Path(__file__).resolve().parent)!r})
from conftest import install_poison
install_poison(int(os.environ['DSR_TEST_POISON_STEP']))
"""


@contextlib.contextmanager
def poisoned_batch(step: int):
  undo = install_poison(step)
  try:
    yield
  finally:
    undo()


def subprocess_env(cache_dir) -> dict:
  """The environment of a test's `python -m dsr_jax.main` subprocess: one CPU device, quiet TensorFlow, this
  checkout first on the path, and a compilation cache shared by the module's runs (restarts recompile the
  same programs; the cache turns ~40 s of compiling into ~2 s). As the in-process tests' fast_xla: what the
  subprocess tests check (bit-identical resumes, stop points) holds at any XLA optimisation level."""
  repo = pathlib.Path(__file__).resolve().parents[1]
  e = {k: v for k, v in os.environ.items() if not k.startswith(('JAX_', 'XLA_', 'TF_', 'DSR_'))}
  e.update({
      'JAX_PLATFORMS': 'cpu',
      'XLA_FLAGS': '--xla_force_host_platform_device_count=1',
      'TF_CPP_MIN_LOG_LEVEL': '3',
      'PYTHONPATH': os.pathsep.join(filter(None, [str(repo), os.environ.get('PYTHONPATH', '')])),
      'JAX_COMPILATION_CACHE_DIR': str(cache_dir),
      'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
      'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '-1',
      'JAX_DISABLE_MOST_OPTIMIZATIONS': '1',
  })
  return e
