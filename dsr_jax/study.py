"""Does cross-task transfer help? The seeded study: `python -m dsr_jax.study --rows A,D --seeds 0,1,2`.

Every row trains `configs/cpu_real.py:x<scale>` (same data, crops, steps and DSRNet size) with the row's
overrides, keeps the best checkpoint by validation MAD on the held-out middlebury_lu images, and is scored
on the Middlebury 2005 benchmark. Each finished run stores, under `<out>/<row>_s<seed>/`:

  config.json                 the training config as run
  result.json                 validation MADs, wall time, the benchmark's mean and per-scene metrics, and the
                              gradient diagnostics (mean over stage 2 of every grad/<term>/<net>)
  eval_middlebury2005.json    the full evaluation report

A run whose result.json exists is skipped, so an interrupted study carries on where it stopped. The table
(`<out>/TABLE.md`, and, with --doc docs/study.md, that page's block between the markers named after --out,
e.g. <!-- ct_study_9k:begin --> ... <!-- ct_study_9k:end -->) is written from these files only. Training
directories go to --runs (never into git).

Rows: a base row, optionally followed by '+modifier' changes (e.g. 'D+sw0.1'):
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from dsr_jax import errors
from dsr_jax import resize
from dsr_jax import study_table
from dsr_jax import study_teachers
from dsr_jax.input_pipeline import readers

# name: (cpu_real.py variant, {config override: value}, what it is)
ROWS = study_teachers.add_rows({
    'A': ('wo_ct', {'loss.side_weight': 0.0}, 'DSRNet alone (w/o CT), side_weight 0'),
    'B': ('wo_ct', {'loss.side_weight': 1.0}, 'DSRNet alone, side_weight 1 (deep supervision, no partner)'),
    'C': ('ct', {'train.roles': 'rule'}, "CT, Revision 2, roles 'rule', 'rgb' (the paper's reading)"),
    'D': ('ct', {'train.roles': 'fixed_denet'}, "CT, Revision 2, roles 'fixed_denet', 'rgb'"),
    'E': ('ct', {'train.roles': 'fixed_denet', 'model.teacher_input': 'rgbd'},
          "CT, Revision 2, roles 'fixed_denet', 'rgbd' (colour-guided teacher)"),
    'F': ('ct', {'train.roles': 'mutual'}, "CT, Revision 2, roles 'mutual', 'rgb'"),
    'G': ('ct', {'train.roles': 'mutual', 'model.teacher_input': 'rgbd'}, "CT, Revision 2, roles 'mutual', 'rgbd'"),
    'V1': ('ct', {'train.roles': 'rule', 'train.teacher_update': 'frozen', 'loss.affinity': 'raw',
                  'loss.side_weight': 0.0, 'loss.detach_uncertainty': False, 'model.side_residual': False},
           'the first version (configs/ablation_v1.py settings)'),
})
MODIFIERS = study_teachers.add_modifiers({
    'sw0.1': ({'loss.side_weight': 0.1}, 'side_weight 0.1'),
    'rho2_1': ({'loss.rho2': 1.0}, 'rho2 1.0'),
    'rho2_0.01': ({'loss.rho2': 0.01}, 'rho2 0.01'),
    # SPNet's structure gradient is the one partner term that moved DSRNet the same way on every seed (6-7 % of
    # L_DSR's at rho1 0.1); ten times it asks whether more of it helps more.
    'rho1_1': ({'loss.rho1': 1.0}, 'rho1 1.0'),
    'nosp': ({'model.use_spnet': False}, 'no SPNet'),
    'noaff': ({'loss.use_affinity': False}, 'no L_A'),
    # A deeper DENet (2x the residual blocks; receptive margin 19 -> 35 px at T=4) for a teacher that may beat
    # the student.
    'deR4': ({'model.de_blocks': 4}, 'DENet with 4 blocks per stage'),
    # Depth maps from anywhere: the LR drawn per crop from the degradation mixture (data.random.*), and the
    # best checkpoint chosen on the protocol's LR and every robustness row together.
    'rob': ({'data.degrade': 'random', 'data.val_degradations': 'protocol,robust'},
            'LR from the degradation mixture, validated on every robustness row'),
    # Fine-tuning the shipped protocol-trained DSRNet of the same scale ('{scale}' is filled in).
    'ft': ({'train.init_from': 'dsrnet_x{scale}_protocol'}, 'starts from the shipped dsrnet_x<s>_protocol'),
    'lr3e-4': ({f'optim.{n}.lr': 3e-4 for n in ('dsr', 'denet', 'spnet')}, 'learning rate 3e-4'),
    # x16 crop candidates: the preset's 128 px crops give the network an 8x8 LR input.
    'c256b1': ({'data.crop': 256, 'train.batch_size': 1}, 'crop 256, batch 1 (16x16 LR at x16)'),
    'c192b2': ({'data.crop': 192, 'train.batch_size': 2}, 'crop 192, batch 2 (12x12 LR at x16)'),
})
__doc__ += '\n'.join(f'  {k:3s} {v[2]}' for k, v in ROWS.items()) + '\n  modifiers: ' + ', '.join(
    f'+{k} ({v[1]})' for k, v in MODIFIERS.items()) + '\n'

SCENES = study_table.SCENES
README_BEGIN, README_END = '<!-- ct_study:begin -->', '<!-- ct_study:end -->'
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def row_spec(row: str, scale: int, runs: str = 'runs'):
  """(config argument, overrides, description) of a row name such as 'D+sw0.1'; runs fills '{runs}' (teachers)."""
  base, *mods = row.split('+')
  if base not in ROWS:
    raise errors.UserError(f'--rows {row!r}: unknown row {base!r} (expected one of {", ".join(ROWS)})')
  variant, overrides, what = ROWS[base]
  for m in mods:
    if m not in MODIFIERS:
      raise errors.UserError(f'--rows {row!r}: unknown modifier {m!r} (expected one of {", ".join(MODIFIERS)})')
    overrides = {**overrides, **MODIFIERS[m][0]}
    what += f'; {MODIFIERS[m][1]}'
  return f'x{scale},{variant}', study_teachers.fill(overrides, scale, runs, mods), what


def _step_overrides(steps: int) -> dict:
  """A shorter (or longer) study keeps the preset's proportions: stage 1 a third, rounds of a fifteenth (10 in
  stage 2), 6 validations."""
  if not steps:
    return {}
  return {'train.num_steps': steps, 'train.stage1_steps': steps // 3, 'train.round_steps': max(steps // 15, 1),
          'train.log_every': max(steps // 30, 1), 'eval.every_steps': max(steps // 6, 1),
          'ckpt.every_steps': max(steps // 3, 1)}


def _flag(k, v):
  return f'--config.{k}={v}'


def _run(cmd, log_path):
  with open(log_path, 'a') as log:
    log.write(f'$ {" ".join(cmd)}\n')
    log.flush()
    r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, check=False)
  if r.returncode:
    with open(log_path) as f:
      tail = f.read().strip().splitlines()[-1:]
    raise errors.UserError(f'{" ".join(cmd[:6])} ... failed (exit {r.returncode}; {log_path}): {tail}')


def _scalars(workdir: str) -> dict:
  """{tag: [(step, value), ...]} of every scalar in the run's TensorBoard events."""
  import glob  # pylint: disable=g-import-not-at-top
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  out = {}
  for path in sorted(glob.glob(os.path.join(workdir, 'events.out.tfevents.*'))):
    acc = event_accumulator.EventAccumulator(path, size_guidance={'tensors': 0})
    acc.Reload()
    for tag in acc.Tags().get('tensors', []):
      for e in acc.Tensors(tag):
        arr = np.frombuffer(e.tensor_proto.tensor_content, np.float32) if e.tensor_proto.tensor_content \
            else np.asarray(e.tensor_proto.float_val, np.float32)
        if arr.size == 1:
          out.setdefault(tag, []).append((int(e.step), float(arr[0])))
  return {k: sorted(v) for k, v in out.items()}


