"""The package's modules import each other without a cycle, and each one imports.

The graph holds every import of one package module by another, wherever it is written: an import inside a
function hides a cycle from Python until that function runs, so it counts here as one at the top does.
"""
import ast
import importlib
import pathlib
import subprocess
import sys

import dsr_jax
from dsr_jax import configs
from dsr_jax import input_pipeline

PACKAGES = (dsr_jax, configs, input_pipeline)


def _modules() -> dict[str, pathlib.Path]:
  """{dotted name: file} of every module of the package, configs/ and input_pipeline/ (in either layout: the
  checkout's top-level directories or a wheel's subpackages)."""
  out = {}
  for package in PACKAGES:
    for root in map(pathlib.Path, package.__path__):
      for path in sorted(root.rglob('*.py')):
        parts = path.relative_to(root).with_suffix('').parts
        if parts[0] in ('configs', 'input_pipeline') and package is dsr_jax:
          continue  # a wheel's copy, listed under its own package
        if parts[-1] == '__init__':
          parts = parts[:-1]
        out['.'.join((package.__name__,) + parts)] = path
  return out


MODULES = _modules()


def _imports(name: str, path: pathlib.Path) -> set[str]:
  """The package modules that `name` imports, anywhere in its file."""
  package = name if path.name == '__init__.py' else name.rpartition('.')[0]
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        anchor = package.rsplit('.', node.level - 1)[0] if node.level > 1 else package
        base = f'{anchor}.{base}' if base else anchor
      # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod.
      targets = [f'{base}.{a.name}' if f'{base}.{a.name}' in MODULES else base for a in node.names]
    else:
      continue
    found.update(t for t in targets if t in MODULES and t != name)
  return found


def _cycle(graph: dict[str, set[str]]) -> list[str]:
  """One import cycle as [a, b, ..., a], or [] when the graph has none."""
  done, path, on_path = set(), [], {}

  def visit(node):
    on_path[node] = len(path)
    path.append(node)
    for nxt in sorted(graph[node]):
      if nxt in on_path:
        return path[on_path[nxt]:] + [nxt]
      if nxt not in done:
        found = visit(nxt)
        if found:
          return found
    path.pop()
    del on_path[node]
    done.add(node)
    return []

  for start in sorted(graph):
    if start not in done:
      found = visit(start)
      if found:
        return found
  return []


def test_the_module_list_covers_the_package():
  for name in ('dsr_jax.train', 'dsr_jax.config_lib', 'dsr_jax.models.dsrnet', 'dsr_jax.configs.default',
               'dsr_jax.input_pipeline.pipeline'):
    assert name in MODULES, sorted(MODULES)


def test_the_cycle_finder_finds_a_cycle():
  assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == ['a', 'b', 'c', 'a']
  assert not _cycle({'a': {'b'}, 'b': {'c'}, 'c': set()})


def test_no_import_cycles():
  graph = {name: _imports(name, path) for name, path in MODULES.items()}
  cycle = _cycle(graph)
  assert not cycle, 'import cycle: ' + ' -> '.join(cycle)


def test_no_private_jax_imports():
  for name, path in MODULES.items():
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module or ''] if isinstance(node, ast.ImportFrom) else [])
      assert not any(n == 'jax._src' or n.startswith('jax._src.') for n in names), name


def _fresh(script: str, *args) -> subprocess.CompletedProcess:
  # From the directory that holds the package, so that `python -c` finds it there in either layout.
  return subprocess.run([sys.executable, '-c', script, *args], capture_output=True, text=True, timeout=600,
                        cwd=pathlib.Path(dsr_jax.__file__).resolve().parents[1], check=False)


def test_every_module_imports_in_a_fresh_interpreter():
  """Each module imported by name, in an interpreter where nothing of the package was loaded before, and none
  changes the process's umask (what a user's files are created with)."""
  script = ('import importlib, os, sys, traceback\n'
            'bad = []\n'
            'for name in sys.argv[1:]:\n'
            '  before = os.umask(0o022); os.umask(before)\n'
            '  try:\n'
            '    importlib.import_module(name)\n'
            '  except Exception:\n'
            '    bad.append(name + ": " + traceback.format_exc().strip().splitlines()[-1])\n'
            '  after = os.umask(0o022); os.umask(after)\n'
            '  if after != before:\n'
            '    bad.append(f"{name}: changed the umask from {before:o} to {after:o}")\n'
            'print("\\n".join(bad))\n'
            'sys.exit(1 if bad else 0)\n')
  r = _fresh(script, *sorted(MODULES))
  assert r.returncode == 0, r.stdout + r.stderr[-3000:]


def test_importing_the_package_mounts_its_directories_and_nothing_else():
  r = _fresh('import sys, dsr_jax\nprint(sorted(m for m in sys.modules if m.split(".")[0] == "dsr_jax"))')
  assert r.returncode == 0, r.stderr[-3000:]
  assert r.stdout.strip() == str(['dsr_jax', 'dsr_jax.configs', 'dsr_jax.input_pipeline']), r.stdout


def test_modules_import_here_too():
  for name in sorted(MODULES):
    importlib.import_module(name)
