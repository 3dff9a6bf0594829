"""dsr_jax.study: rows, the table written from stored results only, skipping finished runs; the real-sensor
protocol of study.real_sensor_rmse."""
import json
import os

import jax
import numpy as np
import pytest

from dsr_jax import errors
from dsr_jax import study


def _result(row, seed, mad, wall=100.0):
  per = {s: {'mad': mad + i * 0.01, 'rmse': 1.0} for i, s in enumerate(study.SCENES)}
  return {'row': row, 'seed': seed, 'what': f'row {row}', 'train_wall_s': wall, 'val_mad_best': 0.5,
          'scale': 4, 'steps': 3000,
          'middlebury2005': {'mean': {'mad': mad, 'rmse': 1.0}, 'per_scene': per},
          'realscene': {'mean': {'rmse_cm': 7.0 + seed, 'bicubic_rmse_cm': 7.5}},
          'grad_ratio_stage2': {'out/dsr : dsr/dsr': 0.25}, 'stage2_mean': {'side_dsr': 0.004, 'e_dsr': 0.002},
          'teachers_stage2': [1.0, 1.0, -1.0]}


def _store(out, r):
  d = out / f'{r["row"]}_s{r["seed"]}'
  d.mkdir(parents=True)
  (d / 'result.json').write_text(json.dumps(r))


def test_rows_and_modifiers():
  arg, over, what = study.row_spec('D+sw0.1+noaff', 4)
  assert arg == 'x4,ct' and over['train.roles'] == 'fixed_denet' and over['loss.side_weight'] == 0.1
  assert over['loss.use_affinity'] is False and 'no L_A' in what
  assert study.row_spec('A', 8)[0] == 'x8,wo_ct'
  for bad in ('Z', 'D+fast'):
    with pytest.raises(errors.UserError, match='--rows'):
      study.row_spec(bad, 4)


def test_every_row_and_modifier_is_a_valid_config():
  from dsr_jax import config_lib
  from dsr_jax import train
  path = os.path.join(study.REPO, 'configs', 'cpu_real.py')
  for row in list(study.ROWS) + [f'G+{m}' for m in study.MODIFIERS]:
    arg, overrides, _ = study.row_spec(row, 4)
    cfg = config_lib.load_config(path, arg, **overrides)  # an override of a field that does not exist fails
    train.check_config(cfg)
    for k, v in overrides.items():
      assert study._get(cfg, k) == v, (row, k)  # pylint: disable=protected-access


def test_table_is_computed_from_the_stored_results(tmp_path):
  for seed, mad in ((0, 0.20), (1, 0.22), (2, 0.24)):
    _store(tmp_path, _result('A', seed, mad))
  _store(tmp_path, _result('D', 0, 0.19))
  readme = tmp_path / 'README.md'
  begin, end = study.markers(str(tmp_path))  # a results directory of another name has its own block
  assert begin == f'<!-- {tmp_path.name}:begin -->' and study.markers('results/ct_study/')[0] == study.README_BEGIN
  readme.write_text(f'intro\n{begin}\nold table\n{end}\noutro\n')
  text = study.write_table(str(tmp_path), str(readme))
  a_line = next(l for l in text.splitlines() if l.startswith('| A |'))
  assert '| 0,1,2 |' in a_line and '0.2200 ± 0.0200' in a_line  # mean and sample std of 0.20, 0.22, 0.24
  assert '8.00 ± 1.00 (7.50)' in a_line  # 7 + seed
  d_line = next(l for l in text.splitlines() if l.startswith('| D |'))
  assert '| 0.1900 |' in d_line and '±' not in d_line.split('|')[4]
  assert '| D | 0.250 |' in text and 'DENet x2' in text  # diagnostics; -1 (no teacher) not counted
  doc = readme.read_text()
  assert 'old table' not in doc and doc.startswith('intro\n') and doc.endswith('outro\n') and a_line in doc
  assert (tmp_path / 'TABLE.md').read_text().endswith(text)


def test_rows_are_paired_with_b_seed_by_seed_and_judged_by_the_study_rule(tmp_path):
  for seed, mad in ((0, 0.20), (1, 0.22), (2, 0.24)):  # B: seed std 0.02
    _store(tmp_path, _result('B', seed, mad))
    _store(tmp_path, _result('KO+byAE', seed, mad - 0.03))  # below B by more than its std: a gain
    _store(tmp_path, _result('KF+byAE', seed, mad - 0.01 * (seed - 1)))  # mean 0: no gain
    _store(tmp_path, _result('AE', seed, mad - 0.1))  # a teacher reads the HR: never compared
  _store(tmp_path, _result('D', 0, 0.1))  # one seed shared with B: nothing to pair
  text = study.table(study.load_results(str(tmp_path)))
  paired = text[text.index('Paired with row B'):]
  ko = next(l for l in paired.splitlines() if l.startswith('| KO+byAE |'))
  assert '| 0,1,2 | -0.0300, -0.0300, -0.0300 | -0.0300 | 0.0200 | gain | 3 of 3 |' in ko
  kf = next(l for l in paired.splitlines() if l.startswith('| KF+byAE |'))
  assert '| +0.0100, +0.0000, -0.0100 | +0.0000 | 0.0200 | no gain | 1 of 3 |' in kf
  assert '| AE |' not in paired and '| D |' not in paired and '| B |' not in paired
  assert 'Paired' not in study.table({'B': study.load_results(str(tmp_path))['B']})


