"""model.dtype / model.bp_impl 'auto': each backend's choice, resolved once per run and recorded where it is read."""
import json

import pytest

from dsr_jax import models as models_lib
from dsr_jax import restore
from dsr_jax import train
from dsr_jax.configs import default
from dsr_jax.configs import test as test_config
from dsr_jax.errors import ConfigError


@pytest.mark.parametrize('backend,dtype', [('cpu', 'float32'), ('gpu', 'bfloat16'), ('cuda', 'bfloat16'),
                                           ('rocm', 'bfloat16'), ('tpu', 'bfloat16'), ('GPU', 'bfloat16'),
                                           ('METAL', 'float32')])
def test_auto_resolves_per_backend(backend, dtype):
  cfg = test_config.get_config()
  assert cfg.model.dtype == 'auto' and cfg.model.bp_impl == 'auto'  # the defaults
  got = models_lib.resolve_config(cfg, backend)
  # Polyphase on every backend until a GPU/TPU measurement says otherwise (BENCHMARKS.md).
  assert (got.model.dtype, got.model.bp_impl) == (dtype, 'polyphase')
  assert cfg.model.dtype == 'auto'  # a copy: the caller's config is unchanged
  models = models_lib.build(cfg.model, backend)
  assert (models.dtype, models.bp_impl) == (dtype, 'polyphase')
  assert models.dsr.dtype == models_lib.DTYPES[dtype] and models.dsr.impl == 'polyphase'


def test_explicit_values_win_over_auto():
  cfg = test_config.get_config()
  cfg.model.dtype, cfg.model.bp_impl = 'float32', 'reference'
  assert models_lib.resolve_config(cfg, 'tpu') is cfg
  cfg.model.dtype = 'auto'
  got = models_lib.resolve_config(cfg, 'tpu').model
  assert (got.dtype, got.bp_impl) == ('bfloat16', 'reference')


@pytest.mark.parametrize('field,value', [('dtype', 'float16'), ('bp_impl', 'fft'), ('dtype', 'Auto')])
def test_validation_names_the_choices(field, value):
  cfg = test_config.get_config()
  cfg.model[field] = value
  with pytest.raises(ConfigError, match=rf"model\.{field}=.*auto"):
    train.check_config(cfg)


def test_old_saved_configs_keep_what_they_trained_with():
  # A config saved before the fields existed rebuilds its network as trained (float32, polyphase), not 'auto';
  # one saved with a resolved value keeps it.
  saved = json.loads(default.get_config().to_json_best_effort())
  del saved['model']['dtype'], saved['model']['bp_impl']
  up = restore.upgrade_config(saved)
  assert (up.model.dtype, up.model.bp_impl) == ('float32', 'polyphase')
  saved['model'].update(dtype='bfloat16', bp_impl='reference')
  up = restore.upgrade_config(saved)
  assert (up.model.dtype, up.model.bp_impl) == ('bfloat16', 'reference')


def test_a_run_records_the_resolved_values(ckpt, tmp_path):
  """conftest's session run trained configs/test.py ('auto') on CPU: its checkpoint and an eval of it name
  float32 and polyphase."""
  from dsr_jax import restore
  root, step = restore.resolve_checkpoint(str(ckpt))
  saved = restore.read_config(root, step)
  assert (saved.model.dtype, saved.model.bp_impl) == ('float32', 'polyphase')
  from dsr_jax import evaluate
  cfg = test_config.get_config()
  cfg.mode, cfg.eval.checkpoint_dir, cfg.eval.dataset, cfg.eval.images = 'eval', str(ckpt), 'synthetic_rgbd', False
  result = evaluate.run(cfg, str(tmp_path))
  assert (result['dtype'], result['bp_impl']) == ('float32', 'polyphase')
  assert json.loads(open(result['files']['json']).read())['dtype'] == 'float32'