def summarise_run(workdir: str, stage1_steps: int) -> dict:
  """Validation MADs, side-head errors, teachers and the mean stage-2 gradient norms, from TensorBoard."""
  sc = _scalars(workdir)
  mean = lambda xs: float(sum(xs) / len(xs)) if xs else None
  stage2 = lambda tag: [v for s, v in sc.get(tag, []) if s > stage1_steps]
  evals = sc.get('eval/mad', [])
  best = min(evals, key=lambda sv: sv[1]) if evals else (None, None)
  grads = {tag[5:]: mean(stage2(tag)) for tag in sc if tag.startswith('grad/')}
  grads = {k: v for k, v in grads.items() if v is not None}
  ratios = {}
  for net, own in (('dsr', 'dsr'), ('denet', 'de')):
    base = grads.get(f'{own}/{net}')
    for term in ('out', 'aff', 'struct'):
      g = grads.get(f'{term}/{net}')
      if base and g is not None:
        ratios[f'{term}/{net} : {own}/{net}'] = g / base
  last = lambda tag: sc[tag][-1][1] if sc.get(tag) else None
  return {'val_mad_final': evals[-1][1] if evals else None, 'val_mad_best': best[1], 'best_step': best[0],
          'bicubic_val_mad': last('eval/bicubic_mad'),
          'val_mad_curve': evals,
          'teachers_stage2': [v for v in stage2('train/teacher')],
          'stage2_mean': {k: mean(stage2(f'train/{k}')) for k in ('e_dsr', 'e_de', 'side_dsr', 'side_de', 'aff',
                                                                 'out', 'struct')},
          'grad_stage2_mean': grads, 'grad_ratio_stage2': ratios}


