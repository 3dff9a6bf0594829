"""The Colab quickstart runs headless, top to bottom, with its tiny default parameters."""
import os
import pathlib

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NB = ROOT / 'colab' / 'dsr_jax_quickstart.ipynb'


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path):
  nbclient = pytest.importorskip('nbclient')
  nb = nbformat.read(NB, as_version=4)
  params = [c for c in nb.cells if 'parameters' in c.get('metadata', {}).get('tags', [])]
  assert len(params) == 1, 'the notebook needs exactly one parameters cell'
  assert "CONFIG = 'configs/test.py'" in params[0].source and 'INSTALL = False' in params[0].source
  params[0].source += f"\nWORKDIR = {str(tmp_path / 'work')!r}"
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1', JAX_PLATFORMS='cpu')
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name='python3',
                                   resources={'metadata': {'path': str(ROOT)}})
  old = dict(os.environ)
  os.environ.update(env)  # the kernel inherits this process's environment
  try:
    client.execute()
  finally:
    os.environ.clear()
    os.environ.update(old)
  outputs = '\n'.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []))
  assert 'mad_ours' in outputs
  assert (tmp_path / 'work' / 'eval').is_dir()
  figures = [o for c in nb.cells for o in c.get('outputs', []) if 'image/png' in o.get('data', {})]
  assert figures, 'the last cell should draw the comparison figure'
