"""Training batches for D2L: documents in K chunks, and questions about them with teacher targets.

A batch holds `docs_per_batch` documents and `queries_per_doc` of each one's questions. K, the
number
of chunks every document of the batch is cut into, is drawn per step (the reference draws
K ~ {1: .5, 2: .125, 3..8: .0625 each}); each K has its own fixed chunk width, so the step compiles
once per K. Like T2L's, a batch is a pure function of (seed, step): resuming needs no iterator
state.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from d2l_jax import chunking, context
from hyperlora import sft

# The reference's distribution of chunk counts during training.
REFERENCE_CHUNK_COUNTS = (1, 2, 3, 4, 5, 6, 7, 8)
REFERENCE_CHUNK_PROBS = (0.5, 0.125, 0.0625, 0.0625, 0.0625, 0.0625, 0.0625, 0.0625)


def template_tokens(tokenizer) -> int:
  """Tokens the chat template wraps around a chunk (d2l_jax.context.wrap_document)."""
  return len(context.document_tokens(tokenizer, "x")) - 1


def chunk_width(max_doc_len: int, k: int, template: int) -> int:
  """Tokens of one of K chunks wrapped as a user turn, with slack for re-tokenising at chunk
  borders: the width every batch with K chunks has, so the step compiles once per K."""
  return math.ceil(max_doc_len / k) + template + 8


def chunk_spec(docs: int, k: int, width: int) -> dict:
  """The chunk arrays of a D2L batch as abstract shapes (training's and internalisation's)."""
  chunks = (docs, k, width)  # [docs, K, width]
  return {
    "chunk_tokens": jax.ShapeDtypeStruct(chunks, jnp.int32),
    "chunk_mask": jax.ShapeDtypeStruct(chunks, jnp.bool_),
  }


def batch_spec(dc, k: int, template: int, distill: bool) -> dict:
  """A D2L batch's arrays as abstract shapes: what `DocBatches` fills and `hyperlora plan` compiles
  for. dc: the config's data fields; template: `template_tokens` of the base's tokenizer."""
  docs, rows = dc.docs_per_batch, dc.docs_per_batch * dc.queries_per_doc
  spec = {
    **chunk_spec(docs, k, chunk_width(dc.max_doc_len, k, template)),
    **sft.batch_spec(rows, dc.max_len, dc.max_answer),  # [rows, seq], [rows, answer]
  }
  if distill:  # the teacher's cached top-k [rows, answer, top_k]
    top_k = (rows, dc.max_answer, dc.top_k)
    spec["teacher_ids"] = jax.ShapeDtypeStruct(top_k, jnp.int32)
    spec["teacher_logprobs"] = jax.ShapeDtypeStruct(top_k, jnp.float32)
  return spec


class DocBatches:
  def __init__(
    self,
    documents: list,
    targets: dict,
    pair_doc: np.ndarray,
    tokenizer,
    *,
    docs_per_batch: int,
    queries_per_doc: int,
    max_doc_len: int,
    chunk_counts,
    chunk_probs,
    min_chunk_len: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
  ):
    if docs_per_batch > len(documents):
      raise ValueError(
        f"docs_per_batch={docs_per_batch} exceeds the {len(documents)} training documents"
      )
    if docs_per_batch % process_count:
      raise ValueError(
        f"{docs_per_batch} documents per batch do not split over {process_count} processes"
      )
    if len(chunk_counts) != len(chunk_probs) or not math.isclose(sum(chunk_probs), 1.0):
      raise ValueError(
        "train.chunk_counts and train.chunk_probs must pair up and the probabilities sum to 1"
      )
    self.documents, self.targets, self.tokenizer = documents, targets, tokenizer
    self.docs_per_batch, self.queries_per_doc = docs_per_batch, queries_per_doc
    self.chunk_counts, self.chunk_probs = tuple(chunk_counts), np.asarray(chunk_probs, np.float64)
    self.min_chunk_len, self.seed, self.max_doc_len = min_chunk_len, seed, max_doc_len
    self.process_index, self.process_count = process_index, process_count
    self.pairs_of_doc = [np.flatnonzero(pair_doc == i) for i in range(len(documents))]
    self.doc_len = []
    for doc, pairs in zip(documents, self.pairs_of_doc):
      if not len(pairs):
        raise ValueError(f"document {doc.doc_id!r} has no questions")
      n = len(context.content_tokens(tokenizer, doc.text))
      if n > max_doc_len:
        raise ValueError(
          f"document {doc.doc_id!r} has {n} tokens, more than data.max_doc_len={max_doc_len}"
        )
      self.doc_len.append(n)
    self.template = template_tokens(tokenizer)

  def chunk_width(self, k: int) -> int:
    return chunk_width(self.max_doc_len, k, self.template)

  def __call__(self, step: int) -> dict:
    rng = np.random.default_rng([self.seed, step])
    k = int(rng.choice(self.chunk_counts, p=self.chunk_probs))
    docs = rng.choice(len(self.documents), self.docs_per_batch, replace=False)
    queries = [
      rng.choice(
        self.pairs_of_doc[d],
        self.queries_per_doc,
        replace=len(self.pairs_of_doc[d]) < self.queries_per_doc,
      )
      for d in docs
    ]
    # Every chunk keeps at least min_chunk_len tokens: short documents lower K for the batch.
    k = max(1, min(k, min(self.doc_len[d] for d in docs) // self.min_chunk_len))
    per_process = self.docs_per_batch // self.process_count
    mine = slice(self.process_index * per_process, (self.process_index + 1) * per_process)
    width = self.chunk_width(k)
    chunks = [
      chunking.chunk_tokens(self.tokenizer, self.documents[d].text, 0, num_chunks=k, width=width)
      for d in docs[mine]
    ]
    rows = np.concatenate(queries[mine])
    batch = {key: value[rows] for key, value in self.targets.items() if key != "responses"}
    batch["chunk_tokens"] = np.stack([t for t, _ in chunks])  # [docs, K, width]
    batch["chunk_mask"] = np.stack([m for _, m in chunks])
    return batch
