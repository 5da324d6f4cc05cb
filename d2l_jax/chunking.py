"""Long documents: K equal chunks, each encoded alone, adapters concatenated along rank.

  A = [A_1; ...; A_K; A_bias]   B = [B_1, ..., B_K, B_bias]   rank (K + 1) r
  dW = alpha * sum_k w_k B_k A_k + alpha * B_bias A_bias
  w_k = 1 (the reference, no 1/K), 1 / K ('mean'), or 1 / (number of near-copies of chunk k)
  ('dedup', so that a repeated text does not drown the one chunk that differs)

Chunks are padded to one length, so one compiled program serves every chunk, and they are encoded
one after another: peak memory follows the chunk length, not the document's.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from d2l_jax import context
from hyperlora import lora as lora_lib
from hyperlora.generate import left_pad


def split(token_ids: list[int], chunk_len: int, num_chunks: int | None = None) -> list[list[int]]:
  """ceil(len / chunk_len) chunks (or num_chunks) whose lengths differ by at most one token."""
  if num_chunks is None:
    if chunk_len <= 0:
      raise ValueError("chunk length must be positive")
    num_chunks = max(1, math.ceil(len(token_ids) / chunk_len))
  return [part.tolist() for part in np.array_split(np.asarray(token_ids), num_chunks)]


def combine(chunks: lora_lib.LoRA, bias: lora_lib.LoRA, chunk_scales=None) -> lora_lib.LoRA:
  """K chunk adapters stacked before the layer axis (A [*batch, K, L, r, d_in], B [*batch, K, L,
  d_out, r]) and the bias adapter (A [L, r, d_in]) -> one adapter of rank (K + 1) r whose dW is the
  sum of theirs (A [*batch, L, (K + 1) r, d_in]). chunk_scales [*batch, K] optionally weighs chunks.
  """
  if chunks.scale != bias.scale:
    raise ValueError("chunk and bias adapters must share a scale")
  weights = {}
  for m, w in chunks.weights.items():
    a, b = w["A"], w["B"]
    if chunk_scales is not None:
      b = b * chunk_scales[..., None, None, None]
    *lead, k, layers, r, d_in = a.shape
    d_out = b.shape[-2]
    a = jnp.moveaxis(a, -4, -3).reshape(*lead, layers, k * r, d_in)  # chunk-major within the rank
    b = jnp.moveaxis(b, -4, -2).reshape(*lead, layers, d_out, k * r)
    bias_a = jnp.broadcast_to(bias.weights[m]["A"], (*lead, layers, r, d_in))
    bias_b = jnp.broadcast_to(bias.weights[m]["B"], (*lead, layers, d_out, r))
    weights[m] = {"A": jnp.concatenate([a, bias_a], -2), "B": jnp.concatenate([b, bias_b], -1)}
  return lora_lib.LoRA(weights, chunks.scale)


# How a chunked document's deltas may combine, and how tables name each.
CHUNK_SCALINGS = {
  "none": "the reference's sum (no 1/K)",
  "mean": "their mean (1/K each)",
  "dedup": "dedup (near-copies counted once)",
}
# 'dedup': chunks whose deltas have a cosine above this count as copies of one another. With the
# NIAH runs, chunks of one repeated text (the haystack's filler) measure 0.95 and the needle's
# chunk against them 0.21; chunks of a SQuAD article 0.47-0.55 on average, some pairs above 0.9,
# so dedup down-weights real text too (docs/d2l.md).
DEDUP_COSINE = 0.8


def chunk_gram(chunks: lora_lib.LoRA) -> jax.Array:
  """<dW_i, dW_j> (Frobenius, over every module and layer) of K stacked chunk adapters (A [K, L,
  r, d_in], B [K, L, d_out, r]) -> [K, K], from r x r products: sum over r, s of (A_i A_j^T)_rs
  (B_i^T B_j)_rs; no dW is materialised."""
  total = 0.0
  for w in chunks.weights.values():
    gram_a = jnp.einsum("ilrx,jlsx->ijlrs", w["A"], w["A"])  # [K, K, L, r, r]
    gram_b = jnp.einsum("ilor,jlos->ijlrs", w["B"], w["B"])
    total = total + jnp.sum(gram_a * gram_b, axis=(-3, -2, -1))
  return chunks.scale**2 * total


def dedup_weights(chunks: lora_lib.LoRA, threshold: float = DEDUP_COSINE) -> jax.Array:
  """[K] weights that count near-copies once: chunk i gets 1 / sum_j s(cos_ij), with s(c) =
  max(0, (c - threshold) / (1 - threshold)) (1 for itself). Distinct chunks (every cosine below
  the threshold) keep weight 1, the reference's sum; n identical chunks get 1 / n each, so a
  text repeated n times gives the adapter of one copy. K = 1 is the reference exactly."""
  gram = chunk_gram(chunks)
  norm = jnp.sqrt(jnp.maximum(jnp.diag(gram), 1e-30))
  cosine = gram / (norm[:, None] * norm[None, :])
  overlap = jnp.maximum(0.0, (cosine - threshold) / (1.0 - threshold))
  # Itself counts exactly 1 (not a rounded cosine), so a chunk with no near-copy keeps weight 1.
  overlap = jnp.where(jnp.eye(len(gram), dtype=bool), 1.0, overlap)
  return 1.0 / jnp.sum(overlap, axis=1)


@functools.partial(jax.jit, static_argnames="hypernet")
def _encode(hypernet, params, features, mask):
  return hypernet.apply({"params": params}, features, mask)


def internalize(
  loaded,
  hypernet,
  params,
  document: str,
  chunk_len: int,
  which: str = "all_but_last",
  chunk_scaling: str = "none",
) -> lora_lib.LoRA:
  """A document -> one adapter (rank (K + 1) r), encoding its chunks one at a time.

  chunk_scaling 'none' sums the chunks' deltas (the reference); 'mean' weighs each by 1 / K;
  'dedup' counts near-copies once (dedup_weights).
  """
  if chunk_scaling not in CHUNK_SCALINGS:
    raise ValueError(f"chunk scaling must be one of {tuple(CHUNK_SCALINGS)}, not {chunk_scaling!r}")
  tokens, mask = chunk_tokens(loaded.tokenizer, document, chunk_len)
  model = loaded.module()
  adapters, bias = [], None
  for row_tokens, row_mask in zip(tokens, mask):
    feats = context.features(
      model, loaded.params, jnp.asarray(row_tokens)[None], jnp.asarray(row_mask)[None], which
    )
    chunk_lora, bias = _encode(hypernet, params, feats[0], jnp.asarray(row_mask))
    adapters.append(chunk_lora)
  chunks = lora_lib.stack(adapters)
  return combine(chunks, bias, chunk_weights(chunks, chunk_scaling))


def chunk_weights(chunks: lora_lib.LoRA, chunk_scaling: str) -> jax.Array | None:
  """[K] weights of stacked chunk adapters for `chunk_scaling` (None: the reference's sum)."""
  k = chunks.weights[next(iter(chunks.weights))]["A"].shape[0]
  if chunk_scaling == "mean":
    return jnp.full(k, 1.0 / k)
  if chunk_scaling == "dedup":
    return dedup_weights(chunks)
  return None


def chunk_tokens(
  tokenizer, document: str, chunk_len: int, num_chunks: int | None = None, width: int | None = None
):
  """The document's chunks, each wrapped as a user turn, left-padded: tokens, mask [K, width].

  K = ceil(len / chunk_len), or num_chunks when given (training draws it).
  """
  content = context.content_tokens(tokenizer, document)  # Empty, special-only documents raise.
  rows = [
    context.document_tokens(tokenizer, tokenizer.decode(chunk))
    for chunk in split(content, chunk_len, num_chunks)
  ]
  if width is not None and max(map(len, rows)) > width:
    raise ValueError(
      f"a chunk of {max(map(len, rows))} tokens exceeds the width {width}; raise "
      f"data.max_doc_len or shorten the documents"
    )
  return left_pad(rows, tokenizer.pad_token_id or 0, width)
