"""The loss terms, each declared whole in one `Spec`: its logged name, its value, and where it goes.

A new term is one `Spec` in SPECS (its value and its placement written beside it) and its name appended to
TERMS; a new weight knob also needs its field in configs/default.py, where every knob is documented.
losses.py keeps the formulas; roles.py builds the phases' skeletons (optimizer masks, teacher codes) and
asks `place` for each phase's terms; steps.loss_fn asks `value` for each term's value.
"""
import dataclasses
import itertools
from typing import Any, Callable, NamedTuple

import jax

from dsr_jax import losses

# Logged loss terms, in the order used by TrainState.bad_term.
# New names are appended: a checkpoint's bad_term indexes this tuple. Besides the terms of SPECS it holds
# 'total' and the values loss_fn logs without training on them.
TERMS = ('total', 'dsr', 'de', 'struct', 'out', 'aff', 'e_dsr', 'e_de', 'side_dsr', 'side_de',
         'kd_out', 'kd_feat', 'kd_aff', 'e_teacher')


@dataclasses.dataclass(frozen=True)
class Term:
  """total += weight * value of the loss term `name` (a Spec's name: `place` writes it).

  reach: ((net, factor), ...): the networks whose parameters this term's gradient may reach; a net there
    receives factor * weight of the term's gradient. Factors other than 1 are only allowed for a net that
    this term alone uses (SPNet learns L_struct at unit weight while the depth nets see rho1 * L_struct).
    Every other network's outputs enter the term under stop_gradient.
  student: for the distillation terms, the network that learns; its teacher's outputs are targets.
  """
  name: str
  weight: float
  reach: tuple[tuple[str, float], ...]
  student: str = ''

  @property
  def nets(self) -> tuple[str, ...]:
    return tuple(n for n, _ in self.reach)


@dataclasses.dataclass(frozen=True)
class Where:
  """What a phase offers its terms (roles.make_phases says it for each phase).

  task: the depth networks that learn their own task loss here.
  students: the depth networks that learn from the other one (cross-task distillation), in this order.
  structure: the depth networks whose features see rho1 * L_struct; () = SPNet is not in this phase.
  teacher: a frozen teacher (model.teacher) is read, and DSRNet learns from it.
  """
  task: tuple[str, ...] = ()
  students: tuple[str, ...] = ()
  structure: tuple[str, ...] = ()
  teacher: bool = False


class Inputs(NamedTuple):
  """What a term's value may read besides the networks' outputs."""
  batch: dict
  params: Any
  models: Any
  loss_cfg: Any


@dataclasses.dataclass(frozen=True)
class Spec:
  """One loss term.

  value: (term, outs, inputs) -> scalar, where outs are the networks' train-mode outputs as this term sees
    them (those outside its reach under stop_gradient).
  place: (loss_cfg, where) -> the term's placements in a phase, each an At; () where it is not there.
  per_student: place runs once per student of the phase, so that a student's distillation terms are summed
    together ('mutual': out>dsr, aff>dsr, out>denet, aff>denet).
  """
  name: str
  value: Callable[[Term, dict, Inputs], Any]
  place: Callable[[Any, Where], tuple['At', ...]]
  per_student: bool = False


class At(NamedTuple):
  """Where one of a Spec's terms goes in a phase: a Term less its name, which `place` takes from the Spec."""
  weight: float
  reach: tuple[tuple[str, float], ...]
  student: str = ''


def side_l1(sides, hr, v):
  return losses.side_l1(sides, [hr] * len(sides), v)  # side supervision: every side output against D_hr


def _other(net: str) -> str:
  return 'denet' if net == 'dsr' else 'dsr'


# ---------------------------------------------------------------- task losses


def _task(net: str):
  # Weight 1 and the net alone: a task loss never needs a knob.
  return lambda loss_cfg, where: (At(1.0, ((net, 1.0),)),) if net in where.task else ()


def _dsr(term, o, x):  # L_DSR (+ side supervision, docs/method.md rule 1)
  del term
  hr, v, sw = x.batch['hr_depth'], x.batch['valid'], x.loss_cfg.side_weight
  value = losses.l1(o['dsr'].depth, hr, v)
  return value + sw * side_l1(o['dsr'].sides, hr, v) if sw else value


def _de(term, o, x):  # L_DE = SSIM + L1 (+ side supervision)
  del term
  hr, v, sw = x.batch['hr_depth'], x.batch['valid'], x.loss_cfg.side_weight
  value = losses.de_loss(o['denet'].depth, hr, v, x.loss_cfg.ssim_lambda)
  return value + sw * side_l1(o['denet'].sides, hr, v) if sw else value


# ---------------------------------------------------------------- cross-task distillation (L_distill)


def _out(term, o, x):  # L_O towards the teacher's side outputs
  return losses.side_l1(o[term.student].sides, o[_other(term.student)].sides, x.batch['valid'])


def _place_out(loss_cfg, where):
  return tuple(At(loss_cfg.rho2, ((s, 1.0),), s) for s in where.students)


def _affinity(student, teacher, x):
  c = x.loss_cfg
  return losses.feature_affinity(student.feats, teacher.feats, x.batch['valid'], c.affinity_pool,
                                 kind=c.affinity, tau=c.affinity_tau)


