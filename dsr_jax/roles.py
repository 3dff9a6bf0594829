"""Phases and the role exchange (ARCHITECTURE.md "Schedule").

There are three compiled train steps, one per phase: stage 1 (both depth nets on their own losses),
DSR-student (DENet is the frozen teacher) and DE-student (DSRNet is the frozen teacher). The phase is a
static argument of the step, so a role switch picks another already-compiled step and never recompiles.
"""
import dataclasses

from dsr_jax.errors import ConfigError

DSR, DENET = 0, 1  # Teacher codes stored in the train state; -1 = no teacher (stage 1).
NO_TEACHER = -1


@dataclasses.dataclass(frozen=True)
class Phase:
  name: str
  trainable: tuple[tuple[str, bool], ...]  # ((net, bool), ...): hashable, so the phase can be static.

  @property
  def train(self) -> dict:
    return dict(self.trainable)

  @property
  def student(self) -> str:
    return {'dsr_student': 'dsr', 'de_student': 'denet'}.get(self.name, '')


def _phase(name, dsr, denet, spnet):
  return Phase(name, (('dsr', dsr), ('denet', denet), ('spnet', spnet)))


STAGE1 = _phase('stage1', True, True, False)
DSR_STUDENT = _phase('dsr_student', True, False, True)
DE_STUDENT = _phase('de_student', False, True, True)
DSR_ONLY = _phase('dsr_only', True, False, False)  # "w/o CT": DSRNet alone on L_DSR.
PHASES = {p.name: p for p in (STAGE1, DSR_STUDENT, DE_STUDENT, DSR_ONLY)}


def pick_teacher(e_dsr: float, e_de: float, fixed: str = '') -> int:
  """The network with the LOWER mean error of the previous round teaches; ties go to DSRNet."""
  if fixed:
    return {'dsr': DSR, 'denet': DENET}[fixed]
  return DSR if e_dsr <= e_de else DENET


def phase_for(teacher: int, cross_task: bool = True) -> Phase:
  if not cross_task:
    return DSR_ONLY
  return {NO_TEACHER: STAGE1, DSR: DE_STUDENT, DENET: DSR_STUDENT}[teacher]


def is_round_start(step: int, stage1_steps: int, round_steps: int) -> bool:
  """True where stage 2 starts a new round (roles are re-picked before this step runs)."""
  return step >= stage1_steps and (step - stage1_steps) % round_steps == 0


def validate(train_cfg, cross_task: bool) -> None:
  t = train_cfg
  for name in ('num_steps', 'round_steps', 'batch_size'):
    if not isinstance(t[name], int) or t[name] < 1:
      raise ConfigError(f'train.{name}={t[name]!r}: expected a positive integer')
  if not isinstance(t.stage1_steps, int) or not 0 <= t.stage1_steps <= t.num_steps:
    raise ConfigError(f'train.stage1_steps={t.stage1_steps!r}: expected an integer in [0, train.num_steps]')
  if t.fixed_teacher not in ('', 'dsr', 'denet'):
    raise ConfigError(f"train.fixed_teacher={t.fixed_teacher!r}: expected '', 'dsr' or 'denet'")
  if cross_task and not t.fixed_teacher and t.stage1_steps == 0:
    # The first round's teacher is picked by the warm-up's errors; without any, an untrained net would teach.
    raise ConfigError('train.stage1_steps=0: cross-task training picks its first teacher from the warm-up '
                      "stage's errors; expected stage1_steps >= 1 (or a train.fixed_teacher)")
