"""Named model shapes: the architecture fields of public models' config.json files, so a run can be
planned (compiled ahead of time, its memory and step time estimated) with no checkpoint on disk.

`base_model="shapes:mistral-7b-instruct-v0.2"` in a config means these fields; they go through the
same `transformers` config class and `from_hf_config` as a real checkpoint directory's config.json,
so a plan and a real run build the same model.
"""

from __future__ import annotations

from hyperlora.models.config import ModelConfig, from_hf_config

PREFIX = "shapes:"

# Architecture fields as published in each model's config.json on the Hugging Face hub.
CONFIG_JSON = {
  "mistral-7b-instruct-v0.2": dict(
    model_type="mistral",
    vocab_size=32000,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    rms_norm_eps=1e-5,
    rope_theta=1e6,
    sliding_window=None,
    max_position_embeddings=32768,
  ),
  "llama-3.1-8b-instruct": dict(
    model_type="llama",
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    rms_norm_eps=1e-5,
    rope_theta=500000.0,
    rope_scaling=dict(
      rope_type="llama3",
      factor=8.0,
      low_freq_factor=1.0,
      high_freq_factor=4.0,
      original_max_position_embeddings=8192,
    ),
    max_position_embeddings=131072,
  ),
  "gemma-2-2b-it": dict(
    model_type="gemma2",
    vocab_size=256000,
    hidden_size=2304,
    intermediate_size=9216,
    num_hidden_layers=26,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=256,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    sliding_window=4096,
    query_pre_attn_scalar=256,
    attn_logit_softcapping=50.0,
    final_logit_softcapping=30.0,
    hidden_activation="gelu_pytorch_tanh",
    tie_word_embeddings=True,
    max_position_embeddings=8192,
  ),
}


def is_named(path_or_name: str) -> bool:
  return path_or_name.startswith(PREFIX)


def named_config(path_or_name: str) -> ModelConfig:
  """The ModelConfig of `shapes:NAME`."""
  import transformers  # seconds to import: only when shapes are asked for

  name = path_or_name[len(PREFIX) :]
  if name not in CONFIG_JSON:
    raise ValueError(f"unknown model shapes {name!r}; known: {', '.join(sorted(CONFIG_JSON))}")
  fields = dict(CONFIG_JSON[name])
  hf_config = transformers.AutoConfig.for_model(fields.pop("model_type"), **fields)
  return from_hf_config(hf_config, name=name)
