"""The README's generated tables: each block between its markers is exactly what its command writes from the
stored JSON files, so no number in them is typed by hand."""
import pathlib

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
  want = robustness.table(robustness.load(str(REPO / 'results' / 'robustness')))
  assert want.strip(), 'results/robustness holds no report'
  assert block(readme, robustness.README_BEGIN, robustness.README_END) == want, (
      'README.md: run python -m dsr_jax.robustness --table-only --readme README.md')


def test_every_shipped_checkpoint_has_a_results_row_and_a_robustness_column():
  shipped = {p.name for p in results_table.shipped()}
  assert {'dsrnet_x4', 'dsrnet_x8', 'dsrnet_x4_protocol', 'dsrnet_x8_protocol'} <= shipped
  rob = robustness.load(str(REPO / 'results' / 'robustness'))
  assert shipped <= {label for per_scale in rob.values() for label in per_scale}
