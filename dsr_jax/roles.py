"""Phases as data, and the role exchange (docs/method.md, "Schedule and routing", rules 2 and 7).

A `Phase` says which networks' optimizers step and which loss terms make up the objective: each
`terms.Term` has a weight and the networks its gradient may reach ("reach"). `steps.loss_fn` sums the
weighted terms and cuts (stop_gradient) every other network's outputs out of a term; it never looks at a
phase's name. The phases are built once from the config (`make_phases`): the phases' skeletons (optimizer
masks, teacher codes, and what each phase offers its terms) live here, and each term's placement (weight,
reach, student) lives with the term in terms.py; together they are the routing table of docs/method.md.

`Rounds` walks a run through them: where each round starts, its teacher, and the phase of each step.

Compiled train steps: stage 1, DSR-student and DE-student (plus 'mutual' for train.roles='mutual' only, or
'dsr_only' for "w/o CT"). The phase is a static argument of the step, so a role switch picks another
already-compiled step and never recompiles. With a frozen teacher (model.teacher), 'dsr_only' also holds
the terms towards it, and the teacher is in the optimizer mask, never trainable.
"""
import dataclasses

from dsr_jax import terms as terms_lib
from dsr_jax.errors import ConfigError
from dsr_jax.models import TEACHERS
from dsr_jax.terms import Term

# Teacher codes stored in the train state and logged as train/teacher.
NO_TEACHER = -1  # stage 1 (and "w/o CT")
DSR, DENET = 0, 1
MUTUAL = 2  # train.roles='mutual': both networks teach and learn in every step

ROLES = ('rule', 'fixed_denet', 'fixed_dsr', 'mutual')
FEATURE_DISTILL = ('none', 'l1', 'cosine')
TEACHER_UPDATES = ('task', 'frozen')
NET_NAMES = {'dsr': 'DSRNet', 'denet': 'DENet', 'spnet': 'SPNet'}


@dataclasses.dataclass(frozen=True)
class Phase:
  name: str
  trainable: tuple[tuple[str, bool], ...]  # ((net, bool), ...): the optimizer mask
  terms: tuple[Term, ...] = ()
  teacher: int = NO_TEACHER

  @property
  def train(self) -> dict:
    return dict(self.trainable)

  @property
  def students(self) -> tuple[str, ...]:
    return tuple(dict.fromkeys(t.student for t in self.terms if t.student))


def _trainable(dsr, denet, spnet):
  return (('dsr', dsr), ('denet', denet), ('spnet', spnet))


def make_phases(config) -> dict:
  """Every phase of this config, by name. The phases are static (hashable): one compiled step each."""
  loss_cfg, t = config.loss, config.train
  use_de = bool(config.model.use_denet)
  use_sp = use_de and bool(config.model.use_spnet)
  task = t.teacher_update == 'task'
  both = ('dsr', 'denet')

  def phase(name, trainable, where, teacher=NO_TEACHER):
    return Phase(name, trainable, terms_lib.place(loss_cfg, where), teacher)

  if config.model.teacher:  # never with DENet (check_config)
    return {'dsr_only': phase('dsr_only', _trainable(True, False, False) + (('teacher', False),),
                              terms_lib.Where(task=('dsr',), teacher=True))}
  phases = {'dsr_only': phase('dsr_only', _trainable(True, False, False), terms_lib.Where(task=('dsr',)))}
  if not use_de:
    return phases
  phases['stage1'] = phase('stage1', _trainable(True, True, False), terms_lib.Where(task=both))
  for student, teacher_code, name in (('dsr', DENET, 'dsr_student'), ('denet', DSR, 'de_student')):
    # 'frozen': the teacher has no optimizer step, no task loss and no gradient at all (Algorithm 1).
    trains = {'dsr': student == 'dsr' or task, 'denet': student == 'denet' or task}
    where = terms_lib.Where(task=tuple(n for n in both if trains[n]), students=(student,),
                            structure=(both if task else (student,)) if use_sp else ())
    phases[name] = phase(name, _trainable(trains['dsr'], trains['denet'], use_sp), where, teacher_code)
  if t.roles == 'mutual':  # its own compiled step, built only where it can run
    where = terms_lib.Where(task=both, students=both, structure=both if use_sp else ())
    phases['mutual'] = phase('mutual', _trainable(True, True, use_sp), where, MUTUAL)
  return phases


def pick_teacher(e_dsr: float, e_de: float) -> int:
  """Algorithm 1: the network with the LOWER mean error of the previous round teaches; ties go to DSRNet."""
  return DSR if e_dsr <= e_de else DENET


def role_rule(roles: str):
  """(e_dsr, e_de) -> teacher code for train.roles."""
  fixed = {'fixed_denet': DENET, 'fixed_dsr': DSR, 'mutual': MUTUAL}
  if roles in fixed:
    code = fixed[roles]
    return lambda e_dsr, e_de: code
  return pick_teacher


def phase_for(phases: dict, teacher: int, cross_task: bool = True) -> Phase:
  if not cross_task:
    return phases['dsr_only']
  return phases[{NO_TEACHER: 'stage1', DSR: 'de_student', DENET: 'dsr_student', MUTUAL: 'mutual'}[teacher]]


def is_round_start(step: int, stage1_steps: int, round_steps: int) -> bool:
  """True where stage 2 starts a new round (roles are re-picked before this step runs)."""
  return step >= stage1_steps and (step - stage1_steps) % round_steps == 0


