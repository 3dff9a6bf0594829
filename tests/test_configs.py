"""Every shipped config loads and validates; overrides and typos behave as on the command line."""
import pathlib
import subprocess
import sys

import pytest

from dsr_jax import models
from dsr_jax import train
from dsr_jax.config_lib import load_config
from dsr_jax.errors import ConfigError

def _variants():
  """(file, arg) of every shipped config: each variant of a config that takes one (its ARGS) counts."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  out = []
  for p in sorted((pathlib.Path(__file__).resolve().parents[1] / 'configs').glob('*.py')):
    if p.name in ('__init__.py', 'common.py'):
      continue
    spec = importlib.util.spec_from_file_location(f'_variants_{p.stem}', p)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out += [(p, a) for a in getattr(module, 'ARGS', (None,))]
  return out


CONFIGS = _variants()
REQUIRED = ('train.num_steps', 'train.stage1_steps', 'train.round_steps', 'train.batch_size', 'ckpt.every_steps',
            'data.name', 'data.dir', 'data.crop', 'model.scale', 'seed')


@pytest.mark.parametrize('path,arg', CONFIGS, ids=lambda v: getattr(v, 'stem', v))
def test_config_loads_and_validates(path, arg):
  c = load_config(str(path), arg)
  for dotted in REQUIRED:
    node = c
    for part in dotted.split('.'):
      node = node[part]
  if c.mode == 'train':
    train.check_config(c)  # the batch over the device count is the machine's, not the file's (cpu_real:x8 has 4)
    assert c.data.crop % c.model.scale == 0
    assert c.train.stage1_steps <= c.train.num_steps
    models.build(c.model)
  else:
    assert c.mode == 'eval' and c.eval.dataset


def test_paper_preset_is_t7_and_default_t4():
  assert load_config('configs/paper.py').model.stages == 7
  assert load_config('configs/default.py').model.stages == 4


def test_override_and_typo():
  assert load_config('configs/test.py', **{'train.num_steps': 3}).train.num_steps == 3
  with pytest.raises(ConfigError, match='train.num_step=3: no such field'):
    load_config('configs/test.py', **{'train.num_step': 3})


@pytest.mark.parametrize('flag,needle', [('--config.train.num_step=3', "'num_step' Did you mean"),
                                         ('--config.train.num_steps=x', "int() with base 10: 'x' (overrides"),
                                         ('--config.model.scale=3', 'model.scale')])
def test_cli_bad_config_is_one_line_exit_2(tmp_path, flag, needle):
  r = subprocess.run([sys.executable, '-m', 'dsr_jax.main', '--config', 'configs/test.py', '--workdir',
                      str(tmp_path / 'w'), flag], capture_output=True, text=True, timeout=300,
                     cwd=pathlib.Path(__file__).resolve().parents[1])
  assert r.returncode == 2
  errors = [l for l in r.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and needle in errors[0], r.stderr[-2000:]
  assert 'Traceback' not in r.stderr


def test_cpu_real_variants_share_data_and_steps():
  runs = {a: load_config('configs/cpu_real.py', a) for a in ('x4', 'x4,wo_ct', 'x4,fixed', 'x8', 'x8,wo_ct')}
  assert not runs['x4,wo_ct'].model.use_denet and not runs['x4,wo_ct'].model.use_spnet
  assert runs['x4'].model.use_denet and runs['x4'].train.roles == 'rule'
  assert runs['x4,fixed'].train.roles == 'fixed_denet'
  assert runs['x8'].model.scale == 8 and runs['x8'].data.crop % 8 == 0
  for a, c in runs.items():
    same = runs[f'x{c.model.scale}']
    for field in ('data.name', 'data.crop', 'train.batch_size', 'train.num_steps', 'seed'):
      part, leaf = field.split('.') if '.' in field else (None, field)
      get = (lambda cfg: cfg[part][leaf]) if part else (lambda cfg: cfg[leaf])
      assert get(c) == get(same), (a, field)
  with pytest.raises(ValueError, match="unknown argument 'x5'"):
    load_config('configs/cpu_real.py', 'x5')


def test_cli_bad_config_argument_is_one_line_exit_2(tmp_path):
  r = subprocess.run([sys.executable, '-m', 'dsr_jax.main', '--config', 'configs/cpu_real.py:x4,fast',
                      '--workdir', str(tmp_path / 'w')], capture_output=True, text=True, timeout=300,
                     cwd=pathlib.Path(__file__).resolve().parents[1])
  assert r.returncode == 2
  errors = [l for l in r.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and "unknown argument 'fast'" in errors[0], r.stderr[-2000:]
  assert 'Traceback' not in r.stderr and not (tmp_path / 'w').exists()


def test_cross_task_needs_a_warm_up_stage():
  c = load_config('configs/test.py')
  c.train.stage1_steps = 0  # No warm-up errors: the first round's teacher would be an untrained net.
  with pytest.raises(ConfigError, match='train.stage1_steps=0'):
    train.validate(c)
  c.train.roles = 'fixed_denet'
  train.validate(c)
  c.train.roles, c.model.use_denet = 'rule', False  # w/o CT has no roles to pick.
  train.validate(c)


def test_a_saved_config_of_an_earlier_version_is_upgraded_once_on_load():
  from dsr_jax import restore  # pylint: disable=g-import-not-at-top
  from dsr_jax.configs import default  # pylint: disable=g-import-not-at-top
  old = default.get_config().to_dict()
  for k in ('side_residual', 'teacher_input', 'teacher_residual', 'bp_impl'):
    del old['model'][k]  # as saved before these fields existed
  del old['eval']['images']
  old['model']['scale'] = 8
  old['train']['retired_field'] = 3  # a field this version no longer has is kept, and ignored
  up = restore.upgrade_config(old)
  # The network such a checkpoint was trained as: side heads without the bicubic residual (pre-Revision 2).
  assert up.model.side_residual is False and up.model.teacher_input == 'rgb' and up.model.bp_impl == 'polyphase'
  assert default.get_config().model.side_residual is True  # not today's default
  assert up.model.scale == 8 and up.eval.images is True and up.train.retired_field == 3
  models.build(up.model)
