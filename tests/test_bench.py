"""`python -m dsr_jax.bench ...` on tiny shapes: the JSON it prints and its one-line errors."""
import importlib.util
import json
import pathlib

import numpy as np
import pytest

from dsr_jax import bench
from dsr_jax import bench_train


@pytest.fixture(autouse=True)
def _fast_xla_here_and_in_children(fast_xla, monkeypatch):
  """Most XLA optimisations off, in this process (fast_xla) and in the `python -m dsr_jax.bench` children of
  compare and the suite (the env var, read when they import jax). Nothing here checks a speed: the JSON's
  fields, the flags each side receives, bf16 against float32 (both compiled alike) and the error lines are
  what they are at any optimisation level; only the compiles get 2-3x cheaper."""
  monkeypatch.setenv('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')

TINY = ['--scale', '2', '--stages', '2', '--channels', '4', '--feat', '8', '--de-blocks', '1',
        '--affinity-pool', '4', '--batch', '2', '--hr', '16', '--iters', '2']


def _run(capsys, argv):
  status = bench.main(argv)
  out, err = capsys.readouterr()
  return status, out, err


def test_train_step_json(capsys, tmp_path):
  status, out, _ = _run(capsys, ['train', *TINY, '--profile', str(tmp_path / 'trace')])
  assert status == 0
  r = json.loads(out)
  assert r['mode'] == 'train' and r['phase'] == 'dsr_student' and r['device'].startswith('cpu')
  assert r['step_s'] > 0 and r['images_per_s'] == pytest.approx(2 / r['step_s'])
  assert r['flops'] > 0 and r['flops_compiled'] > 0 and r['compile_s'] > 0 and r['cpu_convs'] == 'eigen'
  assert r['mfu'] is None  # no known peak on CPU
  assert set(r['params']) == {'dsr', 'denet', 'spnet'}
  assert list((tmp_path / 'trace').rglob('*.trace.json.gz'))
  assert 5 <= len(r['top_ops']) <= 15 and all(o['ms_per_call'] >= 0 for o in r['top_ops'])
  assert not any(o['op'].startswith('$') for o in r['top_ops'])  # XLA ops, not Python frames


def test_train_dsr_only(capsys):
  """The DSRNet-alone step (configs/cpu_real.py:x4,wo_ct): DENet and SPNet are not built at all."""
  status, out, _ = _run(capsys, ['train', *TINY, '--phase', 'dsr_only', '--side-weight', '0.5'])
  assert status == 0
  r = json.loads(out)
  assert r['phase'] == 'dsr_only' and list(r['params']) == ['dsr'] and r['side_weight'] == 0.5
  assert r['step_s'] > 0 and r['flops'] > 0


def test_parts_of_the_dsr_only_step(capsys):
  status, out, _ = _run(capsys, ['parts', *TINY])
  assert status == 0
  r = json.loads(out)
  assert r['phase'] == 'dsr_only' and r['rounds'] == 2
  assert set(r['median_s']) == {'step', 'fwd', 'fwd_no_sides', 'fwd_bwd', 'fwd_bwd_no_sides', 'adam', 'bicubic'}
  assert all(t > 0 for t in r['median_s'].values()) and r['share_of_step']['step'] == 1.0
  assert set(r['derived_s']) == {'backward', 'side_heads_fwd', 'side_heads_fwd_bwd', 'adam_and_bookkeeping'}


def test_flops_only_counts_the_unoptimised_step(capsys):
  """--flops-only lowers without compiling; its count is the one a full run reports as `flops`, and the CPU
  subprocess that a plugin backend (CUDA) falls back on gives the same number."""
  status, out, _ = _run(capsys, ['train', *TINY, '--flops-only'])
  assert status == 0
  only = json.loads(out)
  assert 'step_s' not in only and only['flops'] > 0
  # --no-cpu-flops (what compare gives its own side) only skips the CPU fallback; on CPU no fallback is needed.
  status, out, _ = _run(capsys, ['train', *TINY, '--no-cpu-flops'])
  assert status == 0 and json.loads(out)['flops'] == only['flops']
  import argparse  # pylint: disable=g-import-not-at-top
  assert bench_train.flops_on_cpu(argparse.Namespace(argv=['train', *TINY])) == only['flops']


