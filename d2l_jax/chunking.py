"""Long documents: K equal chunks, each encoded alone, adapters concatenated along rank.

  A = [A_1; ...; A_K; A_bias]   B = [B_1, ..., B_K, B_bias]   rank (K + 1) r
  dW = alpha * sum_k B_k A_k + alpha * B_bias A_bias          (no 1/K, as the reference)

Chunks are padded to one length, so one compiled program serves every chunk, and they are encoded
one after another: peak memory follows the chunk length, not the document's.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from hyperlora import lora as lora_lib
from hyperlora.generate import left_pad
from d2l_jax import context


def split(token_ids: list[int], chunk_len: int) -> list[list[int]]:
  """ceil(len / chunk_len) chunks whose lengths differ by at most one token."""
  if chunk_len <= 0:
    raise ValueError("chunk length must be positive")
  k = max(1, math.ceil(len(token_ids) / chunk_len))
  return [part.tolist() for part in np.array_split(np.asarray(token_ids), k)]


def combine(chunks: list[lora_lib.LoRA], bias: lora_lib.LoRA, chunk_scales=None) -> lora_lib.LoRA:
  """One adapter of rank (K + 1) r whose dW is the sum of the chunks' and the bias adapter's.

  chunk_scales (optional, [K]) multiplies each chunk's contribution.
  """
  if chunk_scales is not None:
    chunks = [c.replace(weights={m: {"A": w["A"], "B": w["B"] * s} for m, w in c.weights.items()})
              for c, s in zip(chunks, chunk_scales)]
  return lora_lib.concat_rank([*chunks, bias])


def internalize(loaded, hypernet, params, document: str, chunk_len: int,
                which: str = "all_but_last") -> lora_lib.LoRA:
  """A document -> one adapter (rank (K + 1) r), encoding its chunks one at a time."""
  tok = loaded.tokenizer
  context.document_tokens(tok, document)  # Validates: empty, special-only documents raise.
  content = tok(document, add_special_tokens=False)["input_ids"]
  chunks = split(content, chunk_len)
  rows = [context.document_tokens(tok, tok.decode(chunk)) for chunk in chunks]
  tokens, mask = left_pad(rows, tok.pad_token_id or 0)
  model = loaded.module()
  apply = jax.jit(lambda p, f, m: hypernet.apply({"params": p}, f, m))
  adapters, bias = [], None
  for row_tokens, row_mask in zip(tokens, mask):
    feats = context.features(model, loaded.params, jnp.asarray(row_tokens), jnp.asarray(row_mask), which)
    chunk_lora, bias = apply(params, feats, jnp.asarray(row_mask))
    adapters.append(chunk_lora)
  return combine(adapters, bias)