PICK, RESTART = 'pick', 'restart'  # Rounds.boundary: a new teacher, or only fresh error sums


class Rounds:
  """The host's side of the role exchange: where each round starts, its teacher, and each step's phase.

  The teacher changes only at a round's start, so the host keeps this copy instead of reading state.teacher
  every step (a host sync that would stall asynchronous dispatch). The rounds' mean errors live in the train
  state (steps.start_round); the loop reads them at a PICK boundary and hands them to `pick_next`.
  """

  def __init__(self, config, rule=None):
    """rule: (e_dsr, e_de) of the finished round -> the next teacher; default role_rule(train.roles)."""
    t = config.train
    self.phases = make_phases(config)
    self.cross_task = bool(config.model.use_denet)
    self.stage1_steps, self.round_steps = t.stage1_steps, t.round_steps
    self.pick = rule or role_rule(t.roles)
    self.teacher = NO_TEACHER

  def resume(self, teacher: int, prev_err) -> bool:
    """Takes a checkpoint's teacher. A 'mutual' one resumed under other train.roles has no phase here: this
    round's teacher is then picked by the new rule from the previous round's errors. True when the teacher
    changed, so that the state stores the new one."""
    self.teacher = teacher
    if teacher == MUTUAL and 'mutual' not in self.phases:
      self.teacher = self.pick(float(prev_err[0]), float(prev_err[1]))
      return True
    return False

  def boundary(self, step: int):
    """PICK where stage 2 starts a round, RESTART where a round of stage 1 (or of "w/o CT") starts, else None."""
    if self.cross_task and is_round_start(step, self.stage1_steps, self.round_steps):
      return PICK
    if (not self.cross_task or step < self.stage1_steps) and step % self.round_steps == 0 and step > 0:
      return RESTART
    return None

  def pick_next(self, mean_err) -> int:
    """The next round's teacher from the finished round's mean errors (e_dsr, e_de)."""
    self.teacher = self.pick(float(mean_err[0]), float(mean_err[1]))
    return self.teacher

  def phase(self, step: int) -> Phase:
    in_stage2 = self.cross_task and step >= self.stage1_steps
    return phase_for(self.phases, self.teacher if in_stage2 else NO_TEACHER, self.cross_task)

  @property
  def shown_teacher(self):
    """The teacher the console names (None without cross-task transfer)."""
    return self.teacher if self.cross_task else None


def check_config(config) -> None:
  """train.roles, train.teacher_update and train.stage1_steps, and loss.affinity (config_lib checks the types
  and ranges of every field); ConfigError names the field."""
  t = config.train
  cross_task = bool(config.model.use_denet)
  if not 0 <= t.stage1_steps <= t.num_steps:
    raise ConfigError(f'train.stage1_steps={t.stage1_steps!r}: expected an integer in [0, train.num_steps]')
  if t.roles not in ROLES:
    raise ConfigError(f'train.roles={t.roles!r}: expected one of {", ".join(map(repr, ROLES))}')
  if t.teacher_update not in TEACHER_UPDATES:
    raise ConfigError(f'train.teacher_update={t.teacher_update!r}: expected one of '
                      f'{", ".join(map(repr, TEACHER_UPDATES))}')
  if t.roles == 'mutual' and t.teacher_update == 'frozen':
    raise ConfigError("train.roles='mutual' with train.teacher_update='frozen': in mutual transfer both "
                      "networks learn in every step; expected teacher_update='task' (or another train.roles)")
  if cross_task and t.roles == 'rule' and t.stage1_steps == 0:
    # The first round's teacher is picked by the warm-up's errors; without any, an untrained net would teach.
    raise ConfigError('train.stage1_steps=0: cross-task training picks its first teacher from the warm-up '
                      "stage's errors; expected stage1_steps >= 1 (or train.roles other than 'rule')")
  if config.loss.affinity not in ('cosine', 'raw'):
    raise ConfigError(f"loss.affinity={config.loss.affinity!r}: expected 'cosine' or 'raw'")
  check_teacher(config)


def check_teacher(config) -> None:
  """model.teacher_checkpoint, the teacher's place in a run, and loss.feature_distill (models.check checks
  model.teacher's name; restore-time problems with the checkpoint are found where it is loaded)."""
  m = config.model
  if m.teacher and not m.teacher_checkpoint:
    raise ConfigError(f'model.teacher_checkpoint={m.teacher_checkpoint!r}: model.teacher={m.teacher!r} is '
                      f'loaded from a trained checkpoint; expected the teacher\'s workdir (train one with '
                      f'model.name={m.teacher!r}, model.use_denet=False)')
  if m.teacher_checkpoint and not m.teacher:
    raise ConfigError(f'model.teacher_checkpoint={m.teacher_checkpoint!r}: expected model.teacher to name its '
                      f'network ({", ".join(map(repr, TEACHERS))}), or no checkpoint')
  if (m.teacher or m.name in TEACHERS) and m.use_denet:
    what = 'model.teacher' if m.teacher else 'model.name'
    raise ConfigError(f'{what}={m.teacher or m.name!r} with model.use_denet=True: a frozen teacher and a teacher '
                      'trained alone have no cross-task partner; expected model.use_denet=False')
  if config.loss.feature_distill not in FEATURE_DISTILL:
    raise ConfigError(f'loss.feature_distill={config.loss.feature_distill!r}: expected one of '
                      f'{", ".join(map(repr, FEATURE_DISTILL))}')
