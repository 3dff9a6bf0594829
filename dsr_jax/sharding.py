"""Device mesh and shardings: the batch is split on 'data', parameters are replicated.

The mesh axis is `Auto`, not `Explicit` (jax 0.10's default for make_mesh): the networks reshape
feature maps (pixel shuffles), and under Explicit axes every such reshape would need an `out_sharding`,
tying model code to the mesh. With only the batch dimension sharded, the compiler propagates it exactly.
"""
import jax
import numpy as np
from jax.sharding import AxisType
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def make_mesh(devices=None) -> jax.sharding.Mesh:
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), ('data',), axis_types=(AxisType.Auto,), devices=devices)


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def to_global(batch, mesh):
  """Process-local numpy batch -> global jax arrays sharded on 'data' (multi-host safe)."""
  sh = data_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sh, np.asarray(x)), batch)
