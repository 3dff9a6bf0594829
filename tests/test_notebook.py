"""The Colab quickstart, run as a new user would: from a wheel, in a fresh venv, outside the checkout.

The test builds a wheel from the working tree, makes a venv that sees this machine's packages (so nothing is
downloaded) but not the checkout, and executes the notebook there with SOURCE pointing at the wheel. The
notebook's own first cell installs it; code that only works inside a checkout fails here.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import nbformat
import numpy as np
from PIL import Image
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NB = ROOT / 'colab' / 'dsr_jax_quickstart.ipynb'


def _cells():
  nb = nbformat.read(NB, as_version=4)
  params = [c for c in nb.cells if 'parameters' in c.get('metadata', {}).get('tags', [])]
  assert len(params) == 1, 'the notebook needs exactly one parameters cell'
  return nb, params[0]


def _build_wheel(tmp_path) -> pathlib.Path:
  """A wheel of the working tree (tracked and untracked-not-ignored files), built without the network."""
  files = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard'], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split('\n')
  src = tmp_path / 'src'
  for f in filter(None, files):
    if f.startswith(('results/', 'tests/')) or not (ROOT / f).is_file():
      continue
    (src / f).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / f, src / f)
  dist = tmp_path / 'dist'
  subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation', '--no-index',
                  str(src), '-w', str(dist)], check=True, capture_output=True)
  (wheel,) = dist.glob('dsr_jax-*.whl')
  return wheel


@pytest.mark.slow
def test_quickstart_runs_from_a_wheel_in_a_fresh_venv(tmp_path):
  nbclient = pytest.importorskip('nbclient')
  nb, params = _cells()
  assert "SOURCE = ''" in params.source and "CONFIG = 'test'" in params.source
  wheel = _build_wheel(tmp_path)
  venv = tmp_path / 'venv'
  subprocess.run([sys.executable, '-m', 'venv', '--system-site-packages', '--without-pip', str(venv)], check=True)
  python = venv / 'bin' / 'python'
  kernels = tmp_path / 'jupyter' / 'kernels' / 'venv'
  kernels.mkdir(parents=True)
  (kernels / 'kernel.json').write_text(json.dumps({
      'argv': [str(python), '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
      'display_name': 'venv', 'language': 'python'}))
  outside = tmp_path / 'user'
  outside.mkdir()
  params.source += (f'\nSOURCE = {str(wheel)!r}\nWORKDIR = {str(tmp_path / "work")!r}'
                    f'\nOUT_DIR = {str(tmp_path / "sr")!r}'
                    # Compiles dominate 12 steps: skip the per-term gradient pullbacks and mid-run images.
                    "\nOVERRIDES.update({'train.grad_diagnostics': False, 'train.image_every': 100})")
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  env.update(XLA_FLAGS='--xla_force_host_platform_device_count=1', JAX_PLATFORMS='cpu',
             JAX_DISABLE_MOST_OPTIMIZATIONS='1',
             JUPYTER_PATH=str(tmp_path / 'jupyter'), PIP_DISABLE_PIP_VERSION_CHECK='1', PIP_NO_INDEX='1')
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name='venv', resources={'metadata': {'path': str(outside)}})
  old = dict(os.environ)
  os.environ.clear()
  os.environ.update(env)  # the kernel inherits this process's environment
  try:
    client.execute()
  finally:
    os.environ.clear()
    os.environ.update(old)
  outputs = '\n'.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []))
  site = subprocess.run([str(python), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                        capture_output=True, text=True, check=True).stdout.strip()
  assert f'from {site}/dsr_jax' in outputs, outputs  # the wheel's code ran, not the checkout's
  assert 'every requirement is already installed' in outputs
  assert 'step 4/12' in outputs and 'ETA' in outputs  # progress while training
  assert 'mad_ours' in outputs
  assert (tmp_path / 'work' / 'eval').is_dir()
  assert (tmp_path / 'sr' / 'demo_depth_x4.png').is_file() and (tmp_path / 'sr' / 'demo_depth_x4_color.png').is_file()
  assert (tmp_path / 'sr.zip').is_file()
  figures = [o for c in nb.cells for o in c.get('outputs', []) if 'image/png' in o.get('data', {})]
  assert len(figures) == 2, 'the held-out comparison and the full-size result are drawn'
  # The console script the wheel installed, with the shipped weights by name, outside any checkout.
  yy, xx = np.mgrid[:40, :56]
  Image.fromarray((100 + 60 * (xx > 20 + yy // 3)).astype(np.uint8)).save(outside / 'x.png')  # 0-255 disparity
  r = subprocess.run([str(venv / 'bin' / 'dsr-jax'), 'predict', '--checkpoint', 'dsrnet_x4', '--input', 'x.png',
                      '--output', 'o/'], cwd=outside, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr
  assert (outside / 'o' / 'x_x4.png').is_file() and 'x4' in r.stdout


def _install_cell():
  nb, _ = _cells()
  return next(c.source for c in nb.cells if c.cell_type == 'code' and 'import dsr_jax' in c.source)


def test_install_cell_stops_with_one_sentence_without_the_code(monkeypatch):
  monkeypatch.setitem(sys.modules, 'dsr_jax', None)  # as on a fresh runtime: `import dsr_jax` fails
  with pytest.raises(SystemExit, match=r'^dsr_jax is not installed: set SOURCE .*git URL.*\.whl.*checkout'):
    exec(_install_cell(), {'SOURCE': ''})  # pylint: disable=exec-used
  with pytest.raises(SystemExit, match=r'^SOURCE /no/such\.whl: no such file'):
    exec(_install_cell(), {'SOURCE': '/no/such.whl'})  # pylint: disable=exec-used


def _fake_metadata(monkeypatch, requires: dict, versions: dict):
  from importlib import metadata  # pylint: disable=g-import-not-at-top

  def version(name):
    if name not in versions:
      raise metadata.PackageNotFoundError(name)
    return versions[name]
  monkeypatch.setattr(metadata, 'requires', lambda name: requires.get(name, []))
  monkeypatch.setattr(metadata, 'version', version)


def test_only_missing_requirements_are_installed_and_the_runtime_keeps_jax_and_tf(monkeypatch):
  from dsr_jax import notebook  # pylint: disable=g-import-not-at-top
  reqs = {'dsr_jax': ['jax>=0.10.2', 'jaxlib>=0.10', 'flax>=0.12.8', 'optax>=0.2.8', 'grain>=0.2.18',
                      'tensorflow-cpu>=2.18', 'pytest; extra == "dev"']}
  _fake_metadata(monkeypatch, reqs, {'jax': '0.4.1', 'flax': '0.12.9', 'optax': '0.2.1', 'tensorflow': '2.19.0'})
  assert notebook.missing_requirements() == ['optax>=0.2.8', 'grain>=0.2.18']
  _fake_metadata(monkeypatch, reqs, {'jax': '0.4.1', 'flax': '0.12.9', 'optax': '0.2.8', 'grain': '0.2.18'})
  assert notebook.missing_requirements() == ['tensorflow-cpu>=2.18']  # no TensorFlow at all: the CPU build


def test_runtime_check_names_a_flax_that_does_not_accept_this_jax(monkeypatch):
  import jax  # pylint: disable=g-import-not-at-top
  from dsr_jax import notebook  # pylint: disable=g-import-not-at-top
  _fake_metadata(monkeypatch, {'flax': ['jax>=99.0', 'numpy'], 'optax': [f'jax>={jax.__version__}']},
                 {'flax': '9.9.9', 'optax': '0.2.8', 'jaxlib': jax.__version__})
  monkeypatch.setattr(notebook, '_has_gpu', lambda: False)
  monkeypatch.setattr(notebook, '_has_tpu', lambda: False)
  (problem,) = notebook.runtime_problems()
  assert problem.startswith(f'flax 9.9.9 needs jax>=99.0 but the runtime has jax {jax.__version__}: pin')
  with pytest.raises(SystemExit, match='^flax 9.9.9 needs'):
    notebook.check_runtime()
  monkeypatch.setattr(notebook, '_has_gpu', lambda: True)  # a GPU that this (CPU) jax cannot see
  assert any('has a GPU but jax' in p for p in notebook.runtime_problems())
