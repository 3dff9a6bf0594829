"""The README and docs/: short enough to read, every relative link leads to a file of the repository, and the
study's tables on docs/study.md are what `python -m dsr_jax.study --table-only --doc docs/study.md` writes."""
import pathlib
import re

import pytest

from dsr_jax import study

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGES = [REPO / 'README.md'] + sorted((REPO / 'docs').glob('*.md'))
README_MAX_LINES = 200

_FENCE = re.compile(r'^(```|~~~).*?^\1', re.M | re.S)
_CODE = re.compile(r'`[^`\n]*`')
_LINK = re.compile(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')


def relative_links(text: str) -> list[str]:
  """The targets of the Markdown links and images of `text` that name a path (no URL, no bare #anchor),
  outside code blocks and code spans, without their #anchor."""
  text = _CODE.sub('', _FENCE.sub('', text))
  out = []
  for target in _LINK.findall(text):
    if re.match(r'^[a-z][a-z0-9+.-]*:', target, re.I) or target.startswith('#'):
      continue
    out.append(target.split('#', 1)[0])
  return out


def test_relative_links_finds_links_and_skips_code_and_urls():
  text = ('see [a](docs/a.md#x) and ![img](b.png) [u](https://x.org/y) [h](#top) `[c](no.md)`\n'
          '```\n[d](no2.md)\n```\n')
  assert relative_links(text) == ['docs/a.md', 'b.png']


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_names_an_existing_file(page):
  missing = [t for t in relative_links(page.read_text()) if not (page.parent / t).exists()]
  assert not missing, f'{page.relative_to(REPO)}: links to missing files: {missing}'


def test_readme_is_short_and_the_docs_exist():
  n = len((REPO / 'README.md').read_text().splitlines())
  assert n <= README_MAX_LINES, f'README.md has {n} lines (at most {README_MAX_LINES}); move detail to docs/'
  for name in ('method.md', 'study.md', 'robustness.md'):
    assert (REPO / 'docs' / name).is_file(), f'docs/{name} is missing'


def test_no_page_sends_readers_to_files_outside_the_repository():
  for page in PAGES:
    text = page.read_text()
    assert 'ARCHITECTURE.md' not in text, f'{page.relative_to(REPO)} cites ARCHITECTURE.md (use docs/method.md)'


def test_study_blocks_are_what_the_study_writes():
  doc = (REPO / 'docs' / 'study.md').read_text()
  names = re.findall(r'<!-- ((?:ct_study|kd_)[\w.-]*):begin -->', doc)
  assert 'ct_study' in names
  for name in names:
    begin, end = study.markers(str(REPO / 'results' / name))
    assert end in doc, f'docs/study.md: {begin} has no {end}'
    block = doc.split(begin, 1)[1].split(end, 1)[0].lstrip('\n')
    assert block == study.table(study.load_results(str(REPO / 'results' / name))), (
        f'docs/study.md: run python -m dsr_jax.study --table-only --out results/{name} --doc docs/study.md')


def test_study_writes_its_blocks_with_doc_and_keeps_readme_as_its_old_name():
  parse = study.build_parser().parse_args
  assert parse(['--doc', 'docs/study.md']).doc == 'docs/study.md'
  assert parse(['--readme', 'docs/study.md']).doc == 'docs/study.md'
