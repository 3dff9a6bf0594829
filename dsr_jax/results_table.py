"""The results table a user sees first: the shipped checkpoints on the paper's protocol, beside the paper.

  python -m dsr_jax.results_table --readme README.md     # rewrites the block between the results markers

Written from `checkpoints/<name>/eval_middlebury2005.json` only (eval mode's report, which stores bicubic
upsampling of the same LR beside the network): per scale, the paper's "DSRNet w/o CT" and "DSRNet" rows of
Table 1, bicubic, and every shipped network of that scale, over the six Middlebury 2005 scenes (MAD on
0-255, the protocol's LR), with each network's parameter count. The last column is the mean of the
geometric self-ensemble (8 flips/transposes, `--config.eval.ensemble=True`), from
`eval_middlebury2005_ensemble.json` beside it: a column of its own, never in place of the single pass. No number is typed by hand; a test fails when
the README's block differs from what this writes.
"""
import argparse
import json
import pathlib
import sys

import numpy as np

from dsr_jax import errors
from dsr_jax import reports

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / 'checkpoints'
SCENES = ('art', 'books', 'dolls', 'laundry', 'moebius', 'reindeer')
README_BEGIN, README_END = '<!-- results:begin -->', '<!-- results:end -->'
PAPER_ROWS = ('DSRNet w/o CT', 'DSRNet')


def shipped(root=CHECKPOINTS) -> list[pathlib.Path]:
  return sorted(p for p in pathlib.Path(root).glob('dsrnet_x*') if (p / 'eval_middlebury2005.json').is_file())


def _param_count(path: pathlib.Path) -> int:
  from dsr_jax import restore  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  config = restore.read_config(*restore.resolve_checkpoint(str(path)))
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(restore.abstract_params(config, ('dsr',)))))


def load(root=CHECKPOINTS, count=_param_count) -> dict:
  """{scale: [(name, report, parameters, ensemble report or None), ...]} of the shipped checkpoints."""
  out = {}
  for path in shipped(root):
    report = json.loads((path / 'eval_middlebury2005.json').read_text())
    ens_path = path / 'eval_middlebury2005_ensemble.json'
    ensemble = json.loads(ens_path.read_text()) if ens_path.is_file() else None
    if ensemble is not None and not (ensemble.get('ensemble') and ensemble['scale'] == report['scale']):
      raise errors.UserError(f'{ens_path}: expected an ensemble evaluation at x{report["scale"]}')
    out.setdefault(int(report['scale']), []).append((path.name, report, count(path), ensemble))
  return out


def _cells(per: dict, digits: int) -> list[str]:
  vals = [per[s] for s in SCENES]
  return [f'{v:.{digits}f}' for v in vals] + [f'{np.mean(vals):.{digits}f}']


def table(found: dict) -> str:
  lines = ['| scale | method | params | ' + ' | '.join(s.capitalize() for s in SCENES) + ' | mean | ensemble mean |',
           '|' + ' --- |' * (5 + len(SCENES))]
  for scale in sorted(found):
    paper = reports.paper_rows(scale)
    for method in PAPER_ROWS:
      if method in paper:
        lines.append(f'| x{scale} | {method} (paper) | - | ' + ' | '.join(_cells(paper[method], 2)) + ' | - |')
    first = found[scale][0][1]
    if 'bicubic' in first:
      bic = {s: first['bicubic']['per_scene'][s]['mad'] for s in SCENES}
      lines.append(f'| x{scale} | bicubic (ours) | - | ' + ' | '.join(_cells(bic, 3)) + ' | - |')
    for name, report, params, ensemble in found[scale]:
      ours = {s: report['per_scene'][s]['mad'] for s in SCENES}
      ens = f'{np.mean([ensemble["per_scene"][s]["mad"] for s in SCENES]):.3f}' if ensemble else 'not run'
      lines.append(f'| x{scale} | `{name}` | {params / 1e6:.2f} M | ' + ' | '.join(_cells(ours, 3)) + f' | {ens} |')
  return '\n'.join(lines) + '\n'


def build_parser():
  p = errors.ArgumentParser(prog='python -m dsr_jax.results_table', description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--readme', default='', help='rewrite the results block of this Markdown file')
  return p


def main(argv=None) -> int:
  a = build_parser().parse_args(argv)
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.ERROR)  # Orbax's read-only notices, once per checkpoint read for its config
  from dsr_jax import study  # pylint: disable=g-import-not-at-top
  try:
    text = table(load())
    if a.readme:
      study.write_block(a.readme, README_BEGIN, README_END, text)
  except errors.UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(text, end='')
  return 0


if __name__ == '__main__':
  sys.exit(main())
