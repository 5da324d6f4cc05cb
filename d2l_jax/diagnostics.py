"""Does the adapter depend on the document? Norms of weight deltas and a probe logged in training.

For an adapter of rank r, |dW|_F = scale * sqrt(sum (A A^T) * (B^T B)) uses only r x r Gram
matrices,
so the norm of dW = scale * B A ([d_out, d_in] per layer) is never materialised. The difference of
two adapters is one adapter of rank 2r ([A_1; A_2], [B_1, -B_2]; `lora.concat_rank`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from d2l_jax import chunking, context
from hyperlora import lora as lora_lib


def dw_norm(lora: lora_lib.LoRA) -> jax.Array:
  """Frobenius norm of the adapter's dW over all modules and layers (per example if batched)."""
  total = 0.0
  for w in lora.weights.values():
    gram_a = jnp.einsum("...ri,...si->...rs", w["A"], w["A"])  # [..., L, r, r]
    gram_b = jnp.einsum("...or,...os->...rs", w["B"], w["B"])
    total = total + jnp.sum(gram_a * gram_b, axis=(-3, -2, -1))
  return lora.scale * jnp.sqrt(jnp.maximum(total, 0.0))


def difference(x: lora_lib.LoRA, y: lora_lib.LoRA) -> lora_lib.LoRA:
  """An adapter whose dW is dW_x - dW_y: x and y with its B negated, concatenated along rank."""
  negated = y.replace(weights={m: {"A": w["A"], "B": -w["B"]} for m, w in y.weights.items()})
  return lora_lib.concat_rank([x, negated])


def relative_difference(x: lora_lib.LoRA, y: lora_lib.LoRA) -> jax.Array:
  """|dW_x - dW_y| / mean(|dW_x|, |dW_y|): 0 when both documents give the same adapter."""
  return dw_norm(difference(x, y)) / jnp.maximum(0.5 * (dw_norm(x) + dw_norm(y)), 1e-12)


def make_probe(setup, documents: list[str], chunk_len: int):
  """probe(params, base_params) -> {doc_share, probe_rel_diff, probe_doc_rel_diff} for two fixed
  documents (each internalised whole, K = 1):
    doc_share: |dW| of the document part / (|dW| of the document part + |dW| of the bias adapter);
    probe_rel_diff: relative difference of the two full adapters (document parts + bias);
    probe_doc_rel_diff: the same for the document parts alone.
  A hypernetwork that ignores its input shows probe_rel_diff near 0 however its loss moves."""
  if len(documents) != 2:
    raise ValueError("the probe compares exactly two documents")
  tok = setup.base.tokenizer
  width = max(len(context.document_tokens(tok, d)) for d in documents)
  rows = [chunking.chunk_tokens(tok, d, chunk_len, num_chunks=1, width=width) for d in documents]
  tokens = jnp.concatenate([jnp.asarray(t) for t, _ in rows])  # [2, width]
  mask = jnp.concatenate([jnp.asarray(m) for _, m in rows])
  model = setup.base.module()
  encode = jax.vmap(lambda p, f, m: setup.hypernet.apply({"params": p}, f, m), (None, 0, 0))

  @jax.jit
  def probe(params, base_params):
    feats = context.features(model, base_params, tokens, mask, setup.features)
    chunk, bias = encode(params, feats, mask)  # batched over the two documents
    first = lambda tree: jax.tree.map(lambda x: x[0], tree)
    bias = first(bias)
    full = [chunking.combine(jax.tree.map(lambda x: x[i, None], chunk), bias) for i in range(2)]
    doc = [jax.tree.map(lambda x: x[i], chunk) for i in range(2)]
    doc_norm = 0.5 * (dw_norm(doc[0]) + dw_norm(doc[1]))
    return {
      "doc_share": doc_norm / jnp.maximum(doc_norm + dw_norm(bias), 1e-12),
      "probe_rel_diff": relative_difference(*full),
      "probe_doc_rel_diff": relative_difference(*doc),
    }

  return probe


def chunk_norms(lora: lora_lib.LoRA, rank: int) -> jax.Array:
  """|dW| of each part of a chunked adapter (chunking.combine: rank (K + 1) r, chunk-major, the
  bias adapter last) -> [K + 1]: the K chunks' deltas, then the bias's."""
  parts = lora.rank // rank
  return jnp.stack(
    [
      dw_norm(
        lora.replace(
          weights={
            m: {
              "A": w["A"][..., k * rank : (k + 1) * rank, :],
              "B": w["B"][..., k * rank : (k + 1) * rank],
            }
            for m, w in lora.weights.items()
          }
        )
      )
      for k in range(parts)
    ]
  )


def needle_chunk(tokenizer, document: str, number: str, chunk_len: int) -> int:
  """Index of the chunk (chunking.split of the document's tokens) holding the needle's number; -1
  when a chunk boundary cuts it."""
  content = context.content_tokens(tokenizer, document)
  for k, part in enumerate(chunking.split(content, chunk_len)):
    if number in tokenizer.decode(part):
      return k
  return -1