def test_infer_non_square(capsys):
  status, out, _ = _run(capsys, ['infer', *TINY, '--hr-hw', '16x24', '--cpu-convs', 'ynnpack'])
  assert status == 0
  r = json.loads(out)
  assert r['hr_hw'] == [16, 24] and r['cpu_convs'] == 'ynnpack' and r['step_s'] > 0


@pytest.mark.parametrize('value', ['16x25', '16by24'])
def test_bad_hr_hw_is_one_line(capsys, value):
  status, out, err = _run(capsys, ['infer', *TINY, '--hr-hw', value])
  assert status == 2 and not out
  assert err.count('\n') == 1 and '--hr-hw' in err and value in err


@pytest.mark.parametrize('argv', [['infer', '--batch', '0'], ['dsrnet', '--iters', '0'],
                                  ['compare', 'train', '--rounds', 'x'], ['pipeline', '--iters', '-1']])
def test_non_positive_counts_are_one_line(capsys, argv):
  with pytest.raises(SystemExit) as e:  # argparse refuses them before anything runs
    bench.main(argv)
  err = capsys.readouterr().err
  assert e.value.code == 2 and err.count('\n') == 1
  assert err.startswith('error: argument ') and 'expected a positive integer' in err


def test_bf16_tracks_float32_on_a_short_run(capsys):
  status, out, _ = _run(capsys, ['bf16', *TINY, '--steps', '5'])
  assert status == 0
  r = json.loads(out)
  assert r['phase'] == 'stage1'
  f32, b16 = np.array(r['curves']['float32']), np.array(r['curves']['bfloat16'])
  assert f32.shape == b16.shape == (5,) and np.all(np.isfinite(f32)) and np.all(np.isfinite(b16))
  assert not np.array_equal(f32, b16)  # the bf16 path really computes in bf16
  assert r['max_rel_dev'] < 0.05 and r['tracks']


@pytest.mark.skipif(importlib.util.find_spec('torch') is None or not pathlib.Path(bench.PEER).exists(),
                    reason='torch or ../shared/peers/torch_ctkt.py not available')
def test_compare_against_the_peer(capsys):
  # 'train' only: 'infer' goes through the same code with a different mode string (and costs ~15 s more).
  # The first version's flags, to check that both sides receive them.
  v1 = ['--teacher-update', 'frozen', '--affinity', 'raw', '--side-weight', '0', '--no-detach-uncertainty']
  status, out, _ = _run(capsys, ['compare', 'train', *TINY, '--rounds', '1', *v1])
  assert status == 0
  r = json.loads(out)
  assert r['ours']['impl'] == 'jax' and r['peer']['impl'] == 'torch'
  assert r['peer']['batch'] == r['ours']['batch'] == 2 and r['peer']['hr'] == r['ours']['hr'] == 16
  assert r['ratio'] == pytest.approx(r['ours_images_per_s'] / r['peer_images_per_s'])
  for side in ('ours', 'peer'):
    assert r[side]['teacher_update'] == 'frozen' and r[side]['affinity'] == 'raw', side
  assert r['ours']['side_weight'] == 0 and not r['ours']['detach_uncertainty']
  assert r['ours']['params'] == r['peer']['params']


@pytest.mark.skipif(importlib.util.find_spec('torch') is None or not pathlib.Path(bench.PEER).exists(),
                    reason='torch or ../shared/peers/torch_ctkt.py not available')
def test_compare_dsr_alone_against_the_peer(capsys):
  """compare --mode train_dsr (the peer's spelling) times our dsr_only step against the peer's train_dsr."""
  status, out, _ = _run(capsys, ['compare', '--mode', 'train_dsr', *TINY, '--rounds', '1', '--side-weight', '0.5'])
  assert status == 0
  r = json.loads(out)
  assert r['mode'] == 'train_dsr' and r['ours']['phase'] == 'dsr_only' and r['peer']['mode'] == 'train_dsr'
  assert r['ours']['side_weight'] == 0.5
  assert r['peer']['batch'] == r['ours']['batch'] == 2 and r['peer']['hr'] == r['ours']['hr'] == 16
  assert r['ours']['params'] == {'dsr': r['peer']['params']['dsr']}
  assert r['ratio'] == pytest.approx(r['ours_images_per_s'] / r['peer_images_per_s'])


