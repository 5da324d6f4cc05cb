"""Long documents: K equal chunks, each encoded alone, adapters concatenated along rank.

  A = [A_1; ...; A_K; A_bias]   B = [B_1, ..., B_K, B_bias]   rank (K + 1) r
  dW = alpha * sum_k B_k A_k + alpha * B_bias A_bias          (no 1/K, as the reference)

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


CHUNK_SCALINGS = ("none", "mean")


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

  chunk_scaling 'none' sums the chunks' deltas (the reference); 'mean' weighs each by 1 / K.
  """
  if chunk_scaling not in CHUNK_SCALINGS:
    raise ValueError(f"chunk scaling must be one of {CHUNK_SCALINGS}, not {chunk_scaling!r}")
  tokens, mask = chunk_tokens(loaded.tokenizer, document, chunk_len)
  model = loaded.module()
  adapters, bias = [], None
  for row_tokens, row_mask in zip(tokens, mask):
    feats = context.features(
      model, loaded.params, jnp.asarray(row_tokens)[None], jnp.asarray(row_mask)[None], which
    )
    chunk_lora, bias = _encode(hypernet, params, feats[0], jnp.asarray(row_mask))
    adapters.append(chunk_lora)
  k = len(adapters)
  return combine(
    lora_lib.stack(adapters), bias, jnp.full(k, 1.0 / k) if chunk_scaling == "mean" else None
  )


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