def real_sensor_scenes(data_dir, scale: int):
  """(name, HR mm, valid, LR normalised, norm) per RGB-D-D 'realscene' pair, LR as real_sensor_rmse's step 1."""
  norm = readers.dataset_info('rgbdd').norm
  for rec in readers.list_records(data_dir, 'rgbdd', 'realscene'):
    ex = readers.load_example(rec)
    hr, valid = ex['depth'].astype(np.float64), ex['valid'] > 0
    lr = readers.load_depth_lr(rec).astype(np.float64)
    th, tw = -(-hr.shape[0] // scale), -(-hr.shape[1] // scale)
    lr = resize.resize(lr, th / lr.shape[0], tw / lr.shape[1], 'bicubic')
    yield rec.name, hr, valid, lr[:th, :tw] / norm, norm


def rmse_cm(pred_mm, hr_mm, valid) -> float:
  """RMSE in cm over the valid pixels of a millimetre map (the RGB-D-D unit)."""
  return float(np.sqrt(np.mean((pred_mm[valid] - hr_mm[valid]) ** 2)) / 10.0)


def real_sensor_rmse(dsr, params, data_dir, scale: int) -> dict:
  """RGB-D-D 'realscene': the data's only real LR inputs (phone time-of-flight, 192x144) against a 512x384 HR.

  A fixed-scale network needs an LR of exactly HR/s, and the real ratio is 2.67, so the protocol is:
  1. LR = the real LR map (mm), resized to ceil(HR/s) with the evaluation's MATLAB-style bicubic (antialiased
     when it shrinks, as at x4 and x8), normalised by the rgbdd norm (4000 mm);
  2. prediction = DSRNet (or bicubic) on that LR, cropped to the HR size;
  3. RMSE in cm over the HR's valid pixels (the literature's RGB-D-D unit), no border crop.
  Returns {'per_scene': {name: {'rmse_cm', 'bicubic_rmse_cm'}}, 'mean': {...}, 'protocol': str}.
  """
  from dsr_jax import inference  # pylint: disable=g-import-not-at-top  (JAX: the realscene row alone needs it)
  per_scene = {}
  for name, hr, valid, lr, norm in real_sensor_scenes(data_dir, scale):
    h, w = hr.shape
    ours = inference.super_resolve(dsr, params, lr.astype(np.float32))[:h, :w] * norm
    bic = resize.upsample_bicubic(lr, scale)[:h, :w] * norm
    per_scene[name] = {'rmse_cm': rmse_cm(ours, hr, valid), 'bicubic_rmse_cm': rmse_cm(bic, hr, valid)}
  mean = {k: float(np.mean([v[k] for v in per_scene.values()])) for k in ('rmse_cm', 'bicubic_rmse_cm')}
  return {'per_scene': per_scene, 'mean': mean,
          'protocol': f'real LR bicubic-resized to HR/{scale}, x{scale}, RMSE cm over valid HR pixels'}


def real_sensor(checkpoint: str, data_dir: str) -> dict:
  """real_sensor_rmse (RGB-D-D realscene, RMSE cm) of a checkpoint's DSRNet, with bicubic beside it."""
  from dsr_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  from dsr_jax import restore  # pylint: disable=g-import-not-at-top
  cfg, params = restore.load_for_inference(checkpoint)
  root = readers.resolve_data_dir(data_dir)
  if not (root / 'rgbdd' / 'realscene').is_dir():  # an optional split of the data
    return None
  return real_sensor_rmse(models_lib.build(cfg.model).dsr, params, str(root), int(cfg.model.scale))


def _get(cfg, dotted: str):
  for part in dotted.split('.'):
    cfg = cfg[part]
  return cfg


def check_resumable(workdir: str, cfg, keys) -> None:
  """Refuses to carry on a training workdir that a different run (steps, scale, row, seed) left there.

  Training resumes from any checkpoint whose parameter shapes fit, so a 9000-step run pointed at a 3000-step
  run's workdir would silently continue it and be stored as a 9000-step result.
  """
  from dsr_jax import restore  # pylint: disable=g-import-not-at-top
  ckpt_dir = os.path.join(workdir, restore.CKPT_DIR)
  steps = restore.saved_steps(ckpt_dir) if os.path.isdir(ckpt_dir) else []
  if not steps:
    return
  old = restore.read_config(ckpt_dir, steps[-1])
  for key in ['model.scale', 'train.num_steps', *keys]:
    try:
      was = _get(old, key)
    except (KeyError, AttributeError):
      was = None
    if was != _get(cfg, key):
      raise errors.UserError(f'{workdir}: holds a run with {key}={was!r}, not {_get(cfg, key)!r}; give another '
                             '--runs (or remove that workdir)')


def run_one(row: str, seed: int, a) -> dict:
  out_dir = os.path.join(a.out, f'{row}_s{seed}')
  result_path = os.path.join(out_dir, 'result.json')
  arg, overrides, what = row_spec(row, a.scale, os.path.abspath(a.runs))
  if os.path.exists(result_path):
    with open(result_path) as f:
      done = json.load(f)
    want = {'scale': a.scale, 'steps': a.steps or 3000}
    got = {k: done.get(k, want[k]) for k in want}
    if got != want:
      raise errors.UserError(f'{result_path}: holds a run at {got}, not {want}; give another --out')
    return done
  workdir = os.path.abspath(os.path.join(a.runs, f'{row}_s{seed}'))
  settings = {'seed': seed, **overrides, **_step_overrides(a.steps)}
  if a.data_dir:
    settings['data.dir'] = a.data_dir
  from dsr_jax.config_lib import load_config  # pylint: disable=g-import-not-at-top
  cfg = load_config(os.path.join(REPO, 'configs', 'cpu_real.py'), arg, **settings)  # the config as run
  check_resumable(workdir, cfg, [k for k in settings if k != 'data.dir'])
  os.makedirs(workdir, exist_ok=True)
  log = os.path.join(workdir, 'study.log')
  flags = [_flag(k, v) for k, v in settings.items()]
  nice = ['nice', '-n', str(a.nice)] if a.nice else []
  t0 = time.time()
  _run(nice + [sys.executable, '-m', 'dsr_jax.main', '--config', f'configs/cpu_real.py:{arg}',
               '--workdir', workdir, *flags], log)
  wall = time.time() - t0
  eval_dir = os.path.join(workdir, 'eval_run')
  eval_flags = [_flag('eval.checkpoint_dir', workdir)] + ([_flag('data.dir', a.data_dir)] if a.data_dir else [])
  _run(nice + [sys.executable, '-m', 'dsr_jax.main', '--config', 'configs/eval.py:middlebury2005',
               '--workdir', eval_dir, *eval_flags], log)
  with open(os.path.join(eval_dir, 'eval', f'middlebury2005_x{a.scale}.json')) as f:
    report = json.load(f)
  result = {'row': row, 'seed': seed, 'what': what, 'config_arg': arg, 'overrides': overrides,
            'scale': a.scale, 'steps': cfg.train.num_steps, 'train_wall_s': round(wall, 1),
            'middlebury2005': {'mean': report['mean'],
                               'per_scene': {k: v for k, v in report['per_scene'].items()}},
            'realscene': None if study_teachers.sees_more(cfg) else real_sensor(workdir, a.data_dir),
            **summarise_run(workdir, cfg.train.stage1_steps if cfg.model.use_denet else 0)}
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, 'config.json'), 'w') as f:
    f.write(cfg.to_json_best_effort(indent=2))
  with open(os.path.join(out_dir, 'eval_middlebury2005.json'), 'w') as f:
    json.dump(report, f, indent=2)
  with open(result_path + '.tmp', 'w') as f:
    json.dump(result, f, indent=2)
  os.replace(result_path + '.tmp', result_path)
  return result


