"""A trained D2L run -> adapters for new documents (in JAX, or as PEFT directories), and answers."""

from __future__ import annotations

import hashlib
import logging
import math
import os

from tqdm.auto import tqdm

import hyperlora
from d2l_jax import context
from d2l_jax import model as d2l_model
from d2l_jax.hypernet import D2LHypernet, D2LSpec
from hyperlora import generate as gen
from hyperlora import peft_io, run_dir, serving

log = logging.getLogger(__name__)

# The largest LoRA rank serving engines load (vLLM's --max-lora-rank tops out at 512); a document
# needing more chunks than fit is refused unless the caller raises max_chunks.
MAX_SERVING_RANK = max(serving.VLLM_RANKS)
ANNOUNCE_CHUNKS = 8  # documents of more chunks get their plan printed before the work starts


def check_questions(questions: list[str]) -> None:
  if not questions or any(not q.strip() for q in questions):
    raise ValueError("a question is empty; ask something about the document")


class Internalizer:
  """Loads a D2L run's latest checkpoint (or that of `step`); call it with a document to get its
  adapter. `base`: the loaded base model, to share across runs; `chunk_scaling`: how chunks
  combine (chunking.CHUNK_SCALINGS; default: the run's eval.chunk_scaling)."""

  def __init__(
    self,
    workdir: str,
    base_model: str | None = None,
    base=None,
    step: int | None = None,
    chunk_scaling: str | None = None,
  ):
    self.run = run_dir.open_run(workdir, "d2l")
    self.workdir, self.config = workdir, self.run.config
    if chunk_scaling is not None:
      self.config.eval.chunk_scaling = chunk_scaling
    self.base_model = base_model or self.config.base_model
    base = base or hyperlora.load(self.base_model)
    spec = self.run.spec(D2LSpec, base.config)
    self.setup = d2l_model.Setup(base, spec, D2LHypernet(spec), self.config.features)
    self.params = self.setup.restore(self.run, step)

  @property
  def base(self):
    return self.setup.base

  @property
  def default_max_chunks(self) -> int:
    return MAX_SERVING_RANK // self.setup.spec.rank - 1

  def check_size(
    self, document: str, chunk_len: int, max_chunks: int | None = None, announce: bool = True
  ) -> int:
    """The document's chunk count K; refuses (ValueError) more than max_chunks (default: what a
    rank of MAX_SERVING_RANK holds) and, with `announce`, logs the adapter's size above
    ANNOUNCE_CHUNKS (once, as its internalisation starts)."""
    if chunk_len <= 0:
      raise ValueError(f"the chunk length must be a positive number of tokens, not {chunk_len}")
    tokens = len(context.content_tokens(self.base.tokenizer, document))
    chunks = math.ceil(tokens / chunk_len)
    spec = self.setup.spec
    rank = (chunks + 1) * spec.rank
    megabytes = rank * spec.num_layers * sum(d_in + d_out for d_in, d_out in spec.dims) * 4 / 1e6
    limit = self.default_max_chunks if max_chunks is None else max_chunks
    if chunks > limit:
      raise ValueError(
        f"the document has {tokens:,} tokens: {chunks:,} chunks of {chunk_len} make an adapter of "
        f"rank {rank:,} ({megabytes:,.1f} MB), above {limit} chunks (rank "
        f"{(limit + 1) * spec.rank}, the most serving engines load); raise --chunk-len, or pass "
        f"--max-chunks {chunks} to make it anyway"
      )
    if announce and chunks > ANNOUNCE_CHUNKS:
      log.info(
        "internalising %s tokens as %d chunks of %d: adapter rank %d, %.1f MB",
        f"{tokens:,}",
        chunks,
        chunk_len,
        rank,
        megabytes,
      )
    return chunks

  def __call__(self, document: str, chunk_len: int | None = None, max_chunks: int | None = None):
    """The document's adapter: rank (K + 1) r for K = ceil(tokens / chunk_len) chunks."""
    chunk_len = self.chunk_len(chunk_len)
    self.check_size(document, chunk_len, max_chunks)
    scaling = self.config.eval.chunk_scaling
    return self.setup.internalize(self.params, document, chunk_len, scaling)

  def chunk_len(self, chunk_len: int | None) -> int:
    """The chunk length asked for, or the run's eval.chunk_len."""
    return self.config.eval.chunk_len if chunk_len is None else chunk_len

  def export(
    self,
    document: str,
    out_dir: str,
    chunk_len: int | None = None,
    overwrite: bool = False,
    max_chunks: int | None = None,
    ranks: tuple | None = None,
  ) -> str:
    """The document's adapter as a PEFT directory (zero-padded to one of `ranks` if given)."""
    return self.write(self(document, chunk_len, max_chunks), document, out_dir, overwrite, ranks)

  def write(
    self, lora, document: str, out_dir: str, overwrite: bool = False, ranks: tuple | None = None
  ) -> str:
    """An adapter already made from `document` as a PEFT directory, with our metadata."""
    return peft_io.export(
      lora,
      out_dir,
      overwrite=overwrite,
      ranks=ranks,
      base_model=self.base_model,
      extra={
        "d2l_checkpoint": os.path.abspath(self.workdir),
        "document_chars": len(document),
        "document_sha256": hashlib.sha256(document.encode()).hexdigest(),
        "chunk_scaling": self.config.eval.chunk_scaling,
      },
    )

  def export_many(
    self,
    documents: dict[str, str],
    out_dir: str,
    chunk_len: int | None = None,
    overwrite: bool = False,
    max_chunks: int | None = None,
    ranks: tuple | None = None,
  ) -> list[str]:
    """{name: document} -> one PEFT directory out_dir/name each. Every target and every
    document's size is checked before the first adapter is written."""
    dirs = {name: os.path.join(out_dir, name) for name in documents}
    for name, text in documents.items():
      peft_io.check_out_dir(dirs[name], overwrite)
      # Sizes are announced as each one's internalisation starts, not twice.
      self.check_size(text, self.chunk_len(chunk_len), max_chunks, announce=False)
    return [
      self.export(text, dirs[name], chunk_len, overwrite, max_chunks, ranks)
      for name, text in tqdm(documents.items(), desc="adapters", disable=len(documents) < 2)
    ]

  def ask(
    self,
    document: str,
    questions: list[str],
    chunk_len: int | None = None,
    max_new_tokens: int = 48,
    max_chunks: int | None = None,
  ) -> list[str]:
    check_questions(questions)
    return gen.chat(self.base, questions, max_new_tokens, self(document, chunk_len, max_chunks))
