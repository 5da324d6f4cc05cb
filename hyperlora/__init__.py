"""hyperlora: the shared core of hyperlora-jax (base LLMs, LoRA pytree, PEFT interop)."""

from hyperlora.base_weights import LoadedModel, load
from hyperlora.lora import LoRA
from hyperlora.models.config import ModelConfig
from hyperlora.models.transformer import KVCache, Transformer

__all__ = ["KVCache", "LoRA", "LoadedModel", "ModelConfig", "Transformer", "load"]