def test_the_terms_towards_a_frozen_teacher_are_in_the_diagnostics(tmp_path):
  r = _result('KOF+byAE', 0, 0.2)
  r['grad_stage2_mean'] = {'dsr/dsr': 0.08, 'kd_out/dsr': 0.01, 'kd_feat/dsr': 0.02, 'kd_out/teacher': 0.0,
                           'dsr/teacher': 0.0}
  _store(tmp_path, r)
  _store(tmp_path, _result('B', 0, 0.2))  # no teacher: no line
  text = study.table(study.load_results(str(tmp_path)))
  assert '| KOF+byAE | 0.125 | 0.250 | - | 0 |' in text
  assert not any(l.startswith('| B | ') and l.count('|') == 6 for l in text.splitlines())


def test_rows_without_diagnostics_get_no_line_of_dashes(tmp_path):
  def bare(seed):  # what a w/o CT run stores: no grad ratios, no side heads, never a teacher
    r = _result('A', seed, 0.2)
    r.update(grad_ratio_stage2={}, stage2_mean={}, teachers_stage2=[-1.0, -1.0])
    return r
  _store(tmp_path, bare(0))
  text = study.table(study.load_results(str(tmp_path)))
  assert 'Gradient diagnostics' not in text and text.count('| A |') == 1
  _store(tmp_path, _result('D', 0, 0.19))
  text = study.table(study.load_results(str(tmp_path)))
  diag = text.split('Gradient diagnostics', 1)[1]
  assert '| D | 0.250 |' in diag and '| A |' not in diag


def test_finished_runs_are_skipped(tmp_path, monkeypatch):
  _store(tmp_path, _result('A', 0, 0.2))
  monkeypatch.setattr(study, '_run', lambda *a, **k: pytest.fail('a finished run was trained again'))
  args = study.build_parser().parse_args(['--out', str(tmp_path), '--runs', str(tmp_path / 'runs')])
  args.steps = 0
  assert study.run_one('A', 0, args)['middlebury2005']['mean']['mad'] == 0.2
  args.steps = 300  # a stored run of another length is refused, not reused
  with pytest.raises(errors.UserError, match='not .*300'):
    study.run_one('A', 0, args)


CPU_REAL = os.path.join(study.REPO, 'configs', 'cpu_real.py')


def test_a_workdir_left_by_another_run_is_not_resumed(tmp_path, monkeypatch):
  from dsr_jax import restore
  from dsr_jax.config_lib import load_config
  cfg = load_config(CPU_REAL, 'x4,wo_ct', seed=0, **study._step_overrides(9000))
  study.check_resumable(str(tmp_path / 'fresh'), cfg, ['seed'])  # nothing there yet
  (tmp_path / 'A_s0' / restore.CKPT_DIR / '3000').mkdir(parents=True)
  old = load_config(CPU_REAL, 'x4,wo_ct', seed=0)  # the 3000-step preset
  monkeypatch.setattr(restore, 'read_config', lambda d, step: old if step == 3000 else pytest.fail(step))
  with pytest.raises(errors.UserError, match=r'A_s0: holds a run with train.num_steps=3000, not 9000'):
    study.check_resumable(str(tmp_path / 'A_s0'), cfg, ['seed'])
  study.check_resumable(str(tmp_path / 'A_s0'), old, ['seed'])  # the same run carries on
  other_seed = load_config(CPU_REAL, 'x4,wo_ct', seed=1)
  with pytest.raises(errors.UserError, match='seed=0, not 1'):
    study.check_resumable(str(tmp_path / 'A_s0'), other_seed, ['seed'])
  # The default --runs follows --out, so a 9000-step study never lands in the 3000-step one's workdirs.
  parse = lambda *argv: study.default_dirs(study.build_parser().parse_args(list(argv)))
  assert parse('--out', 'results/ct_study_9k').runs == os.path.join('runs', 'ct_study_9k')
  assert parse().runs == os.path.join('runs', 'ct_study') and parse('--scale', '8').out == 'results/ct_study_x8'


def test_real_sensor_protocol_bicubic_identity(shared_data_dir):
  """A DSRNet whose output conv is zero is exactly its bicubic residual: its RMSE must equal bicubic's."""
  from dsr_jax.configs import test as test_config
  from dsr_jax import models as models_lib
  from dsr_jax import state as state_lib
  cfg = test_config.get_config()
  cfg.model.use_denet = cfg.model.use_spnet = False
  models = models_lib.build(cfg.model)
  params = state_lib.init_params(models, jax.random.key(0), cfg.model.scale)['dsr']
  params['tail'] = jax.tree.map(np.zeros_like, params['tail'])
  r = study.real_sensor_rmse(models.dsr, params, str(shared_data_dir), cfg.model.scale)
  assert len(r['per_scene']) == 3
  for v in r['per_scene'].values():
    assert 0 < v['bicubic_rmse_cm'] < 100
    np.testing.assert_allclose(v['rmse_cm'], v['bicubic_rmse_cm'], rtol=1e-4)
