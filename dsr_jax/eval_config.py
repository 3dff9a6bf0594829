"""The eval mode's config checks: which dataset, baseline, scale and LR an evaluation may ask for.

`check(config)` runs before an evaluation reads a checkpoint or data (main and evaluate.run call it). Every
field's type and range is config_lib's; data.degrade and the other fields of the LR are the pipeline's, checked
where the test set is built; the training mode's are `train.check_config`'s.
"""
from dsr_jax import config_lib
from dsr_jax import models as models_lib
from dsr_jax import protocol
from dsr_jax.errors import ConfigError
from dsr_jax.input_pipeline import degradation
from dsr_jax.input_pipeline import readers


def check(config) -> None:
  """Every check of an eval config that needs no checkpoint and no data; ConfigError names the field."""
  config_lib.check_fields(config)
  dataset = str(config.eval.dataset or config.data.name)
  if dataset not in readers.PROTOCOLS:
    field = 'eval.dataset' if config.eval.dataset else 'data.name'
    raise ConfigError(f'{field}={dataset!r}: eval needs one dataset of {", ".join(sorted(readers.PROTOCOLS))}')
  baseline = config.eval.baseline
  if baseline not in protocol.BASELINES:
    raise ConfigError(f'eval.baseline={baseline!r}: expected one of '
                      f'{", ".join(map(repr, protocol.BASELINES))}')
  models_lib.check_name(config.model.name)  # eval builds the checkpoint's network; a typo here still says so
  want = config.model.scale
  if isinstance(want, bool) or not isinstance(want, int) or (want and want not in protocol.PAPER_SCALES):
    raise ConfigError(f'model.scale={want!r}: expected 0 (the checkpoint\'s) or one of 2, 4, 8, 16')
  if baseline == 'bicubic' and not want:
    raise ConfigError('model.scale=0: the bicubic baseline has no checkpoint to take the scale from; '
                      'set --config.model.scale to 2, 4, 8 or 16')
  if baseline != 'bicubic' and not config.eval.checkpoint_dir:
    raise ConfigError('eval.checkpoint_dir is empty: expected a training workdir, its checkpoints/ '
                      'directory or one step directory (or --config.eval.baseline=bicubic)')
  if config.eval.degradation not in degradation.EVAL_CHOICES:
    raise ConfigError(f'eval.degradation={config.eval.degradation!r}: expected one of '
                      f'{", ".join(degradation.EVAL_CHOICES)}')
