"""Meshes and the one table that maps logical axis names to mesh axes.

Models annotate parameters with logical names (`embed`, `heads`, `mlp`, `vocab`, `layers`, ...);
`RULES` says which mesh axis (`data`, `fsdp`, `tensor`) shards each. A config may override the
table. Dimensions a mesh axis does not divide are replicated instead (with a log line), so one
rules table serves every model size.

Activations are constrained by logical names too (`activation_batch`, ... as MaxText does): the
decoder pins its residual stream at every block boundary to [batch over data and fsdp, length,
embed replicated], so XLA gathers fsdp-sharded weights instead of contracting over their sharded
dimension and all-reducing activations. The constraints apply while a step is traced inside
`activation_rules(mesh, rules)` (the train step and `hyperlora plan` do this) and are no-ops
elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
import math

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")
RULES = (
  ("batch", ("data", "fsdp")),
  ("vocab", "tensor"),
  ("embed", "fsdp"),
  ("heads", "tensor"),
  ("kv_heads", "tensor"),
  ("mlp", "tensor"),
  ("layers", None),
  ("norm", None),
  ("hyper_in", "fsdp"),  # hypernetwork heads: [head_in, r (d_in + d_out)]
  ("hyper_out", "tensor"),
  ("hyper_latent", "fsdp"),  # D2L Perceiver: latent width, MLP width, attention heads
  ("hyper_mlp", "tensor"),
  ("hyper_heads", "tensor"),
  # Activations: [batch, length, embed] residual stream, MLP hidden and attention heads.
  ("activation_batch", ("data", "fsdp")),
  ("activation_length", None),
  ("activation_embed", None),
  ("activation_mlp", "tensor"),
  ("activation_heads", "tensor"),
)


@contextlib.contextmanager
def activation_rules(mesh: Mesh, rules=RULES):
  """While a step is traced: the mesh and rules the models' activation constraints read."""
  with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(rules):
    yield


def constrained(fn, mesh: Mesh, rules=RULES):
  """fn traced inside activation_rules(mesh, rules): what gets jitted for a mesh."""

  def traced(*args):
    with activation_rules(mesh, rules):
      return fn(*args)

  return traced


def rules_from_config(mesh_config) -> tuple:
  """RULES with a config's overrides: mesh_config.rules holds (logical name, mesh axis or axes or
  None) pairs that replace (or add to) the entries of the table."""
  overrides = {
    name: (tuple(axes) if isinstance(axes, list) else axes)
    for name, axes in mesh_config.get("rules", ())
  }
  unknown = [
    a
    for axes in overrides.values()
    for a in ((axes,) if isinstance(axes, str) else axes or ())
    if a not in MESH_AXES
  ]
  if unknown:
    raise ValueError(f"mesh.rules names mesh axes {unknown}; the mesh axes are {MESH_AXES}")
  table = dict(RULES)
  table.update(overrides)
  return tuple(table.items())


def place(base, mesh_config) -> tuple[Mesh, tuple, dict]:
  """(mesh, rules, base params sharded onto it) for a config's `mesh` section: what every trainer
  and loader of a run uses. The base params are frozen (never donated)."""
  mesh, rules = make_mesh(dict(mesh_config)), rules_from_config(mesh_config)
  return mesh, rules, shard_base_params(base.params, base.module(), mesh, rules)


def make_mesh(shape: dict | tuple, devices=None) -> Mesh:
  """A (data, fsdp, tensor) mesh. shape: {'data': 2, 'fsdp': -1, 'tensor': 1}; one -1 fills."""
  devices = jax.devices() if devices is None else devices
  sizes = [shape[a] for a in MESH_AXES] if isinstance(shape, dict) else list(shape)
  if sizes.count(-1) > 1:
    raise ValueError("at most one mesh axis may be -1")
  known = math.prod(s for s in sizes if s != -1)
  sizes = [len(devices) // known if s == -1 else s for s in sizes]
  if math.prod(sizes) != len(devices):
    raise ValueError(
      f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
      f"but {len(devices)} are available"
    )
  try:  # on TPU, mesh axes laid onto the torus (a plain reshape on CPU)
    grid = mesh_utils.create_device_mesh(sizes, devices)
  except (AssertionError, NotImplementedError, ValueError):  # a shape the torus cannot take
    grid = np.asarray(devices).reshape(sizes)
  return Mesh(grid, MESH_AXES)


def _fit(spec: P, shape, mesh: Mesh) -> P:
  """Drops mesh axes that do not divide their dimension."""
  fitted = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    size = math.prod(mesh.shape[n] for n in names)
    if names and dim % size:
      log.info(
        "replicating a dimension of %d: mesh axes %s (size %d) do not divide it", dim, names, size
      )
      names = ()
    fitted.append(names[0] if len(names) == 1 else (names or None))
  return P(*fitted)


def shardings(abstract_boxed, mesh: Mesh, rules=RULES):
  """NamedShardings for a pytree whose leaves may be flax LogicallyPartitioned boxes."""
  logical = nn.get_partition_spec(abstract_boxed)
  is_box = lambda x: isinstance(x, nn.Partitioned)
  unboxed = jax.tree.map(lambda x: x.unbox() if is_box(x) else x, abstract_boxed, is_leaf=is_box)

  def one(spec, leaf):
    mesh_spec = nn.logical_to_mesh_axes(spec, rules) if spec is not None else P()
    return NamedSharding(mesh, _fit(mesh_spec, leaf.shape, mesh))

  return jax.tree.map(one, logical, unboxed, is_leaf=lambda x: isinstance(x, P) or x is None)


def batch_sharding(mesh: Mesh, rules=RULES) -> NamedSharding:
  """Leading (batch) axis over the data-parallel mesh axes."""
  return NamedSharding(mesh, P(dict(rules)["batch"]))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def shard_batch(batch: dict, mesh: Mesh, rules=RULES) -> dict:
  """A host batch (the process's own rows) -> global arrays sharded on their leading axis."""
  sharding = batch_sharding(mesh, rules)
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
  )


def shard_base_params(params: dict, model, mesh: Mesh, rules=RULES) -> dict:
  """Places frozen base-model params on the mesh by the model's logical annotations."""
  tokens = jax.ShapeDtypeStruct((1, 1), np.int32)
  abstract = jax.eval_shape(lambda t: model.init(jax.random.key(0), t), tokens)["params"]
  return jax.device_put(params, shardings(abstract, mesh, rules))
