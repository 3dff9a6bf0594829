"""The loss terms' registry (dsr_jax/terms.py): a term is one Spec, and the logged order only grows."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dsr_jax.configs import test as test_config
from dsr_jax import losses
from dsr_jax import models as models_lib
from dsr_jax import roles
from dsr_jax import state as state_lib
from dsr_jax import steps
from dsr_jax import terms

pytestmark = pytest.mark.usefixtures('fast_xla')

# A checkpoint's TrainState.bad_term indexes the logged order: names are only ever appended.
LOGGED = ('total', 'dsr', 'de', 'struct', 'out', 'aff', 'e_dsr', 'e_de', 'side_dsr', 'side_de',
          'kd_out', 'kd_feat', 'kd_aff', 'e_teacher')


def test_the_logged_order_only_grows():
  assert terms.TERMS[:len(LOGGED)] == LOGGED
  assert steps.TERMS is terms.TERMS and len(set(terms.TERMS)) == len(terms.TERMS)


def test_every_term_is_one_spec_with_a_logged_name():
  names = [s.name for s in terms.SPECS]
  assert len(names) == len(set(names)) and set(names) <= set(terms.TERMS)
  with pytest.raises(ValueError, match="unknown loss term 'nope'"):
    terms.value(terms.Term('nope', 1.0, (('dsr', 1.0),)), {}, {}, {}, models=None, loss_cfg=None)


def test_a_new_term_is_one_entry(monkeypatch):
  """One more Spec, and the phases hold it and loss_fn sums it: nothing else changes."""
  def tv(term, o, x):  # a smoothness term on DSRNet's output
    del term
    d = o['dsr'].depth
    return losses.masked_mean(jnp.abs(d[:, 1:] - d[:, :-1]), x.batch['valid'][:, 1:])

  spec = terms.Spec('tv', tv, lambda loss_cfg, where: (terms.At(0.5, (('dsr', 1.0),)),)
                    if 'dsr' in where.task else ())
  monkeypatch.setattr(terms, 'SPECS', terms.SPECS + (spec,))
  monkeypatch.setattr(terms, 'TERMS', terms.TERMS + ('tv',))
  cfg = test_config.get_config()
  cfg.model.use_denet = cfg.model.use_spnet = False
  phase = roles.make_phases(cfg)['dsr_only']
  assert [t.name for t in phase.terms] == ['dsr', 'tv']
  models = models_lib.build(cfg.model)
  params = state_lib.init_params(models, jax.random.key(0), cfg.model.scale)
  crop, s = cfg.data.crop, cfg.model.scale
  hr = jax.random.uniform(jax.random.key(1), (2, crop, crop, 1))
  batch = {'hr_depth': hr, 'lr_depth': hr[:, ::s, ::s], 'valid': jnp.ones_like(hr)}
  total, logged, parts = steps.loss_fn(params, batch, models=models, phase=phase, loss_cfg=cfg.loss, parts=True)
  alone = dataclasses.replace(phase, terms=phase.terms[:1])
  base, _ = steps.loss_fn(params, batch, models=models, phase=alone, loss_cfg=cfg.loss)
  assert float(logged['tv']) > 0 and float(parts['tv']) == pytest.approx(0.5 * float(logged['tv']))
  np.testing.assert_allclose(float(total), float(base) + float(parts['tv']), rtol=1e-6)
