"""Losses on LoRA-patched language-model outputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hyperlora.lora import LoRA


def answer_cross_entropy(logits: jax.Array, targets: jax.Array, mask: jax.Array,
                         label_smoothing: float = 0.0) -> jax.Array:
  """Per-example mean loss over answer tokens: [batch].

  logits [batch, k, vocab] predict targets [batch, k]; mask [batch, k] marks real answer tokens.
  Label smoothing puts (1 - eps) on the target and eps uniformly on the vocabulary. Each example is
  normalised by its own answer length (the reference's per-sample length normalisation).
  """
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]  # [batch, seq - 1]
  if label_smoothing:
    nll = (1.0 - label_smoothing) * nll - label_smoothing * log_probs.mean(axis=-1)
  return (nll * mask).sum(-1) / jnp.maximum(mask.sum(-1), 1.0)


def lora_l2(lora: LoRA) -> jax.Array:
  """mean(A^2) + mean(B^2), averaged over target modules."""
  terms = [jnp.mean(w["A"] ** 2) + jnp.mean(w["B"] ** 2) for w in lora.weights.values()]
  return sum(terms) / len(terms)


def lora_l1(lora: LoRA, target: LoRA) -> jax.Array:
  """Mean |A - A*| + mean |B - B*| over modules (reconstruction loss on the factors)."""
  terms = [jnp.mean(jnp.abs(w["A"] - target.weights[m]["A"])) + jnp.mean(jnp.abs(w["B"] - target.weights[m]["B"]))
           for m, w in lora.weights.items()]
  return sum(terms) / len(terms)
