"""Robustness: a DSRNet on the LR a user may have, against bicubic upsampling of the same LR.

  python -m dsr_jax.robustness --checkpoint dsrnet_x4 --checkpoint dsrnet_x4_protocol --out results/robustness
  python -m dsr_jax.robustness --out results/robustness --table-only --readme README.md

For every checkpoint and every row, eval mode runs on the Middlebury 2005 benchmark with
`eval.degradation=<row>` (the LR made as degradation.EVAL_DEGRADATIONS says, at a fixed seed) and writes its
eval JSON (both ours and bicubic, per scene) under `<out>/<checkpoint>/eval/`. The 'realscene' row is RGB-D-D's
real phone time-of-flight LR (study.real_sensor_rmse, RMSE in cm) in `<out>/<checkpoint>/realscene.json`. The
table (`<out>/TABLE.md`, and the README block between <!-- robustness:begin --> and <!-- robustness:end -->
with --readme) is written from those files only: per scale, a row per LR, ours / bicubic as the mean ratio
and the worst scene's ratio. A ratio below 1 means the network helps.
"""
import argparse
import json
import os
import sys

from dsr_jax import errors
from dsr_jax.input_pipeline import degradation

REALSCENE = 'realscene'
ROWS = degradation.EVAL_CHOICES + (REALSCENE,)
DATASET = 'middlebury2005'
README_BEGIN, README_END = '<!-- robustness:begin -->', '<!-- robustness:end -->'
# The goals the shipped networks are held to (the README): on every row a mean ratio of at most 0.8 and no
# scene at or above 1.0; on the real sensor, below bicubic.
GOAL_MEAN, GOAL_WORST = 0.8, 1.0


def label_of(checkpoint: str) -> str:
  """The name a checkpoint's results are filed under: a shipped name as is, else its directory's name."""
  return os.path.basename(os.path.normpath(checkpoint))


def _report_path(out: str, label: str, scale: int, row: str) -> str:
  suffix = '' if row == degradation.PROTOCOL else f'_{row}'
  return os.path.join(out, label, 'eval', f'{DATASET}_x{scale}{suffix}.json')


def evaluate_checkpoint(checkpoint: str, out: str, rows, data_dir: str = '', log=print) -> str:
  """Runs every row of `rows` for one checkpoint (skipping rows already stored); returns its label."""
  from dsr_jax import evaluate  # pylint: disable=g-import-not-at-top
  from dsr_jax import restore  # pylint: disable=g-import-not-at-top
  from dsr_jax import study  # pylint: disable=g-import-not-at-top
  from dsr_jax.config_lib import load_config  # pylint: disable=g-import-not-at-top
  scale = int(restore.read_config(*restore.resolve_checkpoint(checkpoint)).model.scale)
  label = label_of(checkpoint)
  workdir = os.path.join(out, label)
  for row in rows:
    if row == REALSCENE:
      path = os.path.join(workdir, 'realscene.json')
      res = None if os.path.exists(path) else study.real_sensor(checkpoint, data_dir)
      if res is None:  # stored already, or the data has no realscene split
        continue
      res.update(scale=scale, checkpoint=checkpoint)
      os.makedirs(workdir, exist_ok=True)
      with open(path, 'w') as f:
        json.dump(res, f, indent=2)
    else:
      if os.path.exists(_report_path(out, label, scale, row)):
        continue
      cfg = load_config('eval:' + DATASET, **{'eval.checkpoint_dir': checkpoint, 'eval.degradation': row,
                                              'eval.images': False})
      if data_dir:
        cfg.data.dir = data_dir
      res = evaluate.run(cfg, workdir)
    log(f'{label} x{scale} {row}: ' + (
        f'RMSE {res["mean"]["rmse_cm"]:.3f} cm, bicubic {res["mean"]["bicubic_rmse_cm"]:.3f}'
        if row == REALSCENE else f'MAD {res["mean"]["mad"]:.4f}, bicubic {res["bicubic"]["mean"]["mad"]:.4f}'))
  return label


