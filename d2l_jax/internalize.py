"""A trained D2L run -> adapters for new documents (in JAX, or as PEFT directories), and answers."""

from __future__ import annotations

import os

import hyperlora
from d2l_jax import model as d2l_model
from d2l_jax.hypernet import D2LHypernet, D2LSpec
from hyperlora import generate as gen
from hyperlora import peft_io, run_dir


class Internalizer:
  """Loads a D2L run's latest checkpoint (or that of `step`); call it with a document to get its
  adapter. `base`: the loaded base model, to share across runs."""

  def __init__(
    self, workdir: str, base_model: str | None = None, base=None, step: int | None = None
  ):
    self.run = run_dir.open_run(workdir, "d2l")
    self.workdir, self.config = workdir, self.run.config
    self.base_model = base_model or self.config.base_model
    base = base or hyperlora.load(self.base_model)
    spec = self.run.spec(D2LSpec, base.config)
    self.setup = d2l_model.Setup(base, spec, D2LHypernet(spec), self.config.features)
    self.params = self.setup.restore(self.run, step)

  @property
  def base(self):
    return self.setup.base

  def __call__(self, document: str, chunk_len: int | None = None):
    """The document's adapter: rank (K + 1) r for K = ceil(tokens / chunk_len) chunks."""
    ec = self.config.eval
    return self.setup.internalize(
      self.params, document, chunk_len or ec.chunk_len, ec.get("chunk_scaling", "none")
    )

  def export(self, document: str, out_dir: str, chunk_len: int | None = None) -> str:
    lora = self(document, chunk_len)
    return peft_io.export(
      lora,
      out_dir,
      base_model=self.base_model,
      extra={"d2l_checkpoint": os.path.abspath(self.workdir), "document_chars": len(document)},
    )

  def ask(
    self,
    document: str,
    questions: list[str],
    chunk_len: int | None = None,
    max_new_tokens: int = 48,
  ) -> list[str]:
    return gen.chat(self.base, questions, max_new_tokens, self(document, chunk_len))
