"""A trained T2L checkpoint -> LoRA adapters for new descriptions (in JAX, or as PEFT directories)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections

from hyperlora import checkpoints, ckpt, peft_io
from t2l_jax import encoder as encoder_lib
from t2l_jax import model as t2l_model
from t2l_jax.hypernet import T2LHypernet, init_params


def restore_params(directory: str, spec, embed_dim: int, train_config) -> dict:
  """Hypernetwork (or direct LoRA) params of the latest checkpoint in `directory`."""
  abstract_params = jax.eval_shape(lambda: init_params(spec, embed_dim, jax.random.key(0)))
  return ckpt.restore_params(directory, abstract_params, train_config)


class Generator:
  """Loads a T2L run's latest checkpoint; call it with descriptions to get adapters."""

  def __init__(self, workdir: str, base_model: str | None = None):
    checkpoint_dir = t2l_model.workdir_paths(workdir)["checkpoints"]
    saved = ckpt.read_config(checkpoint_dir)
    self.config = ml_collections.ConfigDict({k: v for k, v in saved.items() if k not in ("spec", "embed_dim")})
    self.base_model = base_model or self.config.base_model
    model_config = checkpoints.load_config(self.base_model)
    self.spec = t2l_model.check_spec_fits(saved["spec"], model_config, f"checkpoint {workdir!r}")
    self.embed_dim = saved["embed_dim"]
    self.params = restore_params(checkpoint_dir, self.spec, self.embed_dim, self.config.train)
    self.hypernet = T2LHypernet(self.spec)
    enc = self.config.encoder
    base = None
    if enc.kind == "base":
      import hyperlora
      base = hyperlora.load(self.base_model)
    self.encoder = encoder_lib.make_encoder(enc.kind, base, enc.path, enc.pooling)
    self._apply = jax.jit(lambda p, e: self.hypernet.apply({"params": p}, e))

  def __call__(self, descriptions: list[str]):
    """Batched LoRA, one adapter per description."""
    embeddings = self.encoder(list(descriptions))  # Raises on an empty description.
    return self._apply(self.params, jnp.asarray(embeddings))

  def export(self, description: str, out_dir: str) -> str:
    lora = self([description]).example(0)
    return peft_io.export(lora, out_dir, base_model=self.base_model,
                          extra={"description": description, "t2l_checkpoint": os.path.abspath(
                              t2l_model.workdir_paths(self.config.workdir)["checkpoints"])})
