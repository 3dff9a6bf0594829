"""dsr_jax.paths: the directory checks and the replace-with-undo that the writing CLIs share."""
import os

import pytest

from dsr_jax import paths
from dsr_jax.errors import UserError


def test_check_dir_target(tmp_path):
  assert paths.check_dir_target(tmp_path / 'new' / 'deeper', '--workdir') == str(tmp_path / 'new' / 'deeper')
  (tmp_path / 'file').write_text('x')
  os.symlink(tmp_path / 'gone', tmp_path / 'dangling')
  for target, expect in ((tmp_path / 'file', 'file: is not a directory'),
                         (tmp_path / 'file' / 'sub', f'lies under {tmp_path / "file"}, which is not'),
                         (tmp_path / 'dangling', 'dangling: is not a directory'),
                         (tmp_path / 'dangling' / 'sub', f'lies under {tmp_path / "dangling"}')):
    with pytest.raises(UserError) as e:
      paths.check_dir_target(target, '--workdir')
    assert str(e.value).startswith(f'--workdir {target}') and expect in str(e.value), e.value


def _tree(path):
  return sorted((os.path.relpath(os.path.join(d, f), path), open(os.path.join(d, f)).read())
                for d, _, fs in os.walk(path) for f in fs)


def test_replace_dir_swaps_and_undoes(tmp_path, monkeypatch):
  old, new = tmp_path / 'out', tmp_path / 'new'
  old.mkdir()
  (old / 'a').write_text('old')
  new.mkdir()
  (new / 'b').write_text('new')
  real_replace = os.replace

  def fail_second(src, dst):
    if src == str(new):  # moving the new directory in: interrupted
      raise KeyboardInterrupt
    real_replace(src, dst)
  monkeypatch.setattr(os, 'replace', fail_second)
  with pytest.raises(KeyboardInterrupt):
    paths.replace_dir(str(new), str(old))
  assert _tree(old) == [('a', 'old')] and sorted(os.listdir(tmp_path)) == ['new', 'out']
  monkeypatch.setattr(os, 'replace', real_replace)
  paths.replace_dir(str(new), str(old))
  assert _tree(old) == [('b', 'new')] and os.listdir(tmp_path) == ['out']
