"""A LoRA-patchable decoder-only transformer in Flax Linen, one module for every family.

Layers are stacked on a leading axis and run with `nn.scan`, so compile time does not grow with
depth. Family differences (Gemma-2's sandwich norms and soft-capping, Qwen's biases and q/k norms,
sliding windows) are flags on `ModelConfig`; a per-layer boolean says which layers attend locally.

LoRA enters as an argument, never as a parameter: `lora` is a `hyperlora.lora.LoRA` whose leaves are
A [batch?, layers, r, d_in] and B [batch?, layers, d_out, r]; with the batch axis each example of
the batch gets its own adapter.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from hyperlora.models.config import ModelConfig
from hyperlora.models.layers import LoRADense, RMSNorm, apply_rotary, rotary_cos_sin

Array = jax.Array

ACTIVATIONS = {
  "silu": nn.silu,
  "gelu_pytorch_tanh": functools.partial(nn.gelu, approximate=True),
  "gelu": functools.partial(nn.gelu, approximate=False),
}
# Logical names of activations (hyperlora.sharding.RULES maps them onto the mesh).
ACT_RESIDUAL = ("activation_batch", "activation_length", "activation_embed")
ACT_MLP = ("activation_batch", "activation_length", "activation_mlp")
ACT_HEADS = ("activation_batch", "activation_length", "activation_heads")
_MASKED = -0.7 * float(jnp.finfo(jnp.float32).max)  # Finite, so fully masked rows stay NaN-free.


@flax.struct.dataclass
class KVCache:
  """Fixed-size key/value cache; slot `index` is the next one written."""

  k: Array  # [layers, batch, max_len, kv_heads, head_dim]
  v: Array  # [layers, batch, max_len, kv_heads, head_dim]
  positions: Array  # [batch, max_len] rotary position of each slot
  valid: Array  # [batch, max_len] False for empty slots and padding
  index: Array  # [] int32

  @classmethod
  def init(cls, config: ModelConfig, batch: int, max_len: int, dtype=jnp.float32) -> "KVCache":
    shape = (config.num_layers, batch, max_len, config.num_kv_heads, config.head_dim)
    return cls(
      k=jnp.zeros(shape, dtype),
      v=jnp.zeros(shape, dtype),
      positions=jnp.zeros((batch, max_len), jnp.int32),
      valid=jnp.zeros((batch, max_len), bool),
      index=jnp.zeros((), jnp.int32),
    )


class Output(NamedTuple):
  logits: Array  # [batch, seq, vocab] float32 ([batch, 1, vocab] with only_last_logits)
  cache: KVCache | None
  # [layers + 1, batch, seq, hidden]: the embeddings, then every layer's output (as transformers,
  # except that the last entry is not normed). hidden_states[l] is the input of layer l.
  hidden_states: Array | None


class _Block(nn.Module):
  """Fields shared by the attention and MLP blocks, and their LoRA-patched projections."""

  config: ModelConfig
  lora_scale: float
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  lora_mesh: object = None
  lora_dropout: float = 0.0

  def project(self, name, features, axes, x, lora, use_bias=False):
    dense = LoRADense(
      features,
      axes,
      use_bias,
      self.dtype,
      self.param_dtype,
      mesh=self.lora_mesh,
      lora_dropout=self.lora_dropout,
      name=name,
    )
    return dense(x, (lora or {}).get(name), self.lora_scale)


class Attention(_Block):
  @nn.compact
  def __call__(self, x, cos, sin, mask, lora, cache_kv, cache_index):
    c = self.config
    batch, seq, _ = x.shape
    bias = c.attention_bias
    q = self.project("q_proj", c.num_heads * c.head_dim, ("embed", "heads"), x, lora, bias)
    k = self.project("k_proj", c.num_kv_heads * c.head_dim, ("embed", "kv_heads"), x, lora, bias)
    v = self.project("v_proj", c.num_kv_heads * c.head_dim, ("embed", "kv_heads"), x, lora, bias)
    q = q.reshape(batch, seq, c.num_heads, c.head_dim)  # [batch, seq, heads, head_dim]
    k = k.reshape(batch, seq, c.num_kv_heads, c.head_dim)  # [batch, seq, kv_heads, head_dim]
    v = v.reshape(batch, seq, c.num_kv_heads, c.head_dim)
    if c.qk_norm:
      q = RMSNorm(c.rms_norm_eps, param_dtype=self.param_dtype, name="q_norm")(q)
      k = RMSNorm(c.rms_norm_eps, param_dtype=self.param_dtype, name="k_norm")(k)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

    new_cache_kv = None
    if cache_kv is not None:
      cache_k, cache_v = cache_kv
      k = jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype), (0, cache_index, 0, 0))
      v = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), (0, cache_index, 0, 0))
      new_cache_kv = (k, v)
      k, v = k.astype(self.dtype), v.astype(self.dtype)

    # Grouped-query attention: query head h reads kv head h // group.
    group = c.num_heads // c.num_kv_heads
    q = q.reshape(batch, seq, c.num_kv_heads, group, c.head_dim)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k).astype(jnp.float32) * c.attention_scale
    if c.attn_logit_softcap is not None:
      scores = jnp.tanh(scores / c.attn_logit_softcap) * c.attn_logit_softcap
    scores = jnp.where(mask[:, None, None], scores, _MASKED)  # [batch, kv, group, seq, kv_len]
    probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v).reshape(batch, seq, c.num_heads * c.head_dim)
    out = nn.with_logical_constraint(out, ACT_HEADS)  # [batch, seq, heads * head_dim]
    out = self.project("o_proj", c.hidden_size, ("heads", "embed"), out, lora)
    return out, new_cache_kv


class MLP(_Block):
  @nn.compact
  def __call__(self, x, lora):
    c = self.config
    gate = self.project("gate_proj", c.intermediate_size, ("embed", "mlp"), x, lora)
    up = self.project("up_proj", c.intermediate_size, ("embed", "mlp"), x, lora)
    hidden = ACTIVATIONS[c.hidden_act](gate) * up  # [batch, seq, intermediate]
    hidden = nn.with_logical_constraint(hidden, ACT_MLP)
    return self.project("down_proj", c.hidden_size, ("mlp", "embed"), hidden, lora)


class DecoderLayer(nn.Module):
  """One pre-norm block; Gemma-2 adds norms after attention and around the MLP."""

  config: ModelConfig
  lora_scale: float
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  keep_hidden: bool
  lora_mesh: object = None
  lora_dropout: float = 0.0

  @nn.compact
  def __call__(self, h, is_local, lora, cache_kv, cos, sin, masks, cache_index):
    c = self.config
    norm = functools.partial(RMSNorm, c.rms_norm_eps, c.norm_offset, self.param_dtype)
    kw = dict(
      config=c,
      lora_scale=self.lora_scale,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      lora_mesh=self.lora_mesh,
      lora_dropout=self.lora_dropout,
    )
    mask = jnp.where(is_local, masks[1], masks[0])
    h = nn.with_logical_constraint(h, ACT_RESIDUAL)  # block boundary: [batch, seq, hidden]
    attn_out, new_cache_kv = Attention(**kw, name="self_attn")(
      norm(name="input_layernorm")(h), cos, sin, mask, lora, cache_kv, cache_index
    )
    if c.sandwich_norm:
      attn_out = norm(name="post_attention_layernorm")(attn_out)
    h = h + attn_out
    pre_mlp = "pre_feedforward_layernorm" if c.sandwich_norm else "post_attention_layernorm"
    mlp_out = MLP(**kw, name="mlp")(norm(name=pre_mlp)(h), lora)
    if c.sandwich_norm:
      mlp_out = norm(name="post_feedforward_layernorm")(mlp_out)
    h = nn.with_logical_constraint(h + mlp_out, ACT_RESIDUAL)  # [batch, seq, hidden]
    return h, (new_cache_kv, h if self.keep_hidden else None)


def _attention_masks(positions, kv_positions, kv_valid, q_slots, kv_len, window):
  """(global, local) boolean masks [batch, seq, kv_len]: causal by slot, local by position."""
  causal = jnp.arange(kv_len)[None, None, :] <= q_slots[None, :, None]
  global_mask = causal & kv_valid[:, None, :]
  if window is None:
    return global_mask, global_mask
  distance = positions[:, :, None] - kv_positions[:, None, :]
  return global_mask, global_mask & (distance < window)


class Transformer(nn.Module):
  """Decoder-only LLM. `__call__(tokens, ..., lora=None)` is the plain model when lora is None."""

  config: ModelConfig
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  remat: bool = False  # Recompute each layer in the backward pass (training memory).
  # A mesh here applies per-example LoRA with a shard_map program (see layers.LoRADense).
  lora_mesh: object = None

  @nn.compact
  def __call__(
    self,
    tokens,
    attention_mask=None,
    positions=None,
    lora=None,
    cache=None,
    return_hidden_states=False,
    only_last_logits=False,
    logits_at=None,
    embed_noise=None,
    lora_dropout: float = 0.0,
  ) -> Output:
    """tokens [batch, seq] int; attention_mask [batch, seq] (1 = real token, 0 = padding).

    logits_at [batch, k] (positions) computes logits only there: training needs them on answer
    tokens alone, and the vocabulary projection is otherwise a large share of the step.

    positions default to the count of real tokens before each one (left padding works); with a
    cache they continue from the cached tokens.

    embed_noise [batch, seq, hidden] is added to the token embeddings (NEFTune in training).
    lora_dropout > 0 drops the adapter's inputs (training only; needs a 'dropout' rng).
    """
    c = self.config
    batch, seq = tokens.shape
    if attention_mask is None:
      attention_mask = jnp.ones((batch, seq), bool)
    attention_mask = attention_mask.astype(bool)
    past = 0 if cache is None else jnp.sum(cache.valid, axis=-1, keepdims=True)
    if positions is None:
      positions = past + jnp.maximum(jnp.cumsum(attention_mask, axis=-1) - 1, 0)

    if cache is None:
      kv_positions, kv_valid, start, kv_len = positions, attention_mask, 0, seq
    else:
      start, kv_len = cache.index, cache.k.shape[2]
      kv_positions = jax.lax.dynamic_update_slice(
        cache.positions, positions.astype(jnp.int32), (0, start)
      )
      kv_valid = jax.lax.dynamic_update_slice(cache.valid, attention_mask, (0, start))
    masks = _attention_masks(
      positions, kv_positions, kv_valid, start + jnp.arange(seq), kv_len, c.sliding_window
    )
    cos, sin = rotary_cos_sin(positions, jnp.asarray(c.inverse_frequencies()))

    embed = nn.Embed(
      c.vocab_size,
      c.hidden_size,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed")),
      name="embed_tokens",
    )
    h = embed(tokens)  # [batch, seq, hidden]
    if embed_noise is not None:
      h = h + embed_noise.astype(h.dtype)
    if c.scale_embeddings:
      h = h * jnp.asarray(c.hidden_size**0.5, self.dtype)
    embedded = h

    layer_lora = None
    if lora is not None:
      lora.check_modules()
      layer_lora = lora.layer_major().weights  # leaves [layers, batch?, ...] for the scan
    cache_kv = None if cache is None else (cache.k, cache.v)

    layer_cls = nn.remat(DecoderLayer, prevent_cse=False) if self.remat else DecoderLayer
    layers = nn.scan(
      layer_cls,
      variable_axes={"params": 0},
      split_rngs={"params": True, "dropout": True},
      in_axes=(0, 0, 0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
      length=c.num_layers,
      metadata_params={nn.PARTITION_NAME: "layers"},
    )
    h, (new_cache_kv, hidden_states) = layers(
      config=c,
      lora_scale=1.0 if lora is None else lora.scale,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      keep_hidden=return_hidden_states,
      lora_mesh=self.lora_mesh,
      lora_dropout=lora_dropout if lora is not None else 0.0,
      name="layers",
    )(h, jnp.asarray(c.local_layers), layer_lora, cache_kv, cos, sin, masks, start)
    if return_hidden_states:
      hidden_states = jnp.concatenate([embedded[None], hidden_states], axis=0)
    h = RMSNorm(c.rms_norm_eps, c.norm_offset, self.param_dtype, name="norm")(h)
    if only_last_logits:
      h = h[:, -1:]
    elif logits_at is not None:
      h = jnp.take_along_axis(h, logits_at[..., None], axis=1)  # [batch, k, hidden]
    if c.tie_word_embeddings:
      logits = embed.attend(h)
    else:
      logits = LoRADense(
        c.vocab_size,
        ("embed", "vocab"),
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name="lm_head",
      )(h)
    logits = logits.astype(jnp.float32)
    if c.final_logit_softcap is not None:
      logits = jnp.tanh(logits / c.final_logit_softcap) * c.final_logit_softcap

    new_cache = None
    if cache is not None:
      new_cache = KVCache(
        k=new_cache_kv[0],
        v=new_cache_kv[1],
        positions=kv_positions,
        valid=kv_valid,
        index=cache.index + seq,
      )
    return Output(logits, new_cache, hidden_states)
