"""A trained D2L checkpoint -> adapters for new documents (in JAX, or as PEFT directories), answers."""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import ml_collections

import hyperlora
from hyperlora import ckpt, peft_io
from d2l_jax import model as d2l_model
from d2l_jax.hypernet import D2LHypernet
from d2l_jax.teacher import greedy_answers


class Internalizer:
  """Loads a D2L run's latest checkpoint (or that of `step`); call it with a document to get its
  adapter."""

  def __init__(self, workdir: str, base_model: str | None = None, base=None, step: int | None = None):
    self.workdir = workdir
    checkpoint_dir = d2l_model.workdir_paths(workdir)["checkpoints"]
    saved = ckpt.read_config(checkpoint_dir)
    self.config = ml_collections.ConfigDict({k: v for k, v in saved.items() if k != "spec"})
    self.base_model = base_model or self.config.base_model
    base = base or hyperlora.load(self.base_model)
    spec = d2l_model.spec_from_saved(saved["spec"], base.config, f"checkpoint {workdir!r}")
    self.setup = d2l_model.Setup(base, spec, D2LHypernet(spec), self.config.features)
    abstract = jax.eval_shape(lambda: nn.unbox(self.setup.init_params(0)))
    self.params = ckpt.restore_params(checkpoint_dir, abstract, self.config.train, step)

  @property
  def base(self):
    return self.setup.base

  def __call__(self, document: str, chunk_len: int | None = None):
    """The document's adapter: rank (K + 1) r for K = ceil(tokens / chunk_len) chunks."""
    ec = self.config.eval
    return self.setup.internalize(self.params, document, chunk_len or ec.chunk_len, ec.get("chunk_scaling", "none"))

  def export(self, document: str, out_dir: str, chunk_len: int | None = None) -> str:
    lora = self(document, chunk_len)
    return peft_io.export(lora, out_dir, base_model=self.base_model, extra={
        "d2l_checkpoint": os.path.abspath(self.workdir), "document_chars": len(document)})

  def ask(self, document: str, questions: list[str], chunk_len: int | None = None,
          max_new_tokens: int = 48) -> list[str]:
    lora = self(document, chunk_len)
    return greedy_answers(self.base, questions, None, max_new_tokens, len(questions), lora)
