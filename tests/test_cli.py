"""The `dsr-jax` console script: commands, config names, the mode a command fixes."""
import os
import pathlib
import subprocess
import sys

from dsr_jax import config_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_config_names_resolve_to_installed_files_and_paths_stay():
  assert config_lib.config_by_name('default') == str(REPO / 'configs' / 'default.py')
  assert config_lib.config_by_name('cpu_real:x4,ct') == str(REPO / 'configs' / 'cpu_real.py') + ':x4,ct'
  assert config_lib.config_by_name('configs/test.py') == 'configs/test.py'
  assert config_lib.config_by_name('no_such_config') == 'no_such_config'  # the flag then names it


def test_load_config_takes_names_and_arguments():
  by_path = config_lib.load_config(str(REPO / 'configs' / 'cpu_real.py'), 'x8,ct')
  assert config_lib.load_config('cpu_real:x8,ct').to_dict() == by_path.to_dict()
  assert config_lib.load_config('test', **{'train.num_steps': 3}).train.num_steps == 3
  assert by_path.model.scale == 8


def _cli(*args, cwd):
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH', '')])))
  env.pop('XLA_FLAGS', None)
  return subprocess.run([sys.executable, '-m', 'dsr_jax.cli', *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=180)


def test_unknown_command_is_one_line(tmp_path):
  r = _cli('fit', cwd=tmp_path)
  assert r.returncode == 2 and r.stderr.count('\n') == 1 and "'fit'" in r.stderr and 'train' in r.stderr


def test_eval_command_fixes_the_mode_and_names_work_outside_a_checkout(tmp_path):
  # configs/test.py is a training config; `eval` runs it in eval mode, which asks for a checkpoint.
  r = _cli('eval', '--config', 'test', '--workdir', str(tmp_path / 'w'), cwd=tmp_path)
  assert r.returncode == 2, r.stderr[-2000:]
  assert r.stderr.strip().splitlines() == [r.stderr.strip()] and 'eval.checkpoint_dir' in r.stderr, r.stderr
  assert not (tmp_path / 'w').exists()
  r = _cli('predict', '--checkpoint', str(tmp_path), '--input', str(tmp_path / 'none.png'), '--output',
           str(tmp_path / 'o'), cwd=tmp_path)
  assert r.returncode == 2 and r.stderr.startswith('error: --input') and r.stderr.count('\n') == 1, r.stderr
