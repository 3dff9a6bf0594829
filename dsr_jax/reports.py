"""Eval mode's reports: the Markdown beside the JSON, the paper's Table 1 rows, the report files' names and
the console's summary line.

Each renders whichever metric keys a result holds (metrics.METRICS' order first), so a new metric reaches
every report without a change here.
"""
import json
import os

import numpy as np

from dsr_jax import metrics
from dsr_jax import protocol
from dsr_jax.errors import UserError

SCENES_2005 = ('art', 'books', 'dolls', 'laundry', 'moebius', 'reindeer')
# Sun et al. CVPR 2021, Table 1 (Middlebury 2005, MAD on 0-255): per scene, x2 / x4 / x8 / x16.
PAPER_TABLE1_MAD = {
    'Bicubic': {'art': (0.48, 0.97, 1.85, 3.59), 'books': (0.13, 0.29, 0.59, 1.15),
                'dolls': (0.20, 0.36, 0.66, 1.18), 'laundry': (0.28, 0.54, 1.04, 1.95),
                'moebius': (0.13, 0.30, 0.59, 1.13), 'reindeer': (0.30, 0.55, 0.99, 1.88)},
    'DSRNet w/o CT': {'art': (0.16, 0.31, 0.59, 1.55), 'books': (0.10, 0.15, 0.31, 0.73),
                      'dolls': (0.12, 0.21, 0.39, 0.69), 'laundry': (0.12, 0.21, 0.40, 0.82),
                      'moebius': (0.11, 0.16, 0.32, 0.74), 'reindeer': (0.13, 0.22, 0.38, 0.87)},
    'DSRNet': {'art': (0.11, 0.25, 0.53, 1.44), 'books': (0.05, 0.11, 0.26, 0.67),
               'dolls': (0.07, 0.16, 0.36, 0.65), 'laundry': (0.06, 0.16, 0.36, 0.76),
               'moebius': (0.07, 0.13, 0.27, 0.69), 'reindeer': (0.08, 0.17, 0.35, 0.77)},
}


def _fmt(v, digits: int) -> str:
  return '-' if v is None else f'{v:.{digits}f}'


def title(scene: str) -> str:
  """A scene's name as a table or a figure shows it ('art' -> 'Art')."""
  return scene[:1].upper() + scene[1:]


def paper_rows(scale: int) -> dict:
  """{method: {scene: MAD}} of the paper's Table 1 at `scale` (empty for scales it does not list)."""
  if scale not in protocol.PAPER_SCALES:
    return {}
  i = protocol.PAPER_SCALES.index(scale)
  return {m: {sc: v[i] for sc, v in rows.items()} for m, rows in PAPER_TABLE1_MAD.items()}


def markdown(result: dict) -> str:
  """The Markdown report of one eval run (see `run`)."""
  ds, s, unit = result['dataset'], result['scale'], result['protocol']['unit']
  ours = 'Bicubic' if result['model'] == 'bicubic' else 'DSRNet'
  label = f'{ours} (ours' + (f', step {result["step"]})' if result.get('step') is not None else ')')
  deg = result.get('degradation', 'protocol')
  lines = [f'# {ds} x{s}' + ('' if deg == 'protocol' else f', LR made by {deg}') + f': {label}', '']
  if result.get('checkpoint'):
    lines.append(f'Checkpoint: `{result["checkpoint"]}`')
  lines += [f'Protocol: {result["protocol"]["reference"]}; metrics in {unit}, split `{result["split"]}`, '
            f'{result["images"]} images' + (', 8-way self-ensemble' if result.get('ensemble') else '') + '.',
            '']
  per = result['per_scene']
  paper = result.get('paper_table1_mad') or {}
  if paper:
    scenes = [sc for sc in SCENES_2005 if sc in per]
    lines += [f'## MAD (0-255) beside the paper\'s Table 1, x{s}', '',
              '| Method | ' + ' | '.join(title(sc) for sc in scenes) + ' | Mean |',
              '|---|' + '---:|' * (len(scenes) + 1)]
    for method, row in paper.items():
      vals = [row[sc] for sc in scenes]
      lines.append(f'| {method} (paper) | ' + ' | '.join(f'{v:.2f}' for v in vals) +
                   f' | {np.mean(vals):.2f} |')
    vals = [per[sc]['mad'] for sc in scenes]
    lines.append(f'| **{label}** | ' + ' | '.join(f'{v:.2f}' for v in vals) + f' | {np.mean(vals):.2f} |')
    lines.append('')
  lines += ['## Per scene', ''] + _metric_table(per, result['mean'], metrics.METRICS, unit)
  if 'denet' in result:
    lines += ['', '## DENet (monocular depth from the HR RGB)', '']
    lines += _metric_table(result['denet']['per_scene'], result['denet']['mean'], metrics.DEPTH_METRICS, unit)
  return '\n'.join(lines) + '\n'


