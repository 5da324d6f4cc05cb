"""Chat-format supervised examples: a prompt, an answer, and the answer tokens the loss is on.

Shared by T2L (tasks) and D2L (questions about documents).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Example(NamedTuple):
  prompt: str  # the user turn
  target: str  # the answer the model should give
  # None: no system turn (the chat template may add its default one, as SmolLM2's does); "": an
  # empty system turn, so the user turn is the only text the model is given.
  system: str | None = None
  prefill: str = ""  # text the assistant turn starts with (not scored)


def _messages(example: Example) -> list[dict]:
  system = [] if example.system is None else [{"role": "system", "content": example.system}]
  return system + [{"role": "user", "content": example.prompt}]


def prompt_text(tokenizer, example: Example) -> str:
  """The chat-formatted prompt as text, up to where the model starts answering (special tokens
  included as text: it is tokenized with add_special_tokens=False)."""
  text = tokenizer.apply_chat_template(
    _messages(example), add_generation_prompt=True, tokenize=False
  )
  return text + example.prefill


def prompt_ids(tokenizer, example: Example) -> list[int]:
  """Token ids of the chat-formatted prompt, up to where the model starts answering."""
  return tokenizer(prompt_text(tokenizer, example), add_special_tokens=False)["input_ids"]


def encode_example(tokenizer, example: Example, max_len: int) -> tuple[list[int], list[int]]:
  """Chat-formatted prompt + target + end of turn -> (token ids, loss mask on the answer)."""
  full_text = tokenizer.apply_chat_template(
    _messages(example) + [{"role": "assistant", "content": example.prefill + example.target}],
    tokenize=False,
  )
  prompt = prompt_ids(tokenizer, example)
  full_ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
  if full_ids[: len(prompt)] != prompt:
    raise ValueError(
      "the chat template does not extend the prompt with the answer; "
      "is this tokenizer's template a chat template?"
    )
  answer_ids = full_ids[len(prompt) :]
  answer_ids = answer_ids[: _end_of_answer(tokenizer, answer_ids)]
  if len(answer_ids) >= max_len:
    raise ValueError(f"answer of {len(answer_ids)} tokens does not fit max_len={max_len}")
  prompt = prompt[-(max_len - len(answer_ids)) :]  # Keep the end of a long prompt.
  return prompt + answer_ids, [0] * len(prompt) + [1] * len(answer_ids)


def _end_of_answer(tokenizer, answer_ids: list[int]) -> int:
  """Length of the answer up to and including its end-of-turn token (drops the template's tail)."""
  end_ids = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")}
  for i, token in enumerate(answer_ids):
    if token in end_ids:
      return i + 1
  return len(answer_ids)


def batch_spec(rows: int, max_len: int, max_answer: int) -> dict[str, jax.ShapeDtypeStruct]:
  """The arrays of `pad_batch` as abstract shapes: the one definition that the batch builders fill
  and `hyperlora plan` compiles for."""
  answers = (rows, max_answer)
  return {
    "tokens": jax.ShapeDtypeStruct((rows, max_len), jnp.int32),  # [batch, seq]
    "attention_mask": jax.ShapeDtypeStruct((rows, max_len), jnp.bool_),
    "target_index": jax.ShapeDtypeStruct(answers, jnp.int32),  # [batch, answer]
    "target_ids": jax.ShapeDtypeStruct(answers, jnp.int32),
    "target_mask": jax.ShapeDtypeStruct(answers, jnp.float32),
  }


def pad_batch(
  rows: list[tuple[list[int], list[int]]], max_len: int, pad_id: int, max_answer: int = 16
) -> dict:
  """Right-padded tokens [batch, max_len] plus the answer targets [batch, max_answer]: token
  target_ids[i, j] is predicted at position target_index[i, j] (where target_mask is 1)."""
  spec = batch_spec(len(rows), max_len, max_answer)
  out = {key: np.zeros(a.shape, a.dtype) for key, a in spec.items()}
  out["tokens"][:] = pad_id
  for i, (ids, mask) in enumerate(rows):
    out["tokens"][i, : len(ids)], out["attention_mask"][i, : len(ids)] = ids, True
    answer = [p for p, m in enumerate(mask) if m]
    if len(answer) > max_answer:
      raise ValueError(
        f"an answer of {len(answer)} tokens exceeds max_answer={max_answer}: raise the "
        "config's max_answer (and max_len with it) or use shorter answers"
      )
    out["target_index"][i, : len(answer)] = np.asarray(answer) - 1
    out["target_ids"][i, : len(answer)] = [ids[p] for p in answer]
    out["target_mask"][i, : len(answer)] = 1.0
  return out
