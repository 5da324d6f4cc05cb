"""Building blocks shared by every family: RMSNorm, rotary embeddings, LoRA-patched dense."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def logical_param(module: nn.Module, name: str, init, shape, dtype, axes: tuple[str, ...]):
  """A parameter annotated with logical axis names (mapped to mesh axes in hyperlora.sharding)."""
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


class RMSNorm(nn.Module):
  """y = x / rms(x) * w, computed in float32; Gemma stores w - 1 (`offset`)."""

  eps: float
  offset: bool = False
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    init = nn.initializers.zeros if self.offset else nn.initializers.ones
    weight = logical_param(self, "scale", init, (x.shape[-1],), self.param_dtype, ("norm",))
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    if self.offset:  # Gemma multiplies in float32, then casts.
      return (normed * (1.0 + weight.astype(jnp.float32))).astype(x.dtype)
    return weight.astype(x.dtype) * normed.astype(x.dtype)  # Llama casts, then multiplies.


def rotary_cos_sin(positions: Array, inv_freq: Array) -> tuple[Array, Array]:
  """cos, sin [batch, seq, head_dim] for the half-split ("rotate_half") rotary layout."""
  angles = positions[..., None].astype(jnp.float32) * inv_freq  # [batch, seq, head_dim / 2]
  angles = jnp.concatenate([angles, angles], axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rotary(x: Array, cos: Array, sin: Array) -> Array:
  """x [batch, seq, heads, head_dim] rotated by position."""
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  cos, sin = cos[:, :, None, :].astype(x.dtype), sin[:, :, None, :].astype(x.dtype)
  return x * cos + rotated * sin


def lora_delta(x: Array, a: Array, b: Array, scale: float) -> Array:
  """scale * x A^T B^T without forming B A.

  x: [batch, seq, d_in]; A: [r, d_in] (shared) or [batch, r, d_in] (one adapter per example);
  B: [d_out, r] or [batch, d_out, r]. Returns [batch, seq, d_out].
  """
  a, b = a.astype(x.dtype), b.astype(x.dtype)
  if a.ndim == 2:
    down = jnp.einsum("btd,rd->btr", x, a)
    up = jnp.einsum("btr,or->bto", down, b)
  else:
    down = jnp.einsum("btd,brd->btr", x, a)
    up = jnp.einsum("btr,bor->bto", down, b)
  return up * jnp.asarray(scale, x.dtype)


def lora_delta_per_device(x: Array, a: Array, b: Array, scale: float, mesh, batch_axes) -> Array:
  """lora_delta as a per-device program (shard_map): each device applies its own examples'
  adapters to its own rows, with no communication. Needs per-example A, B ([batch, ...])."""
  spec = jax.sharding.PartitionSpec(batch_axes)
  per_device = lambda x, a, b: lora_delta(x, a, b, scale)
  return jax.shard_map(per_device, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec)(x, a, b)


class LoRADense(nn.Module):
  """y = x W (+ bias) + scale * x A^T B^T, with W stored [d_in, d_out] (HF weight transposed).

  With `mesh` set, per-example adapters are applied by a shard_map program over the batch axes.
  """

  features: int
  axes: tuple[str, str]
  use_bias: bool = False
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  mesh: object = None
  batch_axes: tuple[str, ...] = ("data", "fsdp")
  # PEFT's lora_dropout: dropout on the adapter's input only (the frozen path sees x unchanged).
  # Non-zero only in training; needs a 'dropout' rng.
  lora_dropout: float = 0.0

  @nn.compact
  def __call__(self, x: Array, lora: dict | None = None, lora_scale: float = 1.0) -> Array:
    kernel = logical_param(
      self,
      "kernel",
      nn.initializers.lecun_normal(),
      (x.shape[-1], self.features),
      self.param_dtype,
      self.axes,
    )
    y = jnp.einsum("btd,df->btf", x, kernel.astype(self.dtype))
    if self.use_bias:
      bias = logical_param(
        self, "bias", nn.initializers.zeros, (self.features,), self.param_dtype, self.axes[1:]
      )
      y = y + bias.astype(self.dtype)
    if lora is not None:
      if self.lora_dropout:
        x = nn.Dropout(self.lora_dropout, deterministic=False)(x)  # [batch, seq, d_in]
      if self.mesh is not None and lora["A"].ndim == 3:
        y = y + lora_delta_per_device(
          x, lora["A"], lora["B"], lora_scale, self.mesh, self.batch_axes
        )
      else:
        y = y + lora_delta(x, lora["A"], lora["B"], lora_scale)
    return y