@pytest.mark.parametrize('argv', [['compare'], ['compare', 'train', '--mode', 'train_dsr']])
def test_compare_needs_one_mode(capsys, argv):
  status, out, err = _run(capsys, argv)
  assert status == 2 and not out and err.count('\n') == 1 and 'expected one mode' in err


@pytest.mark.skipif(importlib.util.find_spec('torch') is None or not pathlib.Path(bench.PEER).exists(),
                    reason='torch or ../shared/peers/torch_ctkt.py not available')
@pytest.mark.parametrize('teacher_input', ['rgb', 'rgbd'])
def test_params_equal_the_peer(capsys, teacher_input):
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  status, out, _ = _run(capsys, ['params', '--teacher-input', teacher_input])  # the peer's default sizes
  assert status == 0
  ours = json.loads(out)['params']
  r = subprocess.run([sys.executable, bench.PEER, '--mode', 'infer', '--teacher-input', teacher_input, '--hr', '32',
                      '--iters', '1', '--stages', '4'], capture_output=True, text=True, check=True, timeout=300)
  assert ours == json.loads(r.stdout.splitlines()[-1])['params']


def test_suite_smoke(tmp_path, capsys):
  from dsr_jax import bench_suite
  status = bench_suite.main(['--out', str(tmp_path), '--tiny', '--only', 'infer_x8_1080x1320'])
  out = capsys.readouterr().out
  assert status == 0, out
  r = json.loads((tmp_path / 'suite.json').read_text())
  assert r['ceilings']['matmul_float32_tflops'] > 0 and r['ceilings']['copy_gb_per_s'] > 0
  row = r['rows']['infer_x8_1080x1320']
  assert row['hr_hw'] == [16, 24] and row['scale'] == 2 and row['step_s'] > 0
  assert 'infer_x8_1080x1320' in out and 'ms/step' in out


def test_suite_budget_peer_and_cache(tmp_path, capsys):
  """A spent --budget records the remaining rows as skipped (and exits 1) instead of running past a lease; a
  missing --peer and an unknown --only row are one-line errors; the compile cache is shared with the rows."""
  from dsr_jax import bench_suite
  status = bench_suite.main(['--out', str(tmp_path), '--tiny', '--budget', '1', '--compile-cache',
                             str(tmp_path / 'cache'), '--only', 'infer_x8_1080x1320,train_f32_b16'])
  out = capsys.readouterr().out
  r = json.loads((tmp_path / 'suite.json').read_text())
  assert status == 1 and r['compile_cache'] is True
  assert 'skipped' in r['rows']['train_f32_b16'] and 'train_f32_b16' in out and 'skipped' in out
  # A row past its timeout is ended (its process group with it) and recorded, and the suite goes on.
  status = bench_suite.main(['--out', str(tmp_path / 't'), '--tiny', '--timeout', '1', '--only', 'infer_x8_1080x1320'])
  capsys.readouterr()
  row = json.loads((tmp_path / 't' / 'suite.json').read_text())['rows']['infer_x8_1080x1320']
  assert status == 1 and row['error'] == 'timed out after 1 s'
  for argv, what in ((['--peer', str(tmp_path / 'nope.py')], '--peer'), (['--only', 'warp_drive'], '--only')):
    with pytest.raises(SystemExit) as e:
      bench_suite.main(['--out', str(tmp_path), '--tiny', *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and what in err[-1]


def test_suite_rows_parse():
  """Every row's arguments are accepted by the bench parser (full size and tiny)."""
  from dsr_jax import bench_suite
  for _, args in bench_suite.ROWS:
    for argv in (args, bench_suite.tiny(args)):
      bench.build_parser().parse_args(argv)  # exits (fails the test) on an unknown flag or bad value
