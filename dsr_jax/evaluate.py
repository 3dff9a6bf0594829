"""The one evaluation loop (`Evaluator`: training-time validation and eval mode of dsr_jax.main both run it),
the dataset's test batches as its protocol prepares them, and eval mode (`run`).

Eval mode:
  python -m dsr_jax.main --config configs/eval.py:middlebury2005 --workdir W --config.eval.checkpoint_dir=C
  python -m dsr_jax.main --config configs/eval.py:middlebury2005 --workdir W \
      --config.eval.baseline=bicubic --config.model.scale=4    # the bicubic baseline, no checkpoint
It evaluates split 'test' of eval.dataset (or data.name) and writes W/eval/<dataset>_x<s>.json (per-scene
MAD, RMSE, PSNR, SSIM in protocol units, and their means) and W/eval/<dataset>_x<s>.md (Markdown tables;
for middlebury2005 beside the paper's Table 1 rows); the bicubic baseline's are <dataset>_x<s>_bicubic.*.
A report of another checkpoint is never replaced: the run is refused before any image is evaluated.
The model and its scale come from the checkpoint's saved config; model.scale = 0 (the eval configs'
value) means "the checkpoint's scale", any other value must agree with it.

Inference (windows, tiles, the self-ensemble) is dsr_jax/inference.py; the metrics and the protocols are
dsr_jax/metrics.py; the Markdown, the report names and the console line are dsr_jax/reports.py.
"""
import dataclasses
import json
import os
import time
from typing import Callable

from absl import logging
import jax
import ml_collections
import numpy as np

from dsr_jax import eval_config
from dsr_jax import inference
from dsr_jax import metrics as metrics_lib
from dsr_jax import paths
from dsr_jax import pictures
from dsr_jax import reports
from dsr_jax import resize
from dsr_jax.errors import ConfigError
from dsr_jax.errors import UserError
from dsr_jax.protocol import Protocol


class _CropToMultiple:
  """A source whose examples are cropped (top-left) to a multiple of `scale` (Lu protocol)."""

  def __init__(self, source, scale: int):
    self._source, self._scale = source, scale

  def __len__(self):
    return len(self._source)

  def __getitem__(self, index):
    ex = dict(self._source[index])
    h, w = np.shape(ex['depth'])
    h, w = h - h % self._scale, w - w % self._scale
    for k in ('depth', 'rgb', 'valid'):
      if k in ex:
        ex[k] = ex[k][:h, :w]
    return ex


def _data_config(config, dataset: str, scale: int):
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.data.name = dataset
  cfg.data.eval_batch = 1
  cfg.model.scale = scale
  return cfg


