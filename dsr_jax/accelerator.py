"""One command for a bare GPU or TPU machine that has this checkout, a data directory and its own jax.

  bash colab/run_accelerator.sh CONFIG WORKDIR OUTDIR [BUDGET_MIN] [options]
  python -m dsr_jax.accelerator --config CONFIG --workdir WORKDIR --output OUTDIR [--budget MIN] [options]

1. installs the requirements the machine lacks, keeping its jax (pinned while pip runs, so that nothing
   replaces the accelerator build) and leaving out TensorFlow and TensorBoard, which training does not need
   (dsr_jax/writers.py);
2. checks that jax sees an accelerator (on CPU it stops, unless --allow-cpu);
3. trains CONFIG in WORKDIR under train.time_budget=MIN (counted from the training process's start; 0 = the
   config's own); a run that stops on its budget is a success, and the same command with a larger budget
   resumes it exactly;
4. evaluates the best checkpoint on Middlebury 2005 when the data directory has it (a line says why not
   otherwise);
5. exports DSRNet's weights (python -m dsr_jax.export);
6. writes into OUTDIR: console.log (everything printed, appended run after run), eval/ (the eval JSON and
   report), dsrnet/ (the export) and summary.md.

Every step runs in its own process, so this one never holds the accelerator. Status: 0 when training
finished or stopped on its budget (a skipped evaluation included), else the failing step's status.
"""
import argparse
import datetime
import glob
import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
# The steps run in the checkout (where `python -m dsr_jax.*` finds this one); from a wheel, where the caller is.
STEP_CWD = REPO if (REPO / 'configs').is_dir() else None
# Training writes its metrics to metrics.jsonl without these (writers.py); eval and export never import them.
NOT_NEEDED = ('tensorflow-cpu', 'tensorflow', 'tensorboard')
EVAL_DATASET = 'middlebury2005'


class Console:
  """Prints and appends to OUTDIR/console.log: the one record of what the command did."""

  def __init__(self, path: pathlib.Path):
    self._f = open(path, 'a', encoding='utf-8')  # pylint: disable=consider-using-with

  def say(self, line: str = ''):
    print(line, flush=True)
    self._f.write(line + '\n')
    self._f.flush()

  def close(self):
    self._f.close()


_child = None


def _forward_sigterm(signum, frame):
  del frame
  # A preemption notice sent to this process reaches the training run, which saves its step and exits 0.
  if _child is not None and _child.poll() is None:
    _child.send_signal(signum)


