"""The Doc-to-LoRA hypernetwork: a Perceiver (Idefics2-style resampler) over base-model activations.

For each base layer l whose activations are used, with context features x_l [seq, d]:

  c   = SwiGLU(d -> 4d -> latent)(x_l)                           # [seq, latent]
  z   = learned latents                                          # [n_latents, latent]
  z   = z + CrossAttn(RMSNorm(z), RMSNorm(c)); z = z + SwiGLU(RMSNorm(z))    x num_blocks
  s   = slots + CrossAttn(RMSNorm(slots), RMSNorm(z))            # [n_slots, latent] output slots
  per layer: h = ResMLP_l(s); h = h / |h|; [a; b] = Head_l(h)    # a row of A (d_in), of B (d_out)
  A[l, j] = scaler_A[l, j] * a_j     B[l, :, j] = scaler_B[l, j] * b_j     (scaler_A = 1, scaler_B = 0)

Keys and values come from the context only; attention is grouped-query (16 heads of 128, 4 KV heads
at the reference sizes). With features from every layer (all but the last), the Perceiver runs per
layer (weights shared across layers, or one Perceiver per layer) and n_slots = modules x r; with one feature map (the state after L//4
layers, the reference's NIAH setting) it runs once and n_slots = layers x modules x r.
The learned context-free bias adapter (bias_A kaiming, bias_B = 0) is returned beside the chunk's
adapter: it joins the chunk adapters in `chunking.combine`.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from hyperlora.lora import LoRA
from hyperlora.models.config import ModelConfig
from hyperlora.models.layers import RMSNorm


@dataclasses.dataclass(frozen=True)
class D2LSpec:
  modules: tuple[str, ...]
  dims: tuple[tuple[int, int], ...]  # (d_in, d_out) per module
  num_layers: int  # base layers that get an adapter
  feature_dim: int  # base hidden size
  per_layer_features: bool = True  # False: one feature map for all layers (NIAH setting)
  shared_perceiver: bool = True  # with per-layer features: one Perceiver for all layers, or one each
  rank: int = 8
  latent: int = 512
  n_latents: int = 8
  num_blocks: int = 9
  heads: int = 16
  kv_heads: int = 4
  head_dim: int = 128
  mlp_ratio: int = 4

  @classmethod
  def for_model(cls, config: ModelConfig, modules=("down_proj",), **kwargs) -> "D2LSpec":
    modules = tuple(modules)
    return cls(modules=modules, dims=tuple(config.projection_dims(m) for m in modules),
               num_layers=config.num_layers, feature_dim=config.hidden_size, **kwargs)

  @property
  def scale(self) -> float:
    return 2 * self.rank**1.5  # the reference's lora_alpha, applied as is (not alpha / r)

  @property
  def slots_per_layer(self) -> int:
    return len(self.modules) * self.rank


class SwiGLU(nn.Module):
  hidden: int
  out: int

  @nn.compact
  def __call__(self, x):
    gate = nn.Dense(self.hidden, use_bias=False, name="gate")(x)
    up = nn.Dense(self.hidden, use_bias=False, name="up")(x)
    return nn.Dense(self.out, use_bias=False, name="down")(nn.silu(gate) * up)


class CrossAttention(nn.Module):
  """Queries from x, keys/values from the context only; grouped-query heads."""

  heads: int
  kv_heads: int
  head_dim: int

  @nn.compact
  def __call__(self, x, context, context_mask=None):  # x [q, d]; context [k, d]; mask [k]
    group = self.heads // self.kv_heads
    q = nn.Dense(self.heads * self.head_dim, use_bias=False, name="q_proj")(x)
    k = nn.Dense(self.kv_heads * self.head_dim, use_bias=False, name="k_proj")(context)
    v = nn.Dense(self.kv_heads * self.head_dim, use_bias=False, name="v_proj")(context)
    q = q.reshape(x.shape[0], self.kv_heads, group, self.head_dim)
    k = k.reshape(context.shape[0], self.kv_heads, self.head_dim)
    v = v.reshape(context.shape[0], self.kv_heads, self.head_dim)
    scores = jnp.einsum("qkgd,skd->kgqs", q, k).astype(jnp.float32) / math.sqrt(self.head_dim)
    if context_mask is not None:
      scores = jnp.where(context_mask, scores, -1e30)
    probs = jax.nn.softmax(scores, axis=-1).astype(x.dtype)
    out = jnp.einsum("kgqs,skd->qkgd", probs, v).reshape(x.shape[0], self.heads * self.head_dim)
    return nn.Dense(x.shape[-1], use_bias=False, name="o_proj")(out)


class Perceiver(nn.Module):
  """Context features [seq, feature_dim] -> output slots [n_slots, latent]."""

  spec: D2LSpec
  n_slots: int

  @nn.compact
  def __call__(self, features, mask=None):
    s = self.spec
    attn = lambda name: CrossAttention(s.heads, s.kv_heads, s.head_dim, name=name)
    norm = lambda name: RMSNorm(1e-6, name=name)
    context = SwiGLU(s.mlp_ratio * s.feature_dim, s.latent, name="input_mlp")(features)
    context = norm("context_norm")(context)
    z = self.param("latents", nn.initializers.normal(1.0), (s.n_latents, s.latent))
    for i in range(s.num_blocks):
      z = z + attn(f"block{i}_attn")(norm(f"block{i}_norm1")(z), context, mask)
      z = z + SwiGLU(s.mlp_ratio * s.latent, s.latent, name=f"block{i}_mlp")(norm(f"block{i}_norm2")(z))
    z = norm("post_norm")(z)
    slots = self.param("slots", nn.initializers.normal(1.0), (self.n_slots, s.latent))
    return slots + attn("decoder_attn")(norm("slot_norm")(slots), z)  # [n_slots, latent]


class D2LHypernet(nn.Module):
  spec: D2LSpec

  @nn.compact
  def __call__(self, features, mask=None) -> tuple[LoRA, LoRA]:
    """features [layers_used, seq, feature_dim] (or [1, seq, d] for one shared feature map);
    mask [seq]. Returns (this chunk's adapter, the learned bias adapter), each with
    A [L, r, d_in] and B [L, d_out, r] per module."""
    s = self.spec
    n_mod, r, L = len(s.modules), s.rank, s.num_layers
    if s.per_layer_features:
      if features.shape[0] != L:
        raise ValueError(f"need features of all {L} adapted layers, got {features.shape[0]}")
      perceiver = nn.vmap(Perceiver, variable_axes={"params": None if s.shared_perceiver else 0},
                          split_rngs={"params": not s.shared_perceiver}, in_axes=(0, None),
                          metadata_params={nn.PARTITION_NAME: "layers"})(
                              s, n_mod * r, name="perceiver")
      slots = perceiver(features, mask)  # [L, modules * r, latent]
    else:
      slots = Perceiver(s, L * n_mod * r, name="perceiver")(features[0], mask).reshape(L, n_mod * r, s.latent)
    slots = slots.reshape(L, n_mod, r, s.latent)

    # Per-layer weights (a leading layer axis), applied to every layer's own slots.
    per_layer = lambda name, shape, init: self.param(name, init, (L,) + shape)
    w1 = per_layer("resmlp_w1", (s.latent, s.latent), nn.initializers.lecun_normal(batch_axis=(0,)))
    w2 = per_layer("resmlp_w2", (s.latent, s.latent), nn.initializers.lecun_normal(batch_axis=(0,)))
    h = slots + jnp.einsum("lmrd,lde->lmre", nn.silu(jnp.einsum("lmrd,lde->lmre", slots, w1)), w2)
    h = h / jnp.maximum(jnp.linalg.norm(h, axis=-1, keepdims=True), 1e-6)
    weights, bias = {}, {}
    for m, (name, (d_in, d_out)) in enumerate(zip(s.modules, s.dims)):
      bound = 1.0 / math.sqrt(d_in)  # PEFT's default A init; B = 0
      bias[name] = {
          "A": per_layer(f"bias_A_{name}", (r, d_in), lambda k, sh: jax.random.uniform(k, sh, jnp.float32, -bound, bound)),
          "B": per_layer(f"bias_B_{name}", (d_out, r), nn.initializers.zeros),
      }
      head = per_layer(f"head_{name}", (s.latent, d_in + d_out), nn.initializers.lecun_normal(batch_axis=(0,)))
      rows = jnp.einsum("lrd,ldo->lro", h[:, m], head)  # [L, r, d_in + d_out]
      scaler_a = per_layer(f"scaler_A_{name}", (r,), nn.initializers.ones)
      scaler_b = per_layer(f"scaler_B_{name}", (r,), nn.initializers.zeros)
      a = rows[..., :d_in] * scaler_a[..., None]  # [L, r, d_in]
      b = jnp.swapaxes(rows[..., d_in:] * scaler_b[..., None], -1, -2)  # [L, d_out, r]
      weights[name] = {"A": a, "B": b}
    return LoRA(weights, s.scale), LoRA(bias, s.scale)
