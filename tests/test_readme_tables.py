"""The README's generated tables: each block between its markers is exactly what its command writes from the
stored JSON files, so no number in them is typed by hand."""
import json
import pathlib

import pytest

from dsr_jax import errors
from dsr_jax import results_table
from dsr_jax import robustness

REPO = pathlib.Path(__file__).resolve().parents[1]


def block(text: str, begin: str, end: str) -> str:
  assert begin in text and end in text, f'README.md: markers {begin} ... {end} missing'
  return text.split(begin, 1)[1].split(end, 1)[0].lstrip('\n')


def test_results_block_is_what_results_table_writes():
  readme = (REPO / 'README.md').read_text()
  want = results_table.table(results_table.load())
  assert block(readme, results_table.README_BEGIN, results_table.README_END) == want, (
      'README.md: run python -m dsr_jax.results_table --readme README.md')


def test_robustness_block_is_what_robustness_writes():
  readme = (REPO / 'README.md').read_text()
  want = robustness.summary(robustness.load(str(REPO / 'results' / 'robustness')))
  assert want.strip(), 'results/robustness holds no report'
  assert block(readme, robustness.README_BEGIN, robustness.README_END) == want, (
      'README.md: run python -m dsr_jax.robustness --table-only --readme README.md')


def test_every_shipped_checkpoint_has_a_results_row_and_a_robustness_column():
  shipped = {p.name for p in results_table.shipped()}
  assert {'dsrnet_x4', 'dsrnet_x8', 'dsrnet_x4_protocol', 'dsrnet_x8_protocol'} <= shipped
  rob = robustness.load(str(REPO / 'results' / 'robustness'))
  assert shipped <= {label for per_scale in rob.values() for label in per_scale}


def test_ensemble_column_comes_from_its_own_report(tmp_path):
  per = lambda v: {'per_scene': {s: {'mad': v} for s in results_table.SCENES}}
  for name, single, ens in (('dsrnet_x4', 0.2, 0.19), ('dsrnet_x4_protocol', 0.17, None)):
    d = tmp_path / name
    d.mkdir()
    (d / 'eval_middlebury2005.json').write_text(json.dumps({'scale': 4, 'ensemble': False, **per(single)}))
    if ens is not None:
      (d / 'eval_middlebury2005_ensemble.json').write_text(json.dumps({'scale': 4, 'ensemble': True, **per(ens)}))
  rows = results_table.table(results_table.load(tmp_path, count=lambda p: 360000)).splitlines()
  assert rows[0].endswith('| mean | ensemble mean |')
  mine = {r.split('|')[2].strip(): r for r in rows if '`dsrnet' in r}
  assert mine['`dsrnet_x4`'].endswith('| 0.200 | 0.190 |')
  assert mine['`dsrnet_x4_protocol`'].endswith('| 0.170 | not run |')
  # A single-pass report saved under the ensemble's name is refused, not shown as an ensemble.
  (tmp_path / 'dsrnet_x4_protocol' / 'eval_middlebury2005_ensemble.json').write_text(
      json.dumps({'scale': 4, 'ensemble': False, **per(0.1)}))
  with pytest.raises(errors.UserError, match='eval_middlebury2005_ensemble.json'):
    results_table.load(tmp_path, count=lambda p: 0)
