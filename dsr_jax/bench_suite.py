"""Every throughput row of BENCHMARKS.md in one call: `python -m dsr_jax.bench_suite --out DIR`.

Meant for a lent accelerator, where device time is short: it measures the machine's two ceilings (a large
matrix product, a large device-to-device copy), then runs each `python -m dsr_jax.bench ...` row in a fresh
process, writes every JSON line to DIR/suite.json as it goes (a row that fails is recorded, not fatal) and
prints a short table last. `--tiny` runs the same rows on toy shapes (the test suite does, on CPU).
"""
import json
import os
import signal
import subprocess
import sys
import time

from dsr_jax import errors

# (name, bench arguments) at the paper's sizes, the CPU rows' shapes where both exist, so that ratios can be set
# side by side.
PAPER = ['--scale', '4', '--stages', '4', '--channels', '64', '--feat', '256', '--de-blocks', '2',
         '--affinity-pool', '32']
# In priority order: a lease cut short (--budget) keeps the rows that answer most. torch.compile's row is last,
# since its compile alone takes minutes.
ROWS = [
    ('train_vs_eager_b4', ['compare', 'train', *PAPER, '--batch', '4', '--hr', '128', '--iters', '20',
                           '--rounds', '2']),
    ('train_f32_b16', ['train', *PAPER, '--batch', '16', '--hr', '128', '--iters', '20']),
    ('train_bf16_b16', ['train', *PAPER, '--batch', '16', '--hr', '128', '--iters', '20', '--dtype', 'bfloat16']),
    ('infer_x8_1080x1320', ['infer', *PAPER[2:], '--scale', '8', '--hr-hw', '1080x1320', '--batch', '1',
                            '--iters', '50']),
    ('infer_x8_1080x1320_bf16', ['infer', *PAPER[2:], '--scale', '8', '--hr-hw', '1080x1320', '--batch', '1',
                                 '--iters', '50', '--dtype', 'bfloat16']),
    ('train_vs_eager_b16', ['compare', 'train', *PAPER, '--batch', '16', '--hr', '128', '--iters', '20',
                            '--rounds', '2']),
    ('infer_vs_eager_x8_512', ['compare', 'infer', *PAPER[2:], '--scale', '8', '--hr', '512', '--batch', '1',
                               '--iters', '20', '--rounds', '2']),
    ('bf16_tracking_500', ['bf16', *PAPER, '--batch', '8', '--hr', '128', '--steps', '500']),
    ('train_vs_compile_b4', ['compare', 'train', *PAPER, '--batch', '4', '--hr', '128', '--iters', '20',
                             '--rounds', '2', '--peer-compile']),
]
TINY = {'--channels': '4', '--feat': '8', '--de-blocks': '1', '--affinity-pool': '4', '--batch': '2',
        '--hr': '16', '--hr-hw': '16x24', '--iters': '2', '--rounds': '1', '--steps': '4', '--stages': '2'}


def tiny(args: list[str]) -> list[str]:
  out = list(args)
  for i, a in enumerate(out[:-1]):
    if a in TINY:
      out[i + 1] = TINY[a]
  if '--scale' in out:
    out[out.index('--scale') + 1] = '2'
  return [a for a in out if a != '--peer-compile']  # torch.compile takes minutes even on toy shapes


