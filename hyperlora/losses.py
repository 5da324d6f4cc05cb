"""Losses on LoRA-patched language-model outputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hyperlora.lora import LoRA


def answer_cross_entropy(
  logits: jax.Array, targets: jax.Array, mask: jax.Array, label_smoothing: float = 0.0
) -> jax.Array:
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


def distillation_loss(
  logits: jax.Array, teacher_ids: jax.Array, teacher_logprobs: jax.Array, mask: jax.Array
) -> jax.Array:
  """Per-example -sum_{j in top-k} p_T(j) log q_S(j), averaged over answer tokens: [batch].

  logits [batch, n, vocab] (student); teacher_ids / teacher_logprobs [batch, n, k] (the teacher's
  top-k, cached); mask [batch, n]. As the reference, the teacher's top-k probabilities are used as
  they are
  (exp of its full-vocabulary log-probs), not renormalised over the k.
  """
  log_q = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  log_q_top = jnp.take_along_axis(log_q, teacher_ids, axis=-1)  # [batch, n, k]
  p_teacher = jnp.exp(teacher_logprobs.astype(jnp.float32))  # not renormalised over the k
  per_token = -(p_teacher * log_q_top).sum(-1)
  return (per_token * mask).sum(-1) / jnp.maximum(mask.sum(-1), 1.0)


def lora_l2(lora: LoRA) -> jax.Array:
  """mean(A^2) + mean(B^2), summed over target modules (as the reference's T2L SFT)."""
  return sum(jnp.mean(w["A"] ** 2) + jnp.mean(w["B"] ** 2) for w in lora.weights.values())


def lora_l1(lora: LoRA, target: LoRA | None = None) -> jax.Array:
  """Mean |A - A*| + mean |B - B*| over modules: reconstruction of a target adapter, or with no
  target the L1 norm of the factors (D2L's sparsity term on generated A, B)."""
  terms = []
  for m, w in lora.weights.items():
    t = target.weights[m] if target is not None else {"A": 0.0, "B": 0.0}
    terms.append(jnp.mean(jnp.abs(w["A"] - t["A"])) + jnp.mean(jnp.abs(w["B"] - t["B"])))
  return sum(terms) / len(terms)
