"""Entry point: `python -m dsr_jax.main --config configs/<x>.py --workdir <dir> [--config.a.b=v ...]`.

Kept short on purpose (as the flax examples do) so the logic stays importable from tests and Colab.
A mistake in the user's config, data or files prints one line and exits with status 2.
"""
import os
import re
import sys

# TF is only a dependency of clu's writer and tfds: keep it off any accelerator and quiet.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')  # silences TF's start-up notice; TF runs no math here

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from absl.logging import converter  # noqa: E402
import jax  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from dsr_jax import config_lib  # noqa: E402
from dsr_jax import eval_config  # noqa: E402
from dsr_jax import lifecycle  # noqa: E402
from dsr_jax import paths  # noqa: E402
from dsr_jax import xla_options  # noqa: E402
from dsr_jax.errors import CheckpointWriteError  # noqa: E402
from dsr_jax.errors import UserError  # noqa: E402
from dsr_jax.errors import check_backend  # noqa: E402
from dsr_jax.errors import one_line  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints and TensorBoard logs.')
config_flags.DEFINE_config_file('config', None, 'Training configuration file.', lock_config=True)


def run(config, workdir: str) -> int:
  try:
    # Before any work: a NaN learning rate or an unwritable workdir would otherwise show only at the end.
    if config.mode == 'train':
      # One mode's modules only: train's pull in Orbax and grain, seconds of imports.
      from dsr_jax import train  # pylint: disable=g-import-not-at-top
      train.check_config(config)
    else:
      eval_config.check(config)  # a mode other than 'train' or 'eval' is refused there (config_lib)
    paths.check_dir_target(workdir, '--workdir', writable=True)
    xla_options.set_cpu_convolutions(config.cpu_convolutions)
    if config.train.distributed:
      jax.distributed.initialize()
    check_backend()
    if config.mode == 'train':
      summary = train.train_and_evaluate(config, workdir, started=lifecycle.process_start())
      if summary.get('stopped_on_budget'):
        if jax.process_index() == 0:
          print(train.budget_line(summary), flush=True)
        return 0
      if summary.get('preempted'):
        if jax.process_index() == 0:
          print(f"preempted at step {summary['step']} ({summary['signal']}); checkpoint saved in "
                f"{summary['checkpoints']}; re-run the same command to resume", flush=True)
        return 0
      if jax.process_index() == 0:
        print(f"done: step {summary['step']}; validation MAD {summary['val_mad']:.4f} vs bicubic "
              f"{summary['bicubic_mad']:.4f} ({summary['val_images']} images, "
              f"{config.data.val_name or config.data.name})")
        if summary.get('metrics_file'):  # no TensorFlow: no TensorBoard files (dsr_jax/writers.py)
          print(f'metrics: {summary["metrics_file"]}')
        else:
          print(f'TensorBoard logs: {summary["workdir"]}  (tensorboard --logdir {summary["workdir"]})')
        print(f'checkpoints: {summary["checkpoints"]}  (best by validation MAD: {summary["best_checkpoint"]})')
      return 0
    from dsr_jax import evaluate  # pylint: disable=g-import-not-at-top  (as train above)
    from dsr_jax import reports  # pylint: disable=g-import-not-at-top  (as train above)
    result = evaluate.run(config, workdir)
    if jax.process_index() == 0:
      print(reports.summary(result))
    return 0
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    if isinstance(e, CheckpointWriteError):
      # orbax's writer threads that met the failure wait minutes for signals that never come; the run's
      # state is on disk (or knowingly not), so do not wait for them at exit.
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(2)  # pylint: disable=protected-access
    return 2
  except OSError as e:
    # The file system refused one of the user's paths (permissions, a read-only or full disk).
    where = f'{e.filename}: ' if e.filename else ''
    print(f'error: {where}{e.strerror or one_line(e)}', file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    # Ctrl-C before the training loop took over SIGINT (start-up, compiling, evaluating): one line, and no
    # interpreter shutdown, where XLA's and Orbax's threads still running would crash it.
    print('interrupted (SIGINT): stopped at once; checkpoints saved before are intact (re-run the same '
          'command to resume a training run)', file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)  # pylint: disable=protected-access


def main(argv):
  if len(argv) > 1:
    print(f'error: unexpected arguments {argv[1:]}', file=sys.stderr)
    return 2
  if FLAGS.config is None or not FLAGS.workdir:
    print('error: --config and --workdir are required', file=sys.stderr)
    return 2
  if not FLAGS['verbosity'].present:
    quiet_logs()
  logging.info('workdir %s', FLAGS.workdir)
  return run(FLAGS.config, FLAGS.workdir)


def _quiet_filter(record) -> bool:
  if record.levelno >= converter.STANDARD_CRITICAL:
    return True
  parts = record.pathname.replace('\\', '/').split('/')
  # checkpointing's warnings about an unreadable step are the log's copy of the one `warning:` line it
  # prints for the console (the line the README documents); shown again here they would be two more.
  ours = parts[-2:] == ['dsr_jax', 'checkpointing.py'] and record.levelno < converter.STANDARD_ERROR
  return 'orbax' not in parts and not ours


def quiet_logs() -> None:
  """The default console: our own lines only (progress, validation, warnings, the one error line).

  Library INFO is hidden, and orbax's records below CRITICAL too: it reports what goes wrong through
  exceptions, which become one line here; its logs of the same failure would bury it. So are the warnings of
  dsr_jax/checkpointing.py, which prints its own `warning:` line. `--verbosity=0` (absl's flag) shows
  everything again.
  """
  logging.set_verbosity(logging.WARNING)
  handler = logging.get_absl_handler()
  if _quiet_filter not in handler.filters:
    handler.addFilter(_quiet_filter)


def _flag_error_text(e: BaseException) -> str:
  text = str(e)
  if 'Traceback (most recent call last)' in text:
    # config_flags wraps an exception raised inside get_config() with its whole traceback: keep its last line.
    raised = [ln.strip() for ln in text.splitlines() if re.match(r'\s*[\w.]+(Error|Exception)\b', ln)]
    if raised:
      text = f'{text.splitlines()[0].split(":")[0]}: {raised[-1]}'
  text = text.replace('\\n', ' ').replace("\\'", "'")
  text = ' '.join(text.split())
  if len(text) > 1 and text[0] == text[-1] and text[0] in '"\'':
    text = text[1:-1]  # The repr quotes of a KeyError, not quotes inside the message.
  return text


def _resolve_config_names(argv):
  out, i = list(argv), 1
  while i < len(out):
    if out[i] == '--config' and i + 1 < len(out):
      out[i + 1] = config_lib.config_by_name(out[i + 1])
      i += 1
    elif out[i].startswith('--config='):
      out[i] = '--config=' + config_lib.config_by_name(out[i][len('--config='):])
    i += 1
  return out


def parse_flags(argv):
  """absl's parser, but a bad flag, config file or config override is one line and exit status 2.

  `--config NAME[:ARG]` (no path) names one of the installed configs, so the CLI works outside a checkout.
  """
  try:
    rest = FLAGS(_resolve_config_names(argv))
    _ = list(FLAGS.config.keys())  # config_flags loads the file (and applies overrides) lazily: fail here, not later
    return rest
  except Exception as e:  # pylint: disable=broad-except
    overrides = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.')]
    where = f' (overrides: {", ".join(overrides)})' if overrides else ''
    print(f'error: {type(e).__name__}: {_flag_error_text(e)}{where}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