def ceilings(tiny_run: bool) -> dict:
  """Best-of-5 large matmul (float32, bfloat16) and device-to-device copy on the default device.

  The float32 matmul runs at JAX's default precision, as the train step does: on recent NVIDIA GPUs that
  may use TF32 tensor cores, so it is the ceiling for our float32 step, not for IEEE float32 arithmetic.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  n = 256 if tiny_run else 8192
  out = {'device': str(jax.devices()[0].device_kind), 'platform': jax.devices()[0].platform}

  def best(fn, *xs):
    jax.block_until_ready(fn(*xs))
    times = []
    for _ in range(5):
      t = time.perf_counter()
      jax.block_until_ready(fn(*xs))
      times.append(time.perf_counter() - t)
    return min(times)
  for dt in ('float32', 'bfloat16'):
    k = jax.random.split(jax.random.key(0))
    a = jax.random.normal(k[0], (n, n), dt)  # random, not zeros: zeros can run faster than real data
    b = jax.random.normal(k[1], (n, n), dt)
    out[f'matmul_{dt}_tflops'] = 2 * n ** 3 / best(jax.jit(jnp.matmul), a, b) / 1e12
  x = jax.random.normal(jax.random.key(1), ((1 << 16) if tiny_run else (1 << 28),), jnp.float32)
  out['copy_gb_per_s'] = 2 * x.nbytes / best(jax.jit(lambda v: v * 1.0000001), x) / 1e9  # read + write
  return out


def run_row(name: str, args: list[str], timeout: int, by_budget: bool, env: dict, out: str) -> dict:
  """One `python -m dsr_jax.bench` row in a fresh process: its JSON, or {'error': ...}; its stderr's tail (the
  why of an error) goes to <out>/suite.log."""
  t = time.perf_counter()
  # A session of its own, so that a timeout ends the whole row: compare's and the FLOP count's children too,
  # which on a GPU would otherwise keep their preallocated memory into the next row.
  proc = subprocess.Popen([sys.executable, '-m', 'dsr_jax.bench', *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
  try:
    stdout, stderr = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    cut = ' (--budget)' if by_budget else ''
    return {'error': f'timed out after {timeout} s{cut}', 'suite_wall_s': time.perf_counter() - t}
  lines = [l for l in stdout.splitlines() if l.startswith('{')]
  res = json.loads(lines[-1]) if (proc.returncode == 0 and lines) else {
      'error': (stderr.strip().splitlines() or ['no output'])[-1][:300], 'rc': proc.returncode}
  with open(os.path.join(out, 'suite.log'), 'a') as f:
    f.write(f'=== {name} (rc {proc.returncode})\n' + '\n'.join(stderr.splitlines()[-40:]) + '\n')
  res['suite_wall_s'] = time.perf_counter() - t
  return res


def main(argv=None) -> int:
  p = errors.ArgumentParser(prog='python -m dsr_jax.bench_suite', description=__doc__.splitlines()[0])
  p.add_argument('--out', required=True, help='directory for suite.json')
  p.add_argument('--tiny', action='store_true', help='toy shapes (a smoke test of the suite itself)')
  p.add_argument('--only', default='', help='comma-separated row names (default: all)')
  p.add_argument('--timeout', type=errors.positive_int, default=900, help='seconds per row')
  p.add_argument('--budget', type=errors.positive_int, default=0,
                 help='seconds for the whole suite (0 = none): a row gets at most what is left, and the rows '
                      'after it are recorded as skipped, so a lease ends with suite.json written')
  p.add_argument('--peer', default='', help='path of torch_ctkt.py for the compare rows (default: bench\'s, '
                 'beside the checkout; a device machine gets only the checkout, so pass a carried copy there)')
  p.add_argument('--compile-cache', default='',
                 help="a JAX persistent compilation cache shared by the rows' fresh processes: rows and rounds "
                      'of the same shapes then compile once. Their compile_s is then a cache load')
  a = p.parse_args(argv)
  only = [n for n in a.only.split(',') if n]
  unknown = [n for n in only if n not in (r[0] for r in ROWS)]
  if unknown:
    p.error(f'--only {",".join(unknown)}: unknown row (expected some of {", ".join(r[0] for r in ROWS)})')
  if a.peer and not os.path.isfile(a.peer):
    p.error(f'--peer {a.peer}: no such file (expected the path of torch_ctkt.py)')
  start = time.perf_counter()
  os.makedirs(a.out, exist_ok=True)
  path = os.path.join(a.out, 'suite.json')
  env = dict(os.environ)
  if a.compile_cache:
    # Read by jax at import in each child; a zero threshold caches every compile, not only slow ones.
    env.update(JAX_COMPILATION_CACHE_DIR=os.path.abspath(a.compile_cache),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0', JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  results = {'ceilings': ceilings(a.tiny), 'compile_cache': bool(a.compile_cache), 'rows': {}}
  for name, args in (r for r in ROWS if not only or r[0] in only):
    args = tiny(args) if a.tiny else args
    if a.peer and args[0] == 'compare':
      args = [*args, '--peer', a.peer]
    timeout = a.timeout
    if a.budget:
      timeout = min(timeout, int(a.budget - (time.perf_counter() - start)))
    if timeout < 1:
      res = {'skipped': f'--budget {a.budget} s spent'}
    else:
      res = run_row(name, args, timeout, timeout < a.timeout, env, a.out)
    res['command'] = 'python -m dsr_jax.bench ' + ' '.join(args)
    results['rows'][name] = res
    print(f'{name}: {res.get("error") or res.get("skipped") or "done"} ({res.get("suite_wall_s", 0):.0f} s)',
          flush=True)
    with open(path, 'w') as f:  # after every row: a cut-off run keeps what it measured
      json.dump(results, f, indent=1)
  c = results['ceilings']
  print(f"{c['device']}: matmul f32 {c['matmul_float32_tflops']:.3g} TFLOP/s, bf16 "
        f"{c['matmul_bfloat16_tflops']:.3g} TFLOP/s, copy {c['copy_gb_per_s']:.3g} GB/s")
  for name, r in results['rows'].items():
    if 'skipped' in r:
      print(f'{name:24s} skipped ({r["skipped"]})')
    elif 'error' in r:
      print(f'{name:24s} ERROR {r["error"]}')
    elif 'ratio' in r:
      print(f"{name:24s} ours/peer {r['ratio']:.3f}  "
            f"({r['ours_images_per_s']:.3g} vs {r['peer_images_per_s']:.3g} img/s)")
    elif r.get('mode') == 'bf16':
      print(f"{name:24s} max rel dev {r['max_rel_dev']:.4f}  tracks={r['tracks']}")
    else:
      mfu = f"  mfu {r['mfu']:.3f}" if r.get('mfu') else ''
      print(f"{name:24s} {r['step_s'] * 1e3:.2f} ms/step  {r['images_per_s']:.3g} img/s{mfu}")
  print(f'all numbers: {path}')
  return 0 if all('error' not in r and 'skipped' not in r for r in results['rows'].values()) else 1


if __name__ == '__main__':
  sys.exit(main())