def _columns(mean: dict, registry: dict) -> list:
  """(key, Metric) for every key of a result, registered ones in registry order, others after them."""
  cols = [(k, registry[k]) for k in registry if k in mean]
  return cols + [(k, metrics.Metric(None, k, 4, k)) for k in mean if k not in registry]


def _metric_table(per_scene: dict, mean: dict, registry: dict, unit: str) -> list:
  cols = _columns(mean, registry)
  out = ['| Scene | ' + ' | '.join(m.label.format(unit=unit) for _, m in cols) + ' |',
         '|---|' + '---:|' * len(cols)]
  for name, row in list(per_scene.items()) + [('**Mean**', mean)]:
    out.append(f'| {name} | ' + ' | '.join(_fmt(row.get(k), m.digits) for k, m in cols) + ' |')
  return out


def shown_path(step_dir: str, given: str) -> str:
  """The checkpoint path a report records: relative when the user gave a relative path under the cwd.

  Restoring needs the absolute path, but a report written into the repository (the shipped ones) should
  not carry this machine's directory layout.
  """
  if not step_dir or os.path.isabs(os.path.expanduser(given)):
    return step_dir
  rel = os.path.relpath(step_dir)
  return step_dir if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel


def report_files(workdir: str, dataset: str, scale: int, name: str, checkpoint: str,
                 degradation: str = 'protocol') -> dict:
  """The report's two paths; refuses (before any image is evaluated) to replace another checkpoint's report.

  `checkpoint` is the step directory ('' for the bicubic baseline), compared by real path. A degradation
  other than the protocol's names the report ('<dataset>_x<s>_<degradation>').
  """
  stem = os.path.join(os.path.abspath(workdir), 'eval',
                      f'{dataset}_x{scale}' + ('' if degradation == 'protocol' else f'_{degradation}') +
                      ('_bicubic' if name == 'bicubic' else ''))
  files = {'json': stem + '.json', 'md': stem + '.md'}
  real = lambda c: os.path.realpath(c) if c else ''
  if os.path.exists(files['json']):
    try:
      with open(files['json']) as f:
        old = json.load(f).get('checkpoint')
      what = f'the report of {old}' if old else "the bicubic baseline's report"
    except (OSError, ValueError, AttributeError):
      old, what = None, 'something that is not a report'
    if not isinstance(old, str) or real(old) != real(checkpoint):
      raise UserError(f'{files["json"]}: already holds {what}; give another --workdir or move it away '
                      '(a re-run of the same checkpoint replaces its own report)')
  elif os.path.exists(files['md']):
    raise UserError(f'{files["md"]}: exists without its .json (so whose report it is is unknown); give '
                    'another --workdir or move it away')
  return files


def summary(result: dict) -> str:
  """One line for the console."""
  m = result['mean']
  values = ' '.join(f'{c.short} {_fmt(m[k], c.digits)}' for k, c in _columns(m, metrics.METRICS))
  return (f'eval {result["dataset"]} x{result["scale"]} ({result["model"]}, {result["images"]} images, '
          f'{result["protocol"]["unit"]}): {values}; wrote {result["files"]["json"]} and {result["files"]["md"]}')
