"""The one command for a bare accelerator machine (colab/run_accelerator.sh), end to end on CPU with configs/test.py.

"Without TensorFlow" is simulated, not installed: a fresh virtual environment without TF costs minutes on a
2-core machine, so every process of the command gets a sitecustomize.py on its PYTHONPATH that wraps the
import system's finders so that `tensorflow` (and its submodules) is not found, as on a machine without it:
`import tensorflow` raises ModuleNotFoundError and importlib.util.find_spec('tensorflow') is None. The
packages' metadata still lists TF, which the command's install step leaves out anyway.
"""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import SHARED_DATA

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT = 600

_NO_TENSORFLOW = """
import sys


def _hidden(name):
  return name == 'tensorflow' or name.startswith('tensorflow.')


class _WithoutTensorFlow:
  def __init__(self, inner):
    self._inner = inner

  def find_spec(self, name, path=None, target=None):
    if _hidden(name) or not hasattr(self._inner, 'find_spec'):
      return None
    return self._inner.find_spec(name, path, target)

  def __getattr__(self, attr):
    return getattr(self._inner, attr)


sys.meta_path[:] = [_WithoutTensorFlow(f) for f in sys.meta_path]
"""


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  hook = tmp_path_factory.mktemp('no_tensorflow')
  (hook / 'sitecustomize.py').write_text(_NO_TENSORFLOW)
  e = {k: v for k, v in os.environ.items() if not k.startswith(('JAX_', 'XLA_', 'TF_', 'DSR_'))}
  e.update({'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': '--xla_force_host_platform_device_count=1',
            'PYTHONPATH': os.pathsep.join(filter(None, [str(hook), os.environ.get('PYTHONPATH', '')])),
            'JAX_DISABLE_MOST_OPTIMIZATIONS': '1'})
  assert subprocess.run([sys.executable, '-c', 'import tensorflow'], env=e, capture_output=True).returncode == 1
  return e


def _command(tmp_path, *extra):
  return ['bash', str(REPO / 'colab' / 'run_accelerator.sh'), 'configs/test.py', str(tmp_path / 'work'),
          str(tmp_path / 'out'), *extra]


def test_without_an_accelerator_it_stops_unless_allowed(env, tmp_path):
  p = subprocess.run(_command(tmp_path, '--no-install'), cwd=REPO, env=env, capture_output=True, text=True,
                     timeout=TIMEOUT)
  assert p.returncode == 2, p.stdout[-3000:] + p.stderr[-3000:]
  assert 'error: jax sees no accelerator' in p.stdout and '--allow-cpu' in p.stdout
  assert not (tmp_path / 'work').exists()  # nothing trained
  assert 'no accelerator' in (tmp_path / 'out' / 'summary.md').read_text()


def test_the_command_end_to_end_without_tensorflow(env, tmp_path):
  data = SHARED_DATA if (SHARED_DATA / 'middlebury2005').is_dir() else None
  extra = ['5', '--allow-cpu', '--no-eval-images', '--set', 'train.grad_diagnostics=False']
  if data is not None:
    extra += ['--data_dir', str(data)]
  p = subprocess.run(_command(tmp_path, *extra), cwd=tmp_path, env=env, capture_output=True, text=True,
                     timeout=TIMEOUT)
  out, wd = tmp_path / 'out', tmp_path / 'work'
  assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
  assert 'Traceback' not in p.stdout + p.stderr
  console = (out / 'console.log').read_text()
  assert console == p.stdout  # everything printed is in the log
  assert 'install: every requirement is already installed' in console
  assert 'warning: jax sees no accelerator' in console
  # Training ran under the budget, without TensorFlow: one line says so, metrics.jsonl holds the scalars.
  assert '--config.train.time_budget=5' in console
  assert console.count('TensorBoard files need TensorFlow') == 1
  assert 'done: step 8' in console and f'metrics: {wd / "metrics.jsonl"}' in console
  records = [json.loads(l) for l in (wd / 'metrics.jsonl').read_text().splitlines()]
  assert {'train/total', 'train/lr_dsr'} <= set(records[-2]) and 'eval/mad' in records[-1]
  assert not list(wd.glob('events.out.tfevents.*'))
  # The export, and the eval of the best checkpoint when the data is there.
  assert (out / 'dsrnet' / '8' / 'params').is_dir()
  summary = (out / 'summary.md').read_text()
  assert 'done: step 8' in summary and 'exported DSRNet' in summary
  assert 'dtype float32, bp_impl polyphase' in summary
  if data is None:
    assert 'eval: skipped' in console and 'skipped' in summary
  else:
    result = json.loads((out / 'eval' / 'middlebury2005_x2.json').read_text())
    assert result['step'] == 8 and result['dtype'] == 'float32' and result['images'] == 6
    assert f'MAD {result["mean"]["mad"]:.4f}' in summary
