"""The distillation targets: the base model reading the document (the teacher) answers each
question,
and its top-k log-probs on the answer tokens are computed once and cached on disk.

The student sees only the question (plus the adapter made from the document); teacher and student
score the same answer tokens, so the teacher's top-k at answer token j is the target of the
student's prediction of token j.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from hyperlora import generate as gen
from hyperlora.sft import Example, encode_example, pad_batch, prompt_ids

log = logging.getLogger(__name__)

RESPONSES = ("teacher", "gold")


def in_context_prompt(document: str, question: str) -> str:
  """The user turn of the teacher (and of the in-context baseline): the document, then the
  question."""
  return f"{document}\n\n{question}"


def _cache_key(base_source: str, pairs, dc, with_top_k: bool) -> str:
  h = hashlib.sha256(
    json.dumps(
      [
        base_source,
        dc.responses,
        dc.top_k if with_top_k else 0,
        dc.max_len,
        dc.max_teacher_len,
        dc.max_answer,
      ]
    ).encode()
  )
  for doc, qa in pairs:
    h.update(
      doc.text.encode() + b"\0" + qa.question.encode() + b"\0" + "\t".join(qa.answers).encode()
    )
  return h.hexdigest()[:20]


def _batches(n: int, size: int):
  for start in range(0, n, size):
    yield slice(start, min(n, start + size))


@functools.partial(jax.jit, static_argnames="k")
def _top_k(logits, k: int):
  return jax.lax.top_k(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), k)


def gold_answer(qa) -> str:
  """The gold answer trained on. Any counts as right (SQuAD has three annotators'); the shortest
  is the span itself rather than a longer phrase around it, and fits data.max_answer most often."""
  return min(qa.answers, key=len)


def with_fitting_gold(tokenizer, documents: list, max_answer: int) -> list:
  """Documents whose study questions keep only those whose gold answer (the one trained on)
  fits max_answer (SQuAD has gold answers of 50+ tokens); documents left with none are dropped.
  The teacher's answers are cut to fit instead, so only gold training needs this."""
  budget = max_answer - 4  # the end-of-turn tokens, as the teacher's answers leave room for
  fits = lambda qa: len(tokenizer(gold_answer(qa), add_special_tokens=False)["input_ids"])
  kept = [
    dataclasses.replace(d, study=tuple(q for q in d.study if fits(q) <= budget)) for d in documents
  ]
  dropped = sum(len(d.study) for d in documents) - sum(len(d.study) for d in kept)
  if dropped:
    log.info("gold answers: %d study questions longer than data.max_answer skipped", dropped)
  return [d for d in kept if d.study]


def prepare(base, pairs: list, dc, cache_dir: str | None, with_top_k: bool = True) -> dict:
  """pairs: (Document, QA) -> student batch rows + the teacher's top-k on the answer tokens.

  Returns numpy arrays with a leading pair axis: the student's tokens, attention_mask,
  target_index/ids/mask (the `hyperlora.sft.pad_batch` layout) plus, with_top_k, teacher_ids and
  teacher_logprobs [n, max_answer, top_k]; and `responses`, the answers trained on. Cross-entropy
  training passes with_top_k=False: the teacher's forward pass is then skipped.
  """
  if dc.responses not in RESPONSES:
    raise ValueError(f"data.responses must be one of {RESPONSES}, not {dc.responses!r}")
  path = None
  if cache_dir:
    path = os.path.join(cache_dir, f"teacher-{_cache_key(base.source, pairs, dc, with_top_k)}.npz")
    if os.path.isfile(path):
      with np.load(path) as cached:
        return dict(cached)
  tok = base.tokenizer
  teacher_prompts = [in_context_prompt(doc.text, qa.question) for doc, qa in pairs]
  if dc.responses == "gold":
    responses = [gold_answer(qa) for _, qa in pairs]
  else:
    responses = gen.chat(
      base,
      teacher_prompts,
      dc.max_answer - 4,
      batch=dc.teacher_batch,
      width=dc.max_teacher_len,
      desc="teacher answers",
    )
    # Decoded text can re-tokenise longer than it was generated (byte-level merges across the
    # whitespace strip): keep what fits max_answer with the end-of-turn token.
    fit = lambda ids: tok.decode(ids[: dc.max_answer - 4]).strip()
    responses = [fit(tok(r, add_special_tokens=False)["input_ids"]) for r in responses]
  student = [
    encode_example(tok, Example(qa.question, r), dc.max_len) for (_, qa), r in zip(pairs, responses)
  ]
  out = pad_batch(student, dc.max_len, tok.pad_token_id or 0, dc.max_answer)
  out["responses"] = np.asarray(responses)
  if with_top_k:
    out.update(_teacher_top_k(base, teacher_prompts, responses, out["target_ids"], dc))
  if path:
    os.makedirs(cache_dir, exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **out)
    os.replace(tmp, path)  # atomic: a killed run never leaves a half-written cache
  log.info("teacher targets for %d questions%s", len(pairs), f" cached in {path}" if path else "")
  return out


def _teacher_top_k(
  base, teacher_prompts: list[str], responses: list[str], student_targets, dc
) -> dict:
  """The teacher's top-k log-probs and ids at every answer token: [n, max_answer, top_k]."""
  tok = base.tokenizer
  longest = max(len(prompt_ids(tok, Example(p, ""))) for p in teacher_prompts) + dc.max_answer
  if longest > dc.max_teacher_len:
    raise ValueError(
      f"a document with its question needs {longest} tokens, more than "
      f"data.max_teacher_len={dc.max_teacher_len}; raise it or use shorter documents"
    )
  teacher = [
    encode_example(tok, Example(p, r), dc.max_teacher_len)
    for p, r in zip(teacher_prompts, responses)
  ]
  teacher_batch = pad_batch(teacher, dc.max_teacher_len, tok.pad_token_id or 0, dc.max_answer)
  if not np.array_equal(teacher_batch["target_ids"], student_targets):
    raise ValueError(
      "teacher and student tokenise the answers differently; the chat template must "
      "end the user turn before the answer"
    )
  model = base.module()
  logits_fn = jax.jit(
    lambda p, b: (
      model.apply(
        {"params": p}, b["tokens"], b["attention_mask"], logits_at=b["target_index"]
      ).logits
    )
  )
  ids, logprobs = [], []
  size = dc.teacher_batch
  for part in tqdm(list(_batches(len(teacher), size)), desc="teacher top-k", leave=False):
    rows = {k: np.resize(v[part], (size,) + v.shape[1:]) for k, v in teacher_batch.items()}
    top_logprobs, top_ids = _top_k(logits_fn(base.params, rows), dc.top_k)
    n = part.stop - part.start
    ids.append(np.asarray(top_ids)[:n])
    logprobs.append(np.asarray(top_logprobs)[:n])
  return {
    "teacher_ids": np.concatenate(ids).astype(np.int32),
    "teacher_logprobs": np.concatenate(logprobs).astype(np.float32),
  }