def load_results(out: str) -> dict:
  """{row: [result, ...]} of every finished run under `out`, seeds in order."""
  rows = {}
  if not os.path.isdir(out):
    return rows
  for name in sorted(os.listdir(out)):
    path = os.path.join(out, name, 'result.json')
    if os.path.exists(path):
      with open(path) as f:
        r = json.load(f)
      rows.setdefault(r['row'], []).append(r)
  for v in rows.values():
    v.sort(key=lambda r: r['seed'])
  return rows


def markers(out: str) -> tuple[str, str]:
  """The docs/study.md block of a results directory: <!-- ct_study:begin --> for results/ct_study, and so on,
  so that studies at other step counts or scales keep tables of their own."""
  name = os.path.basename(os.path.normpath(out))
  if name == 'ct_study':
    return README_BEGIN, README_END
  return f'<!-- {name}:begin -->', f'<!-- {name}:end -->'


def table(rows: dict) -> str:
  """The study's Markdown (tables), from the stored results only."""
  return study_table.table(rows, tuple(ROWS))


def write_table(out: str, doc: str = '') -> str:
  """Writes `<out>/TABLE.md` and, when `doc` names a Markdown file (docs/study.md), its block for `out`."""
  text = table(load_results(out))
  with open(os.path.join(out, 'TABLE.md'), 'w') as f:
    f.write('# Cross-task study (written by `python -m dsr_jax.study`; do not edit)\n\n' + text)
  if doc:
    write_block(doc, *markers(out), text)
  return text


