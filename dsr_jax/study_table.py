"""The study's tables, written from its stored results only (dsr_jax/study.py runs them)."""
import math

from dsr_jax import study_teachers

SCENES = ('art', 'books', 'dolls', 'laundry', 'moebius', 'reindeer')
BASELINE = 'B'  # DSRNet alone with side supervision: what every other row has to beat


def _stats(xs):
  xs = [x for x in xs if x is not None]
  if not xs:
    return None, None
  m = sum(xs) / len(xs)
  sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
  return m, sd


def _pm(xs, digits=4):
  m, sd = _stats(xs)
  if m is None:
    return ''
  return f'{m:.{digits}f}' + (f' ± {sd:.{digits}f}' if sd is not None else '')


def _real(rs) -> str:
  got = [r['realscene']['mean'] for r in rs if r.get('realscene')]
  if not got:
    return '-'
  return f'{_pm([g["rmse_cm"] for g in got], 2)} ({_stats([g["bicubic_rmse_cm"] for g in got])[0]:.2f})'


def table(rows: dict, order=()) -> str:
  """The study's Markdown table, from the stored results only; `order`: the rows known to the study, in the
  order they come (the others follow, sorted)."""
  order = [r for r in order if r in rows] + sorted(r for r in rows if r not in order)
  lines = ['| row | what | seeds | Middlebury 2005 mean MAD | RMSE | ' + ' | '.join(s for s in SCENES) +
           ' | val MAD (best) | real ToF RMSE cm (bicubic) | train wall |', '|' + ' --- |' * (8 + len(SCENES))]
  for row in order:
    rs = rows[row]
    mb = [r['middlebury2005'] for r in rs]
    scenes = [_pm([m['per_scene'][s]['mad'] for m in mb if s in m['per_scene']], 3) for s in SCENES]
    wall = _stats([r['train_wall_s'] for r in rs])[0]
    lines.append(f'| {row} | {rs[0]["what"]} | {",".join(str(r["seed"]) for r in rs)} | '
                 f'{_pm([m["mean"]["mad"] for m in mb])} | {_pm([m["mean"]["rmse"] for m in mb], 3)} | '
                 + ' | '.join(scenes) + f' | {_pm([r["val_mad_best"] for r in rs], 3)} | {_real(rs)} | '
                 f'{int(wall // 60)} min {int(wall % 60)} s |')
  diag = []
  for row in order:
    r = rows[row][0]
    g = r.get('grad_ratio_stage2', {})
    f = lambda k: f'{g[k]:.3f}' if k in g else '-'
    s2 = r.get('stage2_mean', {})
    side = (f'{s2["side_dsr"] / s2["e_dsr"]:.2f}' if s2.get('side_dsr') and s2.get('e_dsr') else '-')
    teachers = [t for t in r.get('teachers_stage2', []) if t >= 0]  # -1: no teacher (w/o CT)
    names = {0.0: 'DSRNet', 1.0: 'DENet', 2.0: 'mutual'}
    tsum = ', '.join(f'{names.get(t, t)} x{teachers.count(t)}' for t in sorted(set(teachers))) or '-'
    cells = [f('out/dsr : dsr/dsr'), f('aff/dsr : dsr/dsr'), f('struct/dsr : dsr/dsr'),
             f('out/denet : de/denet'), f('aff/denet : de/denet'), side, tsum]
    # A row without a partner (w/o CT) has nothing to report here; a line of dashes would only look
    # like missing data.
    if any(c != '-' for c in cells):
      diag.append(f'| {row} | ' + ' | '.join(cells) + ' |')
  if diag:
    lines += ['', 'Gradient diagnostics, mean over stage-2 log steps (the lowest seed of each row), as a '
              "fraction of the network's own task-loss gradient (rows without CT have none):", '',
              '| row | L_O -> DSRNet | L_A -> DSRNet | L_struct -> DSRNet | L_O -> DENet | L_A -> DENet | '
              'side err / main err (DSRNet) | teacher at stage-2 log steps |', '|' + ' --- |' * 8] + diag
  lines += distillation(rows, order)
  lines += paired(rows, order)
  return '\n'.join(lines) + '\n'


def distillation(rows: dict, order) -> list[str]:
  """Lines on the terms towards a frozen teacher (model.teacher), from the stored mean gradient norms: each
  as a fraction of DSRNet's own task-loss gradient, and the largest norm any term sent into the teacher."""
  out = []
  for row in order:
    g = rows[row][0].get('grad_stage2_mean', {})
    own = g.get('dsr/dsr')
    if not own or not any(k.startswith('kd_') for k in g):
      continue
    cells = [f'{g[f"{t}/dsr"] / own:.3f}' if f'{t}/dsr' in g else '-' for t in ('kd_out', 'kd_feat', 'kd_aff')]
    into = [v for k, v in g.items() if k.endswith('/teacher')]
    cells.append(f'{max(into):.3g}' if into else '-')
    out.append(f'| {row} | ' + ' | '.join(cells) + ' |')
  if not out:
    return []
  return ['', 'Distillation from the frozen teacher: the mean gradient norm of each term into DSRNet after '
          "stage 1 (the lowest seed of each row), as a fraction of DSRNet's own task-loss gradient, and the "
          'largest mean norm any term sent into the teacher:', '',
          '| row | teacher L_O -> DSRNet | teacher features -> DSRNet | teacher L_A -> DSRNet | '
          'any term -> teacher |', '|' + ' --- |' * 5] + out


def _signed(xs, digits):
  return ', '.join(f'{x:+.{digits}f}' for x in xs)


def paired(rows: dict, order) -> list[str]:
  """Lines comparing each row with row B on the seeds both have, seed by seed, and the study's verdict: a
  gain is a seed mean below B's by more than B's seed std (over the same seeds). Teacher rows (they read more
  than the LR) are not compared; nothing is written unless some row shares at least two seeds with B."""
  base = {r['seed']: r for r in rows.get(BASELINE, [])}
  out = []
  for row in order:
    if row == BASELINE or study_teachers.is_teacher_row(row):
      continue
    rs = [r for r in rows[row] if r['seed'] in base]
    if len(rs) < 2:
      continue
    bs = [base[r['seed']] for r in rs]
    d = [r['middlebury2005']['mean']['mad'] - b['middlebury2005']['mean']['mad'] for r, b in zip(rs, bs)]
    dv = [r['val_mad_best'] - b['val_mad_best'] for r, b in zip(rs, bs)]
    b_sd = _stats([b['middlebury2005']['mean']['mad'] for b in bs])[1]
    mean = sum(d) / len(d)
    verdict = 'gain' if mean < -b_sd else ('loss' if mean > b_sd else 'no gain')
    out.append(f'| {row} | {",".join(str(r["seed"]) for r in rs)} | {_signed(d, 4)} | {mean:+.4f} | '
               f'{b_sd:.4f} | {verdict} | {sum(x < 0 for x in d)} of {len(d)} | {_signed(dv, 3)} |')
  if not out:
    return []
  return ['', f'Paired with row {BASELINE}, seed by seed (Middlebury 2005 mean MAD and validation MAD, the row '
          f'minus {BASELINE} on the same seed). By the study\'s rule a row gains only if its seed mean is below '
          f"{BASELINE}'s by more than {BASELINE}'s seed std; 'loss' is the same margin the other way:", '',
          f'| row | seeds | row - {BASELINE}, per seed | mean | {BASELINE} seed std | verdict | seeds below '
          f'{BASELINE} | val MAD row - {BASELINE}, per seed |', '|' + ' --- |' * 8] + out