def _aff(term, o, x):  # L_A towards the teacher's feature affinities
  return _affinity(o[term.student], o[_other(term.student)], x)


def _place_aff(loss_cfg, where):
  if not loss_cfg.use_affinity:
    return ()
  return tuple(At(loss_cfg.rho2 * loss_cfg.gamma, ((s, 1.0),), s) for s in where.students)


# ---------------------------------------------------------------- scene structure (L_struct)


def _struct(term, o, x):
  hr, v = x.batch['hr_depth'], x.batch['valid']
  factor = dict(term.reach)['spnet']
  sp = x.params['spnet']
  sp_params = losses.scale_gradient(sp, factor) if factor != 1.0 else sp
  d_sr, d_de = o['dsr'].depth, o['denet'].depth
  if x.loss_cfg.detach_uncertainty:  # docs/method.md, rule 4: the uncertainty branch sees constant depths
    d_sr, d_de = jax.lax.stop_gradient((d_sr, d_de))
  s_pred = x.models.spnet.apply({'params': sp_params}, o['dsr'].feats[-1], o['denet'].feats[-1],
                                d_sr, d_de, hr)
  return losses.l1(s_pred, losses.gradient_magnitude(hr), losses.gradient_valid(v))


def _place_struct(loss_cfg, where):
  # SPNet always learns L_struct at unit weight; the depth nets' features see rho1 * L_struct. With rho1 = 0
  # only SPNet learns it (the depth nets' inputs are cut off).
  if not where.structure:
    return ()
  rho1 = loss_cfg.rho1
  if rho1 <= 0:
    return (At(1.0, (('spnet', 1.0),)),)
  return (At(rho1, (('spnet', 1.0 / rho1),) + tuple((n, 1.0) for n in where.structure)),)


# ---------------------------------------------------------------- towards a frozen teacher (model.teacher)


def _kd_out(term, o, x):  # L_O on the main output, and on the side outputs as L_DSR weighs them
  student, teacher, v = o[term.student], o['teacher'], x.batch['valid']
  value = losses.l1(student.depth, teacher.depth, v)
  sw = x.loss_cfg.side_weight
  return value + sw * losses.side_l1(student.sides, teacher.sides, v) if sw else value


def _kd_feat(term, o, x):
  return losses.feature_distance(o[term.student].feats, o['teacher'].feats, x.batch['valid'],
                                 x.loss_cfg.feature_distill)


def _kd_aff(term, o, x):
  return _affinity(o[term.student], o['teacher'], x)


def _from_teacher(weight: Callable[[Any], float]):
  # The teacher's outputs are targets: the term reaches DSRNet alone. A zero weight leaves the term out, so
  # that nothing is computed for it.
  def place(loss_cfg, where):
    w = weight(loss_cfg)
    return (At(w, (('dsr', 1.0),), 'dsr'),) if where.teacher and w > 0 else ()
  return place


# The order in which a phase's terms are summed (float sums depend on it); TERMS is the logged order.
SPECS = (
    Spec('dsr', _dsr, _task('dsr')),
    Spec('de', _de, _task('denet')),
    Spec('out', _out, _place_out, per_student=True),
    Spec('aff', _aff, _place_aff, per_student=True),
    Spec('struct', _struct, _place_struct),
    Spec('kd_out', _kd_out, _from_teacher(lambda c: c.kd_out_weight)),
    Spec('kd_feat', _kd_feat, _from_teacher(lambda c: c.kd_feature_weight if c.feature_distill != 'none' else 0.0)),
    Spec('kd_aff', _kd_aff, _from_teacher(lambda c: c.kd_affinity_weight)),
)


# Read from SPECS at each call, not once at import, so that SPECS stays the one list to change.
def by_name() -> dict:
  specs = {s.name: s for s in SPECS}
  assert len(specs) == len(SPECS) and set(specs) <= set(TERMS), 'every term: one Spec, its name in TERMS'
  return specs


def per_student() -> tuple[str, ...]:
  """The terms placed once per student, logged as the mean over the students."""
  return tuple(s.name for s in SPECS if s.per_student)


def place(loss_cfg, where: Where) -> tuple[Term, ...]:
  """The terms of a phase, in SPECS's order; a run of per-student Specs is repeated for each student."""
  terms = ()
  for per_student, run in itertools.groupby(SPECS, key=lambda s: s.per_student):
    run = tuple(run)
    wheres = [dataclasses.replace(where, students=(s,)) for s in where.students] if per_student else [where]
    terms += tuple(Term(spec.name, *at) for w in wheres for spec in run for at in spec.place(loss_cfg, w))
  return terms


def _cut(outputs: dict, nets) -> dict:
  """The networks' outputs as one term sees them: those of networks outside its reach are constants."""
  return {k: o if k in nets else jax.lax.stop_gradient(o) for k, o in outputs.items()}


def value(term: Term, outs: dict, params, batch, *, models, loss_cfg):
  """The raw value of one loss term on `outs` (the networks' train-mode outputs)."""
  specs = by_name()
  if term.name not in specs:
    raise ValueError(f'unknown loss term {term.name!r}')
  return specs[term.name].value(term, _cut(outs, term.nets), Inputs(batch, params, models, loss_cfg))