class Evaluator:
  """The one evaluation loop: whole images of one dataset, scored under one protocol.

  Training-time validation (train.py: the best checkpoint), eval mode (`run`; the notebook and the study
  call it) use it, so a checkpoint is judged during training as it is reported.

    ev = Evaluator(batches, readers.PROTOCOLS['middlebury2005'], scale=4)
    result = ev(predict)              # predict: normalised LR (h, w) -> normalised (s*h, s*w)

  Args:
    batches: a re-iterable of pipeline.eval_dataset batches (any data.eval_batch).
    proto: the Protocol.
    scale: s.
    metrics: names in metrics.METRICS (None: every registered one).
    name: the data as a message names it ("eval.dataset='nyu_v2': split test").
  """

  def __init__(self, batches, proto: Protocol, scale: int, metrics=None, name: str = 'evaluation'):
    self.batches, self.proto, self.scale, self.name = batches, proto, int(scale), name
    self.metrics = tuple(metrics or metrics_lib.METRICS)
    self._bicubic = None  # the baseline's result: the same every time

  def images(self):
    """(name, lr (h, w), hr (H, W), valid (H, W), rgb (H, W, 3), norm) of every real image, in order."""
    for b in self.batches:
      for i in range(len(b['mask'])):
        if b['mask'][i]:
          yield (str(b['name'][i]), b['lr_depth'][i, ..., 0], b['hr_depth'][i, ..., 0], b['valid'][i, ..., 0],
                 b['rgb'][i], float(b['norm'][i]))

  def __call__(self, predict: Callable, *, estimate: Callable | None = None, baseline: bool = False,
               on_image: Callable | None = None, guided: bool = False) -> dict:
    """Scores `predict` on every image.

    Args:
      predict: the SR function.
      estimate: optional DENet function (normalised RGB (H, W, 3) -> normalised depth (H, W)).
      baseline: also score the bicubic baseline (computed once per Evaluator), as result['bicubic'].
      on_image: optional callable(name, lr, pred, hr, norm, (pred, gt, mask, peak) in protocol units), e.g.
        pictures.SceneImages.

    Returns:
      {'per_scene': {name: metrics}, 'mean': metrics (over images), 'images': n, 'seconds': t, and
      'denet' / 'bicubic' ({'per_scene', 'mean'}) when asked}.
    """
    rows, rows_de = [], []
    t0 = time.perf_counter()
    for name, lr, hr, valid, rgb, norm in self.images():
      h, w = hr.shape
      # guided: a teacher that reads more than the LR (teacher.predictor) also gets the image's RGB and HR.
      pred = np.asarray(predict(lr, rgb=rgb, hr=hr) if guided else predict(lr))[:h, :w]
      scores, scored = metrics_lib.score_image(pred, hr, valid, norm, self.proto, self.metrics)
      rows.append((name, scores))
      if on_image is not None:
        on_image(name, lr, pred, hr, norm, scored)
      logging.info('%s %s x%d: %s', self.name, name, self.scale, scores)
      if estimate is not None:
        _, gt, mask, peak = scored
        de_pred = metrics_lib.crop(np.asarray(estimate(rgb), np.float64) * norm * self.proto.factor,
                                   self.proto.border)
        rows_de.append((name, metrics_lib.depth_metrics(de_pred, gt, mask, 1e-3 * peak)))
    if not rows:
      raise UserError(f'{self.name} has no image with valid depth')
    out = {**_table(rows), 'images': len(rows), 'seconds': time.perf_counter() - t0}
    if rows_de:
      out['denet'] = _table(rows_de)
    if baseline:
      if self._bicubic is None:
        s = self.scale
        bic = self(lambda lr: resize.upsample_bicubic(np.asarray(lr, np.float64), s))
        self._bicubic = {'per_scene': bic['per_scene'], 'mean': bic['mean']}
      out['bicubic'] = self._bicubic
    return out


def _table(rows) -> dict:
  """{'per_scene': {name: metrics}, 'mean': the mean over rows}; a repeated name gets a '#k' suffix (a
  validation mix of datasets may repeat one) so that no image drops out of the table."""
  per_scene = {}
  for name, m in rows:
    key, k = name, 1
    while key in per_scene:
      k += 1
      key = f'{name}#{k}'
    per_scene[key] = m
  return {'per_scene': per_scene, 'mean': _mean(per_scene)}


def evaluate_dataset(config, dataset: str, scale: int, predict: Callable, estimate: Callable | None = None,
                     on_image: Callable | None = None, baseline: bool = False, guided: bool = False):
  """Scores `predict` on split 'test' of `dataset` under its protocol (an Evaluator of dataset_batches)."""
  ev = Evaluator(dataset_batches(config, dataset, scale), metrics_lib.protocol_for(dataset), scale,
                 name=f'eval.dataset={dataset!r}: split test')
  return ev(predict, estimate=estimate, on_image=on_image, baseline=baseline, guided=guided)


def dataset_batches(config, dataset: str, scale: int):
  """Whole-image batches of split 'test' of `dataset` as its protocol prepares them."""
  from dsr_jax.input_pipeline import pipeline  # pylint: disable=g-import-not-at-top
  from dsr_jax.input_pipeline import sources  # pylint: disable=g-import-not-at-top
  proto = metrics_lib.protocol_for(dataset)
  cfg = _data_config(config, dataset, scale)
  source = sources.get_source(cfg.data, 'test')
  if proto.crop_multiple:
    source = _CropToMultiple(source, scale)
  return pipeline.eval_dataset(cfg, 'test', source=source, degradations=(str(config.eval.degradation),))


def _mean(per_scene: dict) -> dict:
  keys = next(iter(per_scene.values())).keys()
  out = {}
  for k in keys:
    vals = [m[k] for m in per_scene.values() if m[k] is not None]
    out[k] = float(np.mean(vals)) if vals else None
  return out


