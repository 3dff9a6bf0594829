"""Where training's metrics go: clu's writers (TensorBoard files) when they import, else a JSON-lines file.

clu.metric_writers imports TensorFlow when it is imported (its SummaryWriter, clu/metric_writers/tf/
summary_writer.py, does `import tensorflow as tf`), and clu.periodic_actions imports metric_writers, so on a
machine without TensorFlow neither imports. Training needs neither: without them the scalars go to
`<workdir>/metrics.jsonl`, one JSON object per write ({"step", "time", name: value, ...}), the progress and
validation lines show them on the console as always, and image summaries are skipped. With TensorFlow nothing
changes.
"""
import contextlib
import json
import os
import time

METRICS_FILE = 'metrics.jsonl'


class Sink:
  """What train uses of clu: a writer, ReportProgress and Profile, and whether TensorBoard files are written."""

  def __init__(self):
    try:
      from clu import metric_writers  # pylint: disable=g-import-not-at-top
      from clu import periodic_actions  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      self.tensorboard = False
      self.missing = e.name or 'clu'  # the module that failed: 'tensorflow' on a machine without it
      self._mw = self._pa = None
    else:
      self.tensorboard = True
      self.missing = ''
      self._mw, self._pa = metric_writers, periodic_actions
      _keep_tf_off_accelerators()

  def notice(self, workdir: str) -> str:
    """The one console line of a run without TensorBoard files ('' with them)."""
    if self.tensorboard:
      return ''
    name = {'tensorflow': 'TensorFlow'}.get(self.missing.split('.')[0], self.missing)
    return (f'{name} is not installed: metrics go to the console and {metrics_path(workdir)}; '
            'TensorBoard files need TensorFlow (pip install tensorflow-cpu clu)')

  def writer(self, workdir: str, just_logging: bool):
    if self.tensorboard:
      return self._mw.create_default_writer(workdir, just_logging=just_logging)
    return _NullWriter() if just_logging else JsonlWriter(metrics_path(workdir))

  def report(self, num_steps: int, writer):
    if self.tensorboard:
      return self._pa.ReportProgress(num_train_steps=num_steps, writer=writer)
    return _NoReport()

  def profile(self, logdir: str, num_steps: int = 5):
    if self.tensorboard:
      return self._pa.Profile(logdir=logdir, num_profile_steps=num_steps)
    return _Profile(logdir, num_steps)


def metrics_path(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), METRICS_FILE)


@contextlib.contextmanager
def ensure_flushes(writer):
  """Flushes (clu's writers write asynchronously) however the block ends, as clu's ensure_flushes does."""
  try:
    yield writer
  finally:
    writer.flush()


def _keep_tf_off_accelerators():
  # TF (clu's TensorBoard writer) would otherwise reserve GPU memory that JAX needs.
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.set_visible_devices([], 'GPU')
  except Exception:  # pylint: disable=broad-except
    pass


def _number(v):
  try:
    return float(v)
  except (TypeError, ValueError):
    return str(v)


class JsonlWriter:
  """clu's MetricWriter methods that train calls, appending to a JSON-lines file (a resume appends too)."""

  def __init__(self, path: str):
    self.path = path
    self._f = open(path, 'a', encoding='utf-8')  # pylint: disable=consider-using-with

  def _write(self, record: dict):
    self._f.write(json.dumps(record) + '\n')

  def write_scalars(self, step: int, scalars: dict):
    self._write({'step': int(step), 'time': time.time(), **{k: _number(v) for k, v in scalars.items()}})
    self._f.flush()  # a run cut short leaves every line written so far

  def write_hparams(self, hparams: dict):
    self._write({'hparams': {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                             for k, v in hparams.items()}})

  def write_images(self, step, images):
    del step, images  # images need TensorBoard

  def flush(self):
    if not self._f.closed:
      self._f.flush()

  def close(self):
    self._f.close()


class _NullWriter:
  """Processes other than the first write nothing (clu's just_logging writes only to their own logs)."""

  def write_scalars(self, step, scalars):
    del step, scalars

  def write_hparams(self, hparams):
    del hparams

  def write_images(self, step, images):
    del step, images

  def flush(self):
    pass

  def close(self):
    pass


class _NoReport:
  """ReportProgress's part that train calls; its steps/s scalars are in the progress lines already."""

  def __call__(self, step: int):
    del step

  def timed(self, name: str):
    del name
    return contextlib.nullcontext()


class _Profile:
  """clu's Profile without clu: a jax.profiler trace of `num_steps` steps, from the second step (after the
  first compilation), into `logdir`."""

  def __init__(self, logdir: str, num_steps: int):
    self._logdir, self._num, self._start = logdir, num_steps, None

  def __call__(self, step: int):
    import jax  # pylint: disable=g-import-not-at-top
    if self._start is None and self._num > 0:
      jax.profiler.start_trace(self._logdir)
      self._start = step
    elif self._start is not None and step >= self._start + self._num:
      jax.profiler.stop_trace()
      self._num = 0
      self._start = None
