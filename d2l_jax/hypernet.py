"""The Doc-to-LoRA hypernetwork: a Perceiver (Idefics2-style resampler) over base-model activations.

For each base layer l whose activations are used, with context features x_l [seq, d]:

  c = SwiGLU(d -> 4d -> latent)(x_l)                                    # [seq, latent]
  z = learned latents                                                   # [n_latents, latent]
  encoder block (x num_blocks), keys/values from the context only:
      z = z + PostAttnNorm(CrossAttn(LatentNorm(z), ContextNorm(c)))
      z = z + PostMLPNorm(SwiGLU(PreMLPNorm(z)))
  z = Norm(z)
  decoder: the same block once, queries = learned output slots, context = z; then Norm
  per layer: h = s + LN(W2_l silu(W1_l LN(s)))   (ResMLP, 4x)      # s: a slot [latent]
             h = h / |h|;  [a; b] = Head_l h                  # a row of A (d_in), of B (d_out)
  A[l, j] = scaler_A[l, j] a_j     B[l, :, j] = scaler_B[l, j] b_j      (scaler_A = 1, scaler_B = 0)

Attention is grouped-query (16 heads of 128, 4 KV heads at the reference's sizes). With features
from every layer (all but the last) the Perceiver runs per layer, one layer after another (weights
shared across layers, or one Perceiver per layer) and has modules x r output slots; with one
feature map (the state after L // 4 layers, the reference's NIAH setting) it runs once with
layers x modules x r slots.
Beside the chunk's adapter the module returns the learned context-free bias adapter (bias_A small
normal, bias_B = 0), which `chunking.combine` appends to the chunk adapters.

Initialisation follows the reference: head weights N(0, 0.5 / sqrt(latent + d_lora r)) with
d_lora = max(d_in + d_out) over modules, bias_A N(0, 0.2 / sqrt(d_in r)); step 0 is a zero delta.
Parameters carry logical axis names (`hyper_latent`, `hyper_mlp`, `hyper_heads`, `embed`, `layers`)
so a mesh shards them by the rules table (hyperlora.sharding).
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

# Parameter-name fragments the reference exempts from weight decay: scalers, biases (including the
# bias adapter), norms and the learned latent queries / output slots.
NO_DECAY = ("scaler", "bias", "norm", "latents", "slots")


@dataclasses.dataclass(frozen=True)
class D2LSpec:
  modules: tuple[str, ...]
  dims: tuple[tuple[int, int], ...]  # (d_in, d_out) per module
  num_layers: int  # base layers that get an adapter
  feature_dim: int  # base hidden size
  per_layer_features: bool = True  # False: one feature map for all layers (NIAH setting)
  # With per-layer features: one Perceiver for all layers, or one each.
  shared_perceiver: bool = True
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
    return cls(
      modules=modules,
      dims=tuple(config.projection_dims(m) for m in modules),
      num_layers=config.num_layers,
      feature_dim=config.hidden_size,
      **kwargs,
    )

  @property
  def scale(self) -> float:
    return 2 * self.rank**1.5  # the reference's lora_alpha, applied as is (not alpha / r)

  @property
  def head_init_std(self) -> float:
    d_lora = max(d_in + d_out for d_in, d_out in self.dims)
    return 0.5 / math.sqrt(self.latent + d_lora * self.rank)


def _dense(features: int, axes: tuple[str, str], name: str, use_bias: bool = False) -> nn.Dense:
  return nn.Dense(
    features,
    use_bias=use_bias,
    name=name,
    kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
  )


def _norm(name: str) -> RMSNorm:
  return RMSNorm(1e-6, name=name)


class SwiGLU(nn.Module):
  hidden: int
  out: int
  in_axis: str = "hyper_latent"

  @nn.compact
  def __call__(self, x):
    gate = _dense(self.hidden, (self.in_axis, "hyper_mlp"), "gate")(x)
    up = _dense(self.hidden, (self.in_axis, "hyper_mlp"), "up")(x)
    return _dense(self.out, ("hyper_mlp", "hyper_latent"), "down")(nn.silu(gate) * up)


class CrossAttention(nn.Module):
  """Queries from x, keys/values from the context only; grouped-query heads."""

  heads: int
  kv_heads: int
  head_dim: int

  @nn.compact
  def __call__(self, x, context, context_mask=None):  # x [q, latent]; context [k, latent]; mask [k]
    group = self.heads // self.kv_heads
    proj = lambda n, name: _dense(n * self.head_dim, ("hyper_latent", "hyper_heads"), name)
    q = proj(self.heads, "q_proj")(x).reshape(x.shape[0], self.kv_heads, group, self.head_dim)
    k = proj(self.kv_heads, "k_proj")(context).reshape(
      context.shape[0], self.kv_heads, self.head_dim
    )
    v = proj(self.kv_heads, "v_proj")(context).reshape(
      context.shape[0], self.kv_heads, self.head_dim
    )
    scores = jnp.einsum("qkgd,skd->kgqs", q, k).astype(jnp.float32) / math.sqrt(self.head_dim)
    if context_mask is not None:
      scores = jnp.where(context_mask, scores, -1e30)
    probs = jax.nn.softmax(scores, axis=-1).astype(x.dtype)
    out = jnp.einsum("kgqs,skd->qkgd", probs, v).reshape(x.shape[0], self.heads * self.head_dim)
    return _dense(x.shape[-1], ("hyper_heads", "hyper_latent"), "o_proj")(out)


class PerceiverBlock(nn.Module):
  """Idefics2's resampler layer: pre-norm cross-attention and SwiGLU, each with a post-norm before
  its residual add."""

  spec: D2LSpec

  @nn.compact
  def __call__(self, z, context, mask=None):  # z [q, latent]; context [k, latent]
    s = self.spec
    attn = CrossAttention(s.heads, s.kv_heads, s.head_dim, name="attn")
    z = z + _norm("post_attn_norm")(
      attn(_norm("latent_norm")(z), _norm("context_norm")(context), mask)
    )
    mlp = SwiGLU(s.mlp_ratio * s.latent, s.latent, name="mlp")
    return z + _norm("post_mlp_norm")(mlp(_norm("pre_mlp_norm")(z)))


class Perceiver(nn.Module):
  """Context features [seq, feature_dim] -> output slots [n_slots, latent]."""

  spec: D2LSpec
  n_slots: int

  @nn.compact
  def __call__(self, features, mask=None):
    s = self.spec
    queries = lambda name, n: self.param(
      name,
      nn.with_logical_partitioning(nn.initializers.normal(1.0), (None, "hyper_latent")),
      (n, s.latent),
    )
    context = SwiGLU(s.mlp_ratio * s.feature_dim, s.latent, in_axis="embed", name="input_mlp")(
      features
    )
    z = queries("latents", s.n_latents)  # [n_latents, latent]
    for i in range(s.num_blocks):
      z = PerceiverBlock(s, name=f"block{i}")(z, context, mask)
    z = _norm("encoder_norm")(z)
    slots = PerceiverBlock(s, name="decoder")(queries("slots", self.n_slots), z)
    return _norm("decoder_norm")(slots)  # [n_slots, latent]


class _LayerPerceiver(Perceiver):
  """The Perceiver as nn.scan's step over feature maps: (carry, features, mask) -> (carry, y)."""

  def __call__(self, carry, features, mask=None):
    return carry, super().__call__(features, mask)


