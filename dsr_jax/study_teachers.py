"""The study's rows for teachers that know more than their student (issue 39; docs/method.md, "Frozen teachers").

Teacher rows train a teacher alone, as row B trains DSRNet (same preset, steps and side supervision), and are
validated with their guides on the held-out middlebury_lu images:
  T      the colour-guided teacher (model.name='guided', encoder width W 32, R 2 blocks)
  T2     a wider and deeper one (W 64, R 4): the gate's second design
  AE     the autoencoder of the HR depth (model.name='ae'), after Hong et al., CVPR 2020
  AErgb  the autoencoder with the RGB beside the HR depth

Student rows are row B's DSRNet with a frozen teacher, read from seed 0 of its teacher row in the same --runs
directory, with the student's own modifiers except the teacher's: 'KO+c192b2+kdA' reads '<runs>/T+c192b2_s0'
(the +by<row> modifiers pick another teacher row):
  KO     L_O from the teacher (main and side outputs)
  KOF    L_O and the feature term (cosine) on the T feature maps
  KF     the feature term alone
'+kdA' adds L_A towards the teacher. The teacher row must have finished first: the student's training refuses
a missing or different teacher checkpoint (teacher.load).
"""

# The architecture fields of each teacher row: its students must build the same network.
_ARCH = {
    'T': ('guided', {'model.teacher_width': 32, 'model.teacher_blocks': 2}),
    'T2': ('guided', {'model.teacher_width': 64, 'model.teacher_blocks': 4}),
    'AE': ('ae', {'model.teacher_width': 32, 'model.teacher_blocks': 2, 'model.ae_rgb': False}),
    'AErgb': ('ae', {'model.teacher_width': 32, 'model.teacher_blocks': 2, 'model.ae_rgb': True}),
}
_WHAT = {'T': 'guided teacher alone: LR depth, and the RGB through its own encoder (W 32, R 2)',
         'T2': 'guided teacher alone, wider and deeper (W 64, R 4)',
         'AE': 'autoencoder teacher alone: reconstructs the HR depth it sees (Hong et al. 2020)',
         'AErgb': 'autoencoder teacher alone, the RGB beside the HR depth'}


def _teacher_row(row: str) -> tuple:
  kind, arch = _ARCH[row]
  return 'wo_ct', {'model.name': kind, 'loss.side_weight': 1.0, **arch}, _WHAT[row]


def _frozen(row: str) -> dict:
  """The overrides of a student of teacher row `row`'s seed 0, in this study's --runs directory."""
  kind, arch = _ARCH[row]
  return {'model.use_denet': False, 'model.use_spnet': False, 'model.teacher': kind,
          'model.teacher_checkpoint': '{runs}/' + row + '{mods}_s0', **arch}


_STUDENT = {'loss.side_weight': 1.0, **_frozen('T')}  # row B's DSRNet, taught by row T
ROWS = {
    **{row: _teacher_row(row) for row in _ARCH},
    'KO': ('wo_ct', {**_STUDENT, 'loss.kd_out_weight': 0.1, 'loss.feature_distill': 'none'},
           'B + frozen teacher (T): L_O on main and side outputs, weight 0.1'),
    'KOF': ('wo_ct', {**_STUDENT, 'loss.kd_out_weight': 0.1, 'loss.feature_distill': 'cosine',
                      'loss.kd_feature_weight': 0.1}, 'B + frozen teacher (T): L_O 0.1 and cosine features 0.1'),
    'KF': ('wo_ct', {**_STUDENT, 'loss.kd_out_weight': 0.0, 'loss.feature_distill': 'cosine',
                     'loss.kd_feature_weight': 0.1}, 'B + frozen teacher (T): cosine features 0.1 alone'),
}
MODIFIERS = {
    **{f'by{row}': (_frozen(row), f'teacher {row}') for row in _ARCH if row != 'T'},
    'kdA': ({'loss.kd_affinity_weight': 0.1}, 'L_A towards the teacher, weight 0.1'),
    'featl1': ({'loss.feature_distill': 'l1'}, 'L1 feature term'),
    'kdO1': ({'loss.kd_out_weight': 1.0}, 'L_O weight 1.0'),
}


def add_rows(rows: dict) -> dict:
  return {**rows, **ROWS}


def add_modifiers(modifiers: dict) -> dict:
  return {**modifiers, **MODIFIERS}


def fill(overrides: dict, scale: int, runs: str, mods=()) -> dict:
  """A copy of a row's overrides with the placeholders of its strings filled: {scale}; {runs}, the study's
  training directories (--runs), where a teacher row leaves the checkpoint its students load; and {mods}, the
  row's modifiers that its teacher row shares (all but this module's, which only students have)."""
  shared = ''.join(f'+{m}' for m in mods if m not in MODIFIERS)
  return {k: v.format(scale=scale, runs=runs, mods=shared) if isinstance(v, str) else v
          for k, v in overrides.items()}


def is_teacher_row(row: str) -> bool:
  """Whether a study row (modifiers and all) trains a teacher alone: it reads more than the LR."""
  return row.split('+')[0] in _ARCH


def sees_more(cfg) -> bool:
  """Whether a run's network reads more than the LR (a teacher trained alone): it has no real-sensor row,
  whose inputs are LR depth maps alone."""
  from dsr_jax import models  # pylint: disable=g-import-not-at-top  (JAX: the study imports without it)
  return cfg.model.name in models.TEACHERS