def realscene_registration(data_dir: str = '', scale: int = 4, shift: int = 4) -> dict:
  """How RGB-D-D's real LR sits against its HR ground truth: per scene, the RMSE (cm) of bicubic upsampling as
  the realscene row computes it, of the same upsampling shifted by the best whole-pixel offset within +-`shift`
  HR pixels, and of it blurred (Gaussian, std 1, 2 and 4 HR pixels). A shift or a blur that lowers the RMSE
  says the LR is not registered to the ground truth, and that the metric there rewards blur."""
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from dsr_jax import resize  # pylint: disable=g-import-not-at-top
  from dsr_jax import study  # pylint: disable=g-import-not-at-top
  from dsr_jax.input_pipeline import readers  # pylint: disable=g-import-not-at-top
  out = {}
  for name, hr, valid, lr, norm in study.real_sensor_scenes(str(readers.resolve_data_dir(data_dir)), scale):
    h, w = hr.shape
    bic = resize.upsample_bicubic(lr, scale)[:h, :w] * norm
    rmse = lambda p: study.rmse_cm(p, hr, valid)  # pylint: disable=cell-var-from-loop
    shifts = {(dy, dx): rmse(np.roll(bic, (dy, dx), axis=(0, 1)))
              for dy in range(-shift, shift + 1) for dx in range(-shift, shift + 1)}
    best = min(shifts, key=shifts.get)
    out[name] = {'bicubic_rmse_cm': rmse(bic), 'best_shift': list(best), 'shifted_rmse_cm': shifts[best],
                 **{f'blur{sg}_rmse_cm': rmse(ndimage.gaussian_filter(bic, sg)) for sg in (1, 2, 4)}}
  return {'scale': scale, 'per_scene': out}


def load(out: str) -> dict:
  """{scale: {label: {row: {'ours', 'bicubic', 'ratio', 'worst', 'worst_scene', 'unit'}}}} from stored files."""
  found = {}
  if not os.path.isdir(out):
    return found
  for label in sorted(os.listdir(out)):
    eval_dir = os.path.join(out, label, 'eval')
    files = sorted(os.listdir(eval_dir)) if os.path.isdir(eval_dir) else []
    for name in files:
      if not (name.startswith(DATASET + '_x') and name.endswith('.json')):
        continue
      with open(os.path.join(eval_dir, name)) as f:
        r = json.load(f)
      if 'bicubic' not in r:
        continue  # a report from before the baseline was stored beside it
      ours = {k: v['mad'] for k, v in r['per_scene'].items()}
      bic = {k: v['mad'] for k, v in r['bicubic']['per_scene'].items()}
      found.setdefault(int(r['scale']), {}).setdefault(label, {})[r.get('degradation', 'protocol')] = (
          _row(ours, bic, r['mean']['mad'], r['bicubic']['mean']['mad'], 'MAD'))
    path = os.path.join(out, label, 'realscene.json')
    if os.path.exists(path):
      with open(path) as f:
        r = json.load(f)
      ours = {k: v['rmse_cm'] for k, v in r['per_scene'].items()}
      bic = {k: v['bicubic_rmse_cm'] for k, v in r['per_scene'].items()}
      found.setdefault(int(r['scale']), {}).setdefault(label, {})[REALSCENE] = _row(
          ours, bic, r['mean']['rmse_cm'], r['mean']['bicubic_rmse_cm'], 'RMSE cm')
  return found


def _row(ours: dict, bic: dict, ours_mean: float, bic_mean: float, unit: str) -> dict:
  # Scene names carry '@<degradation>' (pipeline._PerDegradation); the table names the scene alone.
  ratios = {k.split('@')[0]: ours[k] / bic[k] for k in ours if bic.get(k)}
  worst = max(ratios, key=ratios.get)
  return {'ours': ours_mean, 'bicubic': bic_mean, 'ratio': ours_mean / bic_mean, 'worst': ratios[worst],
          'worst_scene': worst, 'unit': unit}


def meets(cell: dict, row: str) -> bool:
  if row == REALSCENE:
    return cell['ratio'] < 1.0
  return cell['ratio'] <= GOAL_MEAN and cell['worst'] < GOAL_WORST


