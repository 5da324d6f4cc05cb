"""Bytes held by what a method keeps for a document or runs to answer: arrays, KV caches, adapters,
compiled programs (in MB, 1e6 bytes), for the evaluation's cost table and the memory benchmark."""

from __future__ import annotations

import jax


def array_mb(tree) -> float:
  """Bytes held by the arrays of a pytree (an adapter's weights, a KV cache)."""
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)) / 1e6


def kv_cache_mb(model_config, tokens: int, bytes_per_value: int = 4) -> float:
  """Keys and values of every layer for `tokens` tokens of context."""
  c = model_config
  return 2 * c.num_layers * c.num_kv_heads * c.head_dim * tokens * bytes_per_value / 1e6


def lora_mb(model_config, modules, rank: int, bytes_per_value: int = 4) -> float:
  """A LoRA of `rank` on `modules` of every layer, from the shapes alone: r (d_in + d_out) each."""
  per_layer = sum(rank * sum(model_config.projection_dims(m)) for m in modules)
  return model_config.num_layers * per_layer * bytes_per_value / 1e6


def program_mb(jitted, *args) -> float:
  """Peak bytes XLA assigns to one compiled program (arguments + outputs + temporaries)."""
  stats = jitted.lower(*args).compile().memory_analysis()
  return (
    stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
  ) / 1e6
