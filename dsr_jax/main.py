"""Entry point: `python -m dsr_jax.main --config configs/<x>.py --workdir <dir> [--config.a.b=v ...]`.

Kept short on purpose (as the flax examples do) so the logic stays importable from tests and Colab.
A mistake in the user's config, data or files prints one line and exits with status 2.
"""
import os
import sys

# TF is only a dependency of clu's writer and tfds: keep it off any accelerator and quiet.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints and TensorBoard logs.')
config_flags.DEFINE_config_file('config', None, 'Training configuration file.', lock_config=True)


def _hide_tf_accelerators():
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.set_visible_devices([], 'GPU')
  except Exception:  # pylint: disable=broad-except
    pass


def run(config, workdir: str) -> int:
  import jax  # pylint: disable=g-import-not-at-top
  from dsr_jax.errors import UserError  # pylint: disable=g-import-not-at-top
  try:
    if config.train.distributed:
      jax.distributed.initialize()
    if config.mode == 'train':
      from dsr_jax import train  # pylint: disable=g-import-not-at-top
      summary = train.train_and_evaluate(config, workdir)
      if jax.process_index() == 0:
        print(f"done: step {summary['step']}; validation MAD {summary['val_mad']:.4f} vs bicubic "
              f"{summary['bicubic_mad']:.4f} ({summary['val_images']} images, {config.data.name})")
        print(f'TensorBoard logs: {summary["workdir"]}  (tensorboard --logdir {summary["workdir"]})')
        print(f'checkpoints: {summary["checkpoints"]}')
      return 0
    raise UserError(f"mode={config.mode!r}: expected 'train'")
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2


def main(argv):
  if len(argv) > 1:
    print(f'error: unexpected arguments {argv[1:]}', file=sys.stderr)
    return 2
  if FLAGS.config is None or not FLAGS.workdir:
    print('error: --config and --workdir are required', file=sys.stderr)
    return 2
  _hide_tf_accelerators()
  logging.info('workdir %s', FLAGS.workdir)
  return run(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
