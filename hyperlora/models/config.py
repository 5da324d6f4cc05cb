"""Model configuration: one frozen dataclass that serves every supported decoder family.

A Hugging Face config (already normalised by `transformers.AutoConfig`) is turned into a
`ModelConfig` by `from_hf_config`; the Flax model reads only this dataclass, so adding a family
means adding its flags here, not a new copy of the model.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

SUPPORTED_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma2")

# Projections a LoRA may target, with the sub-module that holds each (Hugging Face naming).
LORA_TARGETS = {
  "q_proj": "self_attn",
  "k_proj": "self_attn",
  "v_proj": "self_attn",
  "o_proj": "self_attn",
  "gate_proj": "mlp",
  "up_proj": "mlp",
  "down_proj": "mlp",
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Static description of a decoder-only LLM. Hashable, so it can be a jit static argument."""

  family: str
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  # Rotary scaling as a hashable tuple of (key, value) pairs, e.g. (("rope_type", "llama3"), ...).
  rope_scaling: tuple[tuple[str, Any], ...] = ()
  attention_bias: bool = False  # Qwen2: bias on q/k/v projections.
  qk_norm: bool = False  # Qwen3: RMSNorm on each query/key head before rotary.
  sliding_window: int | None = None
  # Per layer: True where the layer attends only within `sliding_window` (scanned input).
  local_layers: tuple[bool, ...] = ()
  attn_logit_softcap: float | None = None  # Gemma-2
  final_logit_softcap: float | None = None  # Gemma-2
  # Gemma-2: query_pre_attn_scalar ** -0.5; default head_dim ** -0.5.
  query_scale: float | None = None
  sandwich_norm: bool = False  # Gemma-2: extra norms after attention and around the MLP.
  norm_offset: bool = False  # Gemma: RMSNorm multiplies by (1 + weight).
  scale_embeddings: bool = False  # Gemma: embeddings multiplied by sqrt(hidden_size).
  hidden_act: str = "silu"
  tie_word_embeddings: bool = False
  bos_token_id: int | None = None
  eos_token_ids: tuple[int, ...] = ()
  pad_token_id: int | None = None
  max_position_embeddings: int = 8192
  name: str = ""

  def __post_init__(self):
    if not self.local_layers:
      object.__setattr__(self, "local_layers", (False,) * self.num_layers)
    if len(self.local_layers) != self.num_layers:
      raise ValueError(
        f"local_layers has {len(self.local_layers)} entries for {self.num_layers} layers"
      )

  @property
  def attention_scale(self) -> float:
    return self.query_scale if self.query_scale is not None else self.head_dim**-0.5

  def projection_dims(self, module: str) -> tuple[int, int]:
    """(d_in, d_out) of a LoRA-targetable projection."""
    q_width = self.num_heads * self.head_dim
    kv_width = self.num_kv_heads * self.head_dim
    dims = {
      "q_proj": (self.hidden_size, q_width),
      "k_proj": (self.hidden_size, kv_width),
      "v_proj": (self.hidden_size, kv_width),
      "o_proj": (q_width, self.hidden_size),
      "gate_proj": (self.hidden_size, self.intermediate_size),
      "up_proj": (self.hidden_size, self.intermediate_size),
      "down_proj": (self.intermediate_size, self.hidden_size),
    }
    if module not in dims:
      raise ValueError(f"unknown LoRA target module {module!r}; choose from {sorted(dims)}")
    return dims[module]

  def inverse_frequencies(self) -> np.ndarray:
    """Rotary inverse frequencies [head_dim // 2], including Llama-3 / linear scaling."""
    inv_freq = 1.0 / (
      self.rope_theta ** (np.arange(0, self.head_dim, 2, dtype=np.float64) / self.head_dim)
    )
    scaling = dict(self.rope_scaling)
    rope_type = scaling.get("rope_type", "default")
    if rope_type == "default":
      return inv_freq.astype(np.float32)
    if rope_type == "linear":
      return (inv_freq / scaling["factor"]).astype(np.float32)
    if rope_type == "llama3":
      # Llama-3.1: long wavelengths slowed by `factor`, short kept, a smooth blend between.
      factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
      original = scaling["original_max_position_embeddings"]
      wavelength = 2 * math.pi / inv_freq
      smooth = (original / wavelength - low) / (high - low)
      blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
      scaled = np.where(wavelength > original / low, inv_freq / factor, inv_freq)
      is_medium = (wavelength <= original / low) & (wavelength >= original / high)
      return np.where(is_medium, blended, scaled).astype(np.float32)
    raise NotImplementedError(
      f"rope_type {rope_type!r} is not supported; supported: default, linear, llama3"
    )


def _eos_ids(value) -> tuple[int, ...]:
  if value is None:
    return ()
  return tuple(value) if isinstance(value, (list, tuple)) else (int(value),)


def from_hf_config(hf_config, name: str = "") -> ModelConfig:
  """Builds a ModelConfig from a `transformers.PretrainedConfig` (any supported family)."""
  family = hf_config.model_type
  if family not in SUPPORTED_FAMILIES:
    raise ValueError(
      f"unsupported model_type {family!r}; supported: {', '.join(SUPPORTED_FAMILIES)}"
    )
  head_dim = (
    getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
  )
  rope = dict(getattr(hf_config, "rope_parameters", None) or {})
  rope_theta = rope.pop("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
  if rope.get("rope_type", "default") == "default":
    rope = {}
  layer_types = getattr(hf_config, "layer_types", None)
  window = getattr(hf_config, "sliding_window", None)
  if layer_types is not None:
    local_layers = tuple(t == "sliding_attention" for t in layer_types)
  else:  # Mistral: the window, when set, applies to every layer.
    local_layers = (window is not None,) * hf_config.num_hidden_layers
  is_gemma = family == "gemma2"
  query_scalar = getattr(hf_config, "query_pre_attn_scalar", None) if is_gemma else None
  return ModelConfig(
    family=family,
    vocab_size=hf_config.vocab_size,
    hidden_size=hf_config.hidden_size,
    intermediate_size=hf_config.intermediate_size,
    num_layers=hf_config.num_hidden_layers,
    num_heads=hf_config.num_attention_heads,
    num_kv_heads=getattr(hf_config, "num_key_value_heads", None) or hf_config.num_attention_heads,
    head_dim=head_dim,
    rms_norm_eps=hf_config.rms_norm_eps,
    rope_theta=float(rope_theta),
    rope_scaling=tuple(sorted(rope.items())),
    attention_bias=family == "qwen2" or bool(getattr(hf_config, "attention_bias", False)),
    qk_norm=family == "qwen3",
    sliding_window=window if any(local_layers) else None,
    local_layers=local_layers,
    attn_logit_softcap=getattr(hf_config, "attn_logit_softcapping", None) if is_gemma else None,
    final_logit_softcap=getattr(hf_config, "final_logit_softcapping", None) if is_gemma else None,
    query_scale=query_scalar**-0.5 if query_scalar else None,
    sandwich_norm=is_gemma,
    norm_offset=is_gemma,
    scale_embeddings=is_gemma,
    hidden_act=getattr(hf_config, "hidden_activation", None) or hf_config.hidden_act,
    tie_word_embeddings=bool(getattr(hf_config, "tie_word_embeddings", False)),
    bos_token_id=getattr(hf_config, "bos_token_id", None),
    eos_token_ids=_eos_ids(getattr(hf_config, "eos_token_id", None)),
    pad_token_id=getattr(hf_config, "pad_token_id", None),
    max_position_embeddings=getattr(hf_config, "max_position_embeddings", 8192),
    name=name,
  )