class D2LHypernet(nn.Module):
  spec: D2LSpec
  # Recompute each layer's Perceiver in the backward pass (training memory: one feature map's
  # activations are live at a time instead of every layer's).
  remat: bool = False

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
      # One layer's feature map at a time: its input MLP's [seq, 4 d] activations are the largest
      # tensor of the hypernetwork, too large to hold for every layer at once on long chunks.
      step = nn.remat(_LayerPerceiver, prevent_cse=False) if self.remat else _LayerPerceiver
      shared = s.shared_perceiver
      perceiver = nn.scan(
        step,
        variable_axes={} if shared else {"params": 0},
        variable_broadcast="params" if shared else False,
        split_rngs={"params": not shared},
        in_axes=(0, nn.broadcast),
        metadata_params={nn.PARTITION_NAME: "layers"},
      )(s, n_mod * r, name="perceiver")
      _, slots = perceiver(None, features, mask)  # [L, modules * r, latent]
    else:
      slots = Perceiver(s, L * n_mod * r, name="perceiver")(features[0], mask)
    slots = slots.reshape(L, n_mod, r, s.latent)

    def per_layer(name, shape, init, axes):  # a parameter with a leading layer axis
      return self.param(name, nn.with_logical_partitioning(init, ("layers",) + axes), (L,) + shape)

    # ResMLP with per-layer weights (the norms are shared), applied to every layer's own slots.
    hidden = s.mlp_ratio * s.latent
    fan_in = lambda: nn.initializers.lecun_normal(batch_axis=(0,))
    w1 = per_layer("resmlp_w1", (s.latent, hidden), fan_in(), ("hyper_latent", "hyper_mlp"))
    b1 = per_layer("resmlp_bias1", (hidden,), nn.initializers.zeros, ("hyper_mlp",))
    w2 = per_layer("resmlp_w2", (hidden, s.latent), fan_in(), ("hyper_mlp", "hyper_latent"))
    b2 = per_layer("resmlp_bias2", (s.latent,), nn.initializers.zeros, ("hyper_latent",))
    x = nn.LayerNorm(name="resmlp_in_norm")(slots)
    x = nn.silu(jnp.einsum("lmrd,ldh->lmrh", x, w1) + b1[:, None, None])
    x = jnp.einsum("lmrh,lhd->lmrd", x, w2) + b2[:, None, None]
    h = slots + nn.LayerNorm(name="resmlp_out_norm")(x)
    h = h / jnp.maximum(jnp.linalg.norm(h, axis=-1, keepdims=True), 1e-6)

    weights, bias = {}, {}
    for m, (name, (d_in, d_out)) in enumerate(zip(s.modules, s.dims)):
      bias[name] = {
        "A": per_layer(
          f"bias_A_{name}",
          (r, d_in),
          nn.initializers.normal(0.2 / math.sqrt(d_in * r)),
          (None, None),
        ),
        "B": per_layer(f"bias_B_{name}", (d_out, r), nn.initializers.zeros, (None, None)),
      }
      head = per_layer(
        f"head_{name}",
        (s.latent, d_in + d_out),
        nn.initializers.normal(s.head_init_std),
        ("hyper_latent", "hyper_out"),
      )
      rows = jnp.einsum("lrd,ldo->lro", h[:, m], head)  # [L, r, d_in + d_out]
      scaler_a = per_layer(f"scaler_A_{name}", (r,), nn.initializers.ones, (None,))
      scaler_b = per_layer(f"scaler_B_{name}", (r,), nn.initializers.zeros, (None,))
      a = rows[..., :d_in] * scaler_a[..., None]  # [L, r, d_in]
      b = jnp.swapaxes(rows[..., d_in:] * scaler_b[..., None], -1, -2)  # [L, d_out, r]
      weights[name] = {"A": a, "B": b}
    return LoRA(weights, s.scale), LoRA(bias, s.scale)