def write_block(path: str, begin: str, end: str, text: str) -> None:
  """Replaces what lies between the markers `begin` and `end` of a Markdown file by `text`."""
  with open(path) as f:
    doc = f.read()
  if not (begin in doc and end in doc and doc.index(begin) < doc.index(end)):
    raise errors.UserError(f'{path}: expected the markers {begin} ... {end}')
  head, rest = doc.split(begin, 1)
  _, tail = rest.split(end, 1)
  with open(path, 'w') as f:
    f.write(f'{head}{begin}\n{text}{end}{tail}')


def build_parser():
  p = errors.ArgumentParser(prog='python -m dsr_jax.study', description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--rows', default='A,D', help='comma list of rows (see above)')
  p.add_argument('--seeds', default='0', help='comma list of seeds')
  p.add_argument('--scale', type=int, default=4, choices=[2, 4, 8, 16])
  p.add_argument('--out', default='', help='where results are stored, committed (default results/ct_study at x4, '
                 'results/ct_study_x<scale> otherwise)')
  p.add_argument('--runs', default='', help='training workdirs, not committed (default runs/<the name of --out>)')
  p.add_argument('--data-dir', default='', help='the data directory (default: $DSR_DATA_DIR)')
  p.add_argument('--steps', type=int, default=0, help='override train.num_steps (0 = the preset)')
  p.add_argument('--nice', type=int, default=10, help='niceness of the training processes (0 = none)')
  p.add_argument('--doc', '--readme', dest='doc', default='', metavar='MARKDOWN',
                 help="also rewrite this Markdown file's block for --out (the study's page: docs/study.md; "
                 '--readme is the old name)')
  p.add_argument('--table-only', action='store_true', help='only rewrite the table from stored results')
  return p


def default_dirs(a):
  suffix = '' if a.scale == 4 else f'_x{a.scale}'
  a.out = a.out or f'results/ct_study{suffix}'
  a.runs = a.runs or os.path.join('runs', os.path.basename(os.path.normpath(a.out)))
  return a


def main(argv=None) -> int:
  a = default_dirs(build_parser().parse_args(argv))
  try:
    seeds = [int(s) for s in a.seeds.split(',') if s.strip()]
  except ValueError:
    print(f'error: --seeds {a.seeds!r}: expected a comma list of integers', file=sys.stderr)
    return 2
  rows = [r.strip() for r in a.rows.split(',') if r.strip()]
  try:
    for r in rows:
      row_spec(r, a.scale)
    os.makedirs(a.out, exist_ok=True)
    if not a.table_only:
      for row in rows:
        for seed in seeds:
          r = run_one(row, seed, a)
          print(f'{row}_s{seed}: Middlebury 2005 MAD {r["middlebury2005"]["mean"]["mad"]:.4f}, '
                f'best val MAD {r["val_mad_best"]:.4f}, train {r["train_wall_s"]:.0f} s', flush=True)
          write_table(a.out, a.doc)
    print(write_table(a.out, a.doc))
  except errors.UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
