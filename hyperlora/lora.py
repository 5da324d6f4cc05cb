"""The LoRA pytree shared by both hypernetworks, and the operations on it.

weights = {module: {"A": [batch?, layers, r, d_in], "B": [batch?, layers, d_out, r]}}; the effective
weight change of a module in a layer is dW = scale * B @ A ([d_out, d_in], HF orientation). With the
leading batch axis, each example of a batch has its own adapter.
"""

from __future__ import annotations

import math

import flax.struct
import jax
import jax.numpy as jnp

from hyperlora.models.config import LORA_TARGETS, ModelConfig

Array = jax.Array


@flax.struct.dataclass
class LoRA:
  weights: dict[str, dict[str, Array]]
  scale: float = flax.struct.field(pytree_node=False, default=1.0)

  @property
  def modules(self) -> tuple[str, ...]:
    return tuple(sorted(self.weights))

  @property
  def rank(self) -> int:
    return next(iter(self.weights.values()))["A"].shape[-2]

  @property
  def is_batched(self) -> bool:
    return next(iter(self.weights.values()))["A"].ndim == 4

  @property
  def batch_size(self) -> int | None:
    return next(iter(self.weights.values()))["A"].shape[0] if self.is_batched else None

  def check_modules(self) -> None:
    unknown = sorted(set(self.weights) - set(LORA_TARGETS))
    if unknown:
      raise ValueError(
        f"LoRA targets unknown module(s) {unknown}; choose from {sorted(LORA_TARGETS)}"
      )

  def layer_major(self) -> "LoRA":
    """Moves the layer axis first ([layers, batch, ...]) so the layer scan can slice it."""
    if not self.is_batched:
      return self
    return self.replace(weights=jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), self.weights))

  def example(self, i: int) -> "LoRA":
    """The adapter of example i of a batched LoRA."""
    return self.replace(weights=jax.tree.map(lambda x: x[i], self.weights))


def stack(loras: list[LoRA]) -> LoRA:
  """Per-example adapters (same modules, rank and scale) -> one batched LoRA."""
  if len({(l.modules, l.rank, l.scale) for l in loras}) != 1:
    raise ValueError("can only stack adapters with the same modules, rank and scale")
  return LoRA(jax.tree.map(lambda *xs: jnp.stack(xs), *[l.weights for l in loras]), loras[0].scale)


def rslora_scale(alpha: float, rank: int) -> float:
  return alpha / math.sqrt(rank)


def standard_scale(alpha: float, rank: int) -> float:
  return alpha / rank


def init(
  rng: Array,
  config: ModelConfig,
  modules,
  rank: int,
  scale: float = 1.0,
  batch: int | None = None,
  b_std: float = 0.0,
  dtype=jnp.float32,
) -> LoRA:
  """PEFT-style init: A kaiming-uniform (a=sqrt(5)), B = 0 unless b_std > 0 (random adapter)."""
  lead = (() if batch is None else (batch,)) + (config.num_layers,)
  weights = {}
  for module, key in zip(modules, jax.random.split(rng, len(modules))):
    d_in, d_out = config.projection_dims(module)
    key_a, key_b = jax.random.split(key)
    bound = 1.0 / math.sqrt(d_in)  # kaiming_uniform with a=sqrt(5) on a [r, d_in] weight
    a = jax.random.uniform(key_a, lead + (rank, d_in), dtype, -bound, bound)
    b = b_std * jax.random.normal(key_b, lead + (d_out, rank), dtype)
    weights[module] = {"A": a, "B": b}
  return LoRA(weights, scale)


def delta_weights(lora: LoRA) -> dict[str, Array]:
  """dW = scale * B @ A per module: [batch?, layers, d_out, d_in]."""
  return {
    m: lora.scale * jnp.einsum("...or,...ri->...oi", w["B"], w["A"])
    for m, w in lora.weights.items()
  }


def fold_scale(lora: LoRA) -> LoRA:
  """The same adapter with its scale multiplied into B (scale becomes 1)."""
  return LoRA({m: {"A": w["A"], "B": w["B"] * lora.scale} for m, w in lora.weights.items()}, 1.0)


def pad_rank(lora: LoRA, rank: int) -> LoRA:
  """The same adapter at a higher rank: A gains zero rows and B zero columns, so B @ A and the
  applied dW are exactly unchanged (serving engines accept only some ranks)."""
  if rank < lora.rank:
    raise ValueError(f"cannot pad an adapter of rank {lora.rank} down to {rank}")
  extra = rank - lora.rank
  pad = lambda x, axis: jnp.concatenate(
    [x, jnp.zeros(x.shape[:axis] + (extra,) + x.shape[axis + 1 :], x.dtype)], axis=axis
  )
  weights = {
    m: {"A": pad(w["A"], w["A"].ndim - 2), "B": pad(w["B"], w["B"].ndim - 1)}
    for m, w in lora.weights.items()
  }
  return LoRA(weights, lora.scale)


def concat_rank(loras: list[LoRA]) -> LoRA:
  """One adapter whose dW is the sum of the inputs' dW: A and B concatenated along rank.

  Inputs with different scales have them folded into B first, so they combine exactly; inputs
  that share a scale keep it (their B stays as generated).
  """
  if len({l.scale for l in loras}) > 1:
    loras = [fold_scale(l) for l in loras]
  if len({l.modules for l in loras}) != 1:
    raise ValueError("can only combine adapters on the same modules")
  weights = {
    m: {
      "A": jnp.concatenate([l.weights[m]["A"] for l in loras], axis=-2),
      "B": jnp.concatenate([l.weights[m]["B"] for l in loras], axis=-1),
    }
    for m in loras[0].modules
  }
  return LoRA(weights, loras[0].scale)


def merge(params: dict, lora: LoRA) -> dict:
  """Base params with an unbatched adapter merged into the kernels (kernel is [layers, d_in,
  d_out])."""
  if lora.is_batched:
    raise ValueError("merge takes one adapter; select one with lora.example(i)")
  layers = jax.tree.map(lambda x: x, params["layers"])  # Shallow copy of the nested dicts.
  for module, dw in delta_weights(lora).items():
    holder = layers[LORA_TARGETS[module]][module]
    holder["kernel"] = holder["kernel"] + jnp.swapaxes(dw, -1, -2).astype(holder["kernel"].dtype)
  return {**params, "layers": layers}


def check_compatible(lora: LoRA, config: ModelConfig, source: str = "adapter") -> None:
  """Raises ValueError naming the first module whose shapes do not fit the base model."""
  lora.check_modules()
  for module, w in lora.weights.items():
    d_in, d_out = config.projection_dims(module)
    rank = w["A"].shape[-2]
    want_a, want_b = (config.num_layers, rank, d_in), (config.num_layers, d_out, rank)
    if w["A"].shape[-3:] != want_a or w["B"].shape[-3:] != want_b:
      raise ValueError(
        f"{source} does not fit base model {config.name or config.family!r}: {module} has "
        f"A {tuple(w['A'].shape[-3:])}, B {tuple(w['B'].shape[-3:])} but the base needs "
        f"A {want_a}, B {want_b} ([layers, r, d_in], [layers, d_out, r]); was it made for "
        f"another model?"
      )