def run(config, workdir: str) -> dict:
  """Eval mode: scores a checkpoint (or the bicubic baseline) on split 'test' and writes the reports.

  Args:
    config: the eval config (mode 'eval'; eval.*, data.*, model.scale).
    workdir: reports go to <workdir>/eval/<dataset>_x<s>.{json,md}.

  Returns:
    The metrics dict written to the JSON file (plus 'files': the two paths).

  Raises:
    UserError: bad config fields, checkpoint or data (one line naming the field or file).
  """
  from dsr_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  from dsr_jax import restore  # pylint: disable=g-import-not-at-top
  eval_config.check(config)
  dataset = str(config.eval.dataset or config.data.name)
  proto, baseline, want = metrics_lib.protocol_for(dataset), config.eval.baseline, config.model.scale
  paths.check_dir_target(workdir, '--workdir')  # Now, not after the whole evaluation.
  tile, overlap, ensemble = config.eval.tile, config.eval.overlap, bool(config.eval.ensemble)
  info, estimate, guided = {}, None, False
  name = baseline
  if baseline == 'bicubic':
    scale = want

    def predict(lr):
      return resize.upsample_bicubic(np.asarray(lr, np.float64), scale)
  else:
    ck_cfg, params, info = restore.load_params(config.eval.checkpoint_dir, ('dsr', 'denet'))
    scale = int(ck_cfg.model.scale)
    if want and want != scale:
      raise ConfigError(f'model.scale={want} contradicts the checkpoint\'s scale {scale} ({info["dir"]}); '
                        f'set model.scale={scale} or 0 (= the checkpoint\'s)')
    models = models_lib.build(ck_cfg.model)
    name = ck_cfg.model.name
    guided = models_lib.reads_more_than_lr(models.dsr)
    if guided:  # a teacher trained alone (docs/method.md, "Frozen teachers"): whole images, with its RGB
      if tile or ensemble:
        raise ConfigError(f'eval.tile={tile}, eval.ensemble={ensemble}: the {name!r} network of '
                          f'{info["dir"]} runs on whole images only; expected eval.tile=0, eval.ensemble=False')
      from dsr_jax import teacher  # pylint: disable=g-import-not-at-top
      predict = teacher.predictor(models.dsr, params['dsr'])
    else:
      def predict(lr):
        return inference.super_resolve(models.dsr, params['dsr'], lr, tile=tile, overlap=overlap,
                                       ensemble=ensemble)
    # Monocular DE metrics only for an RGB-only DENet (docs/method.md, rule 5): an 'rgbd' one also saw the LR.
    if 'denet' in params and models.denet is not None and not models.denet.depth_input:
      denet, denet_params = models.denet, params['denet']
      estimate = lambda rgb: inference.estimate_depth(denet, denet_params, rgb, tile=tile)
  degradation = str(config.eval.degradation)
  files = reports.report_files(workdir, dataset, scale, name, info.get('dir', ''), degradation)
  images = None
  if config.eval.images and jax.process_index() == 0:
    images = pictures.SceneImages(os.path.splitext(files['json'])[0] + '_images', dataset, scale, proto,
                         int(config.eval.figure_scenes))
  try:
    # Bicubic upsampling of the same LR beside the network's: the ratio a robustness table reports.
    result = evaluate_dataset(config, dataset, scale, predict, estimate, on_image=images,
                              baseline=baseline != 'bicubic', guided=guided)
  except BaseException:
    if images is not None:
      images.discard()
    raise
  result = {'dataset': dataset, 'split': 'test', 'scale': scale, 'model': name,
            'checkpoint': reports.shown_path(info.get('dir', ''), str(config.eval.checkpoint_dir)),
            'step': info.get('step'),
            # What the network computed with (its checkpoint's config; 'auto' resolved when it trained).
            'dtype': models.dtype if baseline != 'bicubic' else None,
            'bp_impl': models.bp_impl if baseline != 'bicubic' else None,
            'tile': int(tile), 'overlap': int(overlap), 'ensemble': ensemble, 'degradation': degradation,
            'protocol': dataclasses.asdict(proto), **result}
  if dataset == 'middlebury2005' and degradation == 'protocol':  # the paper's LR is the protocol's alone
    result['paper_table1_mad'] = reports.paper_rows(scale)
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(files['json']), exist_ok=True)
    with open(files['json'], 'w') as f:
      json.dump(result, f, indent=2)
    with open(files['md'], 'w') as f:
      f.write(reports.markdown(result))
  if images is not None:
    files['images'] = images.finish()
  result['files'] = files
  return result