def run(console: Console, cmd: list, env=None, label: str = '') -> tuple[int, list, float]:
  """Runs `cmd` in the checkout, its output streamed to the console; (status, output lines, seconds)."""
  global _child
  console.say(f'$ {label or " ".join(shlex.quote(c) for c in cmd)}')
  t0 = time.time()
  lines = []
  _child = subprocess.Popen(cmd, cwd=STEP_CWD, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
  try:
    for line in _child.stdout:
      line = line.rstrip('\n')
      lines.append(line)
      console.say(line)
    status = _child.wait()
  finally:
    _child = None
  return status, lines, time.time() - t0


# ---------------------------------------------------------------- 1. install


def _requirements() -> list[str]:
  """The checkout's requirements.txt, else the installed dsr_jax's (a wheel)."""
  path = REPO / 'requirements.txt'
  if path.is_file():
    out = []
    for line in path.read_text().splitlines():
      line = line.split('#', 1)[0].strip()
      if line and not line.startswith('-'):
        out.append(line)
    return out
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  return list(metadata.requires('dsr_jax') or [])


def missing_requirements() -> list[str]:
  """What the machine lacks of the requirements, less jax (the machine's own) and TensorFlow/TensorBoard."""
  from packaging.requirements import Requirement  # pylint: disable=g-import-not-at-top
  from dsr_jax import notebook  # pylint: disable=g-import-not-at-top
  out = []
  for req in map(Requirement, _requirements()):
    name = notebook._canon(req.name)  # pylint: disable=protected-access
    if not notebook._applies(req) or name in notebook._KEEP or name in NOT_NEEDED:  # pylint: disable=protected-access
      continue
    version = notebook._installed(req.name)  # pylint: disable=protected-access
    if version is None or not req.specifier.contains(version, prereleases=True):
      out.append(str(req))
  return out


def _kept_pins() -> list[str]:
  """'name==version' of every installed jax distribution (jax, jaxlib, CUDA/ROCm plugins, libtpu)."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  pins = set()
  for dist in metadata.distributions():
    name = (dist.metadata['Name'] or '').lower().replace('_', '-')
    if name in ('jax', 'jaxlib', 'libtpu', 'libtpu-nightly') or name.startswith(('jax-cuda', 'jax-rocm')):
      pins.add(f'{name}=={dist.version}')
  return sorted(pins)


def install(console: Console, outdir: pathlib.Path) -> int:
  try:
    import packaging  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    status, _, _ = run(console, [sys.executable, '-m', 'pip', 'install', '-q', 'packaging'])
    if status:
      return status
  missing = missing_requirements()
  if not missing:
    console.say('install: every requirement is already installed (TensorFlow and TensorBoard are not needed; '
                'the machine keeps its jax)')
    return 0
  pins = _kept_pins()
  constraints = outdir / 'keep-jax-constraints.txt'
  constraints.write_text(''.join(p + '\n' for p in pins))
  console.say(f'install: {" ".join(missing)} (keeping {", ".join(pins) or "no jax yet"})')
  status, _, _ = run(console, [sys.executable, '-m', 'pip', 'install', '-q', '-c', str(constraints), *missing])
  if status:
    console.say(f'error: pip could not install {" ".join(missing)} next to {", ".join(pins)} (status {status}); '
                'a package may need a newer jax than the machine has: pin an older version of it')
  return status


# ---------------------------------------------------------------- 2. the accelerator

_PROBE = r'''
import json, sys
from dsr_jax import notebook
import jax
devices = jax.devices()
print(json.dumps({"backend": jax.default_backend(), "devices": len(devices), "kind": devices[0].device_kind,
                  "jax": jax.__version__, "problems": notebook.runtime_problems()}))
'''


def probe(console: Console, env) -> dict | None:
  """What jax sees, asked in a process of its own (this one must not hold the accelerator's memory)."""
  status, lines, _ = run(console, [sys.executable, '-c', _PROBE], env, label='python -c <what jax sees>')
  found = [l for l in lines if l.startswith('{')]
  if status or not found:
    console.say(f'error: jax could not start (status {status}); see the lines above')
    return None
  return json.loads(found[-1])


# ---------------------------------------------------------------- summary


def _first(lines, prefix):
  return next((l for l in reversed(lines) if l.startswith(prefix)), '')


def write_summary(outdir: pathlib.Path, facts: dict) -> pathlib.Path:
  """A short summary.md: what ran where, what it reached, and where everything is."""
  rows = [f'# dsr_jax accelerator run, {facts["when"]}', '',
          f'Command: `{facts["command"]}`', '']
  dev = facts.get('device')
  if dev:
    rows.append(f'- Machine: jax {dev["jax"]}, {dev["devices"]} {dev["backend"]} device(s) ({dev["kind"]})')
  rows.append(f'- Config: `{facts["config"]}`' + (f', overrides {" ".join(facts["overrides"])}'
                                                   if facts['overrides'] else ''))
  model = facts.get('model')
  if model:
    rows.append(f'- Network: {model}')
  budget = f'{facts["budget"]:g} min' if facts['budget'] else 'none'
  rows.append(f'- Training ({facts["times"].get("train", 0) / 60:.1f} min, budget {budget}): '
              f'{facts.get("train", "not run")}')
  rows.append(f'- Middlebury 2005: {facts.get("eval", "not run")}')
  rows.append(f'- Export: {facts.get("export", "not run")}')
  rows.append(f'- Workdir: `{facts["workdir"]}` (checkpoints, metrics.jsonl or TensorBoard files)')
  rows.append(f'- To go on: {facts["resume"]}')
  rows += ['', 'Files here: `console.log` (everything printed), `eval/` (eval JSON and report), `dsrnet/` '
           '(the export), this summary.', '',
           'Wall time: ' + ', '.join(f'{k} {v:.0f} s' for k, v in facts['times'].items()), '']
  path = outdir / 'summary.md'
  path.write_text('\n'.join(rows))
  return path


# ---------------------------------------------------------------- the command


def parse_args(argv):
  from dsr_jax.errors import ArgumentParser  # pylint: disable=g-import-not-at-top
  p = ArgumentParser(prog='python -m dsr_jax.accelerator', description=__doc__.splitlines()[0])
  p.add_argument('--config', required=True, help='training config: a file (configs/paper.py) or a name (paper)')
  p.add_argument('--workdir', required=True, help='training directory (an existing run there is resumed)')
  p.add_argument('--output', required=True, help='directory for the console log, eval JSON, export, summary.md')
  p.add_argument('--budget', type=float, default=0.0,
                 help='train.time_budget in minutes, from the training process\'s start (0: the config\'s)')
  p.add_argument('--data_dir', default='', help='the data directory (default: $DSR_DATA_DIR)')
  p.add_argument('--set', action='append', default=[], metavar='FIELD=VALUE',
                 help='a training config override, e.g. --set model.use_denet=False (repeatable)')
  p.add_argument('--allow-cpu', action='store_true', help='go on when jax sees only the CPU (tests, a dry run)')
  p.add_argument('--no-install', action='store_true', help='skip the install step')
  p.add_argument('--no-eval-images', action='store_true', help='eval writes its JSON and report only')
  a = p.parse_args(argv)
  if not (a.budget >= 0 and a.budget != float('inf')):
    p.error(f'--budget {a.budget}: expected a finite number of minutes >= 0')
  for s in a.set:
    if '=' not in s:
      p.error(f'--set {s!r}: expected FIELD=VALUE')
  return a


def _config_path(config: str) -> str:
  """A config file given relative to the caller's directory, made absolute (the steps run in the checkout);
  an installed config's name, or a path relative to the checkout, as given."""
  path, sep, arg = config.partition(':')
  return os.path.abspath(os.path.expanduser(path)) + sep + arg if os.path.isfile(path) else config


def main(argv=None) -> int:
  a = parse_args(sys.argv[1:] if argv is None else argv)
  a.config = _config_path(a.config)
  outdir = pathlib.Path(a.output).expanduser().absolute()
  workdir = pathlib.Path(a.workdir).expanduser().absolute()
  try:
    outdir.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    print(f'error: --output {outdir}: {e.strerror}', file=sys.stderr)
    return 2
  console = Console(outdir / 'console.log')
  signal.signal(signal.SIGTERM, _forward_sigterm)
  command = 'python -m dsr_jax.accelerator ' + ' '.join(shlex.quote(x) for x in (sys.argv[1:] if argv is None
                                                                                 else argv))
  facts = {'when': datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z'), 'command': command,
           'config': a.config, 'overrides': [f'--config.{s}' for s in a.set], 'budget': a.budget,
           'workdir': str(workdir), 'times': {},
           'resume': 'run the same command again (a larger budget resumes the training exactly)'}
  console.say(f'== {facts["when"]}: {command}')
  env = dict(os.environ)
  data_dir = a.data_dir or env.get('DSR_DATA_DIR', '')
  if data_dir:
    env['DSR_DATA_DIR'] = os.path.abspath(os.path.expanduser(data_dir))
  try:
    return _steps(a, console, env, facts, outdir, workdir)
  finally:
    path = write_summary(outdir, facts)
    console.say(f'summary: {path}')
    console.close()


def _steps(a, console, env, facts, outdir, workdir) -> int:
  t0 = time.time()
  if not a.no_install:
    status = install(console, outdir)
    facts['times']['install'] = time.time() - t0
    if status:
      facts['train'] = f'not run: the install failed (status {status})'
      return status

  t0 = time.time()
  dev = probe(console, env)
  facts['times']['check'] = time.time() - t0
  if dev is None:
    facts['train'] = 'not run: jax could not start'
    return 2
  facts['device'] = dev
  if dev['problems']:
    for problem in dev['problems']:
      console.say(f'error: {problem}')
    facts['train'] = 'not run: ' + '; '.join(dev['problems'])
    return 2
  if dev['backend'] == 'cpu':
    if not a.allow_cpu:
      console.say('error: jax sees no accelerator, only the CPU (on a GPU or TPU machine: the accelerator '
                  'build of jax is missing; pass --allow-cpu to train on the CPU anyway)')
      facts['train'] = 'not run: no accelerator (pass --allow-cpu to use the CPU)'
      return 2
    console.say('warning: jax sees no accelerator; training on the CPU, as --allow-cpu asks (slow)')
  else:
    console.say(f'accelerator: {dev["devices"]} {dev["backend"]} device(s) ({dev["kind"]}), jax {dev["jax"]}')

  # 3. train
  cmd = [sys.executable, '-m', 'dsr_jax.main', '--config', a.config, '--workdir', str(workdir)]
  if a.budget:
    cmd.append(f'--config.train.time_budget={a.budget:g}')
  cmd += facts['overrides']
  status, lines, took = run(console, cmd, env)
  facts['times']['train'] = took
  stopped = _first(lines, 'stopped on its time budget')
  done = _first(lines, 'done: ')
  if status:
    error = _first(lines, 'error: ') or f'status {status}'
    facts['train'] = f'failed: {error}'
    facts['resume'] = 'fix what the error names, then run the same command (it resumes from the last checkpoint)'
    return status
  if stopped:
    facts['train'] = stopped.split('; checkpoints:')[0]
  elif done:
    facts['train'] = done
    facts['resume'] = 'nothing: training is complete (the same command evaluates and exports it again)'
  else:
    facts['train'] = _first(lines, 'preempted') or 'ended without a summary line'

  # 4. evaluate the best checkpoint
  t0 = time.time()
  root = env.get('DSR_DATA_DIR', '')
  eval_dir = outdir / 'eval'
  if not root:
    facts['eval'] = 'skipped: no data directory (--data_dir or $DSR_DATA_DIR)'
  elif not (pathlib.Path(root) / EVAL_DATASET).is_dir():
    facts['eval'] = f'skipped: {pathlib.Path(root) / EVAL_DATASET} does not exist'
  else:
    if eval_dir.is_dir():
      import shutil  # pylint: disable=g-import-not-at-top
      shutil.rmtree(eval_dir)  # this command's previous report: its best checkpoint may have moved on
    cmd = [sys.executable, '-m', 'dsr_jax.main', '--config', f'eval:{EVAL_DATASET}',
           '--workdir', str(outdir), f'--config.eval.checkpoint_dir={workdir}']
    if a.no_eval_images:
      cmd.append('--config.eval.images=False')
    status, lines, _ = run(console, cmd, env)
    reports = sorted(glob.glob(str(eval_dir / f'{EVAL_DATASET}_x*.json')))
    if status or not reports:
      facts['eval'] = f'failed: {_first(lines, "error: ") or f"status {status}"}'
    else:
      with open(reports[0]) as f:
        result = json.load(f)
      m, b = result['mean'], result.get('bicubic', {}).get('mean', {})
      facts['eval'] = (f'x{result["scale"]}, {result["images"]} images, MAD {m.get("mad", float("nan")):.4f} '
                       f'(bicubic {b.get("mad", float("nan")):.4f}), step {result["step"]}: `{reports[0]}`')
      facts['model'] = f'{result["model"]}, dtype {result.get("dtype")}, bp_impl {result.get("bp_impl")}'
  if facts['eval'].startswith('skipped'):
    console.say(f'eval: {facts["eval"]}')
  facts['times']['eval'] = time.time() - t0

  # 5. export DSRNet
  t0 = time.time()
  cmd = [sys.executable, '-m', 'dsr_jax.export', '--checkpoint', str(workdir), '--output', str(outdir / 'dsrnet'),
         '--overwrite']
  status, lines, _ = run(console, cmd, env)
  facts['times']['export'] = time.time() - t0
  if status:
    facts['export'] = f'failed: {_first(lines, "error: ") or f"status {status}"}'
    return status
  facts['export'] = _first(lines, 'exported') or 'written'
  if 'model' not in facts:  # no eval to say it: the export's config does
    for meta in glob.glob(str(outdir / 'dsrnet' / '*' / 'config' / 'metadata')):
      with open(meta) as f:
        m = json.load(f).get('model', {})
      facts['model'] = f'{m.get("name")}, dtype {m.get("dtype")}, bp_impl {m.get("bp_impl")}'
  return 0


if __name__ == '__main__':
  sys.exit(main())