def table(found: dict) -> str:
  """Markdown: per scale, a row per LR; bicubic's score, then per checkpoint its score, the mean ratio
  ours / bicubic, the worst scene's ratio, and whether the row meets the goal."""
  out = []
  for scale in sorted(found):
    labels = sorted(found[scale])
    rows = [r for r in ROWS if any(r in found[scale][lb] for lb in labels)]
    head = '| LR made by | unit | bicubic | ' + ' | '.join(
        f'{lb} | ratio | worst scene | goal' for lb in labels) + ' |'
    out += [f'x{scale} (Middlebury 2005 MAD on 0-255 over the six scenes; realscene: RGB-D-D RMSE in cm):', '',
            head, '|' + ' --- |' * (3 + 4 * len(labels))]
    for row in rows:
      cells = [found[scale][lb].get(row) for lb in labels]
      first = next(c for c in cells if c)
      digits = 3 if first['unit'] == 'RMSE cm' else 4
      line = f'| {row} | {first["unit"]} | {first["bicubic"]:.{digits}f} |'
      for c in cells:
        line += (' - | - | - | - |' if c is None else
                 f' {c["ours"]:.{digits}f} | {c["ratio"]:.2f} | {c["worst"]:.2f} ({c["worst_scene"]}) | '
                 f'{"yes" if meets(c, row) else "no"} |')
      out.append(line)
    out.append('')
  return '\n'.join(out)


def summary(found: dict) -> str:
  """Markdown for the README: a row per LR, a column per checkpoint (by scale), each cell the mean ratio
  ours / bicubic, starred where the row misses the goal; the scores behind it are in TABLE.md."""
  cols = [(scale, lb) for scale in sorted(found) for lb in sorted(found[scale])]
  out = ['| LR made by | ' + ' | '.join(f'`{lb}`' for _, lb in cols) + ' |', '|' + ' --- |' * (1 + len(cols))]
  for row in ROWS:
    cells = [found[scale][lb].get(row) for scale, lb in cols]
    if not any(cells):
      continue
    out.append(f'| {row} | ' + ' | '.join(
        '-' if c is None else f'{c["ratio"]:.2f}' + ('' if meets(c, row) else '*') for c in cells) + ' |')
  return '\n'.join(out) + '\n'


def write_table(out: str, readme: str = '') -> str:
  from dsr_jax import study  # pylint: disable=g-import-not-at-top
  found = load(out)
  text = table(found)
  with open(os.path.join(out, 'TABLE.md'), 'w') as f:
    f.write('# Robustness (written by `python -m dsr_jax.robustness`; do not edit)\n\n' + text)
  if readme:
    study.write_block(readme, README_BEGIN, README_END, summary(found))
  return text


def build_parser():
  p = errors.ArgumentParser(prog='python -m dsr_jax.robustness', description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--checkpoint', action='append', default=[],
                 help='a shipped name or a checkpoint path (repeat for several)')
  p.add_argument('--rows', default=','.join(ROWS), help=f'comma list of rows (default: all of {", ".join(ROWS)})')
  p.add_argument('--out', default='results/robustness', help='where the eval JSON files and TABLE.md go')
  p.add_argument('--data-dir', default='', help='the data directory (default: $DSR_DATA_DIR)')
  p.add_argument('--readme', default='', help="also rewrite this Markdown file's robustness block (the ratios only)")
  p.add_argument('--table-only', action='store_true', help='only rewrite the table from stored results')
  p.add_argument('--registration', action='store_true',
                 help='write <out>/realscene_registration.json: how the real LR sits against its ground truth')
  return p


def main(argv=None) -> int:
  a = build_parser().parse_args(argv)
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.ERROR)  # Orbax's read-only notices, once per row, would bury the results
  rows = [r.strip() for r in a.rows.split(',') if r.strip()]
  bad = [r for r in rows if r not in ROWS]
  if bad:
    print(f'error: --rows: {bad[0]!r} is not one of {", ".join(ROWS)}', file=sys.stderr)
    return 2
  if not (a.table_only or a.registration) and not a.checkpoint:
    print('error: expected --checkpoint (one or more), or --table-only', file=sys.stderr)
    return 2
  try:
    from dsr_jax import paths  # pylint: disable=g-import-not-at-top
    paths.check_dir_target(a.out, '--out')
    os.makedirs(a.out, exist_ok=True)
    if a.registration:
      reg = realscene_registration(a.data_dir)
      with open(os.path.join(a.out, 'realscene_registration.json'), 'w') as f:
        json.dump(reg, f, indent=2)
      print(json.dumps(reg, indent=2))
      return 0
    if not a.table_only:
      for ck in a.checkpoint:
        evaluate_checkpoint(ck, a.out, rows, a.data_dir, log=lambda line: print(line, flush=True))
    print(write_table(a.out, a.readme))
  except errors.UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
