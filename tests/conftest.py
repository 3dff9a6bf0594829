"""Test session setup: 8 fake CPU devices, set before anything imports jax."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=8").strip()
# TF (pulled in by clu / tfds) must never grab an accelerator in tests.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

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
