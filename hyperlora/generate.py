"""Prefill + KV-cache decoding, greedy or sampled, with the tokenizer's chat template."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from hyperlora.lora import LoRA
from hyperlora.models.transformer import KVCache, Transformer
from hyperlora.sft import Example, prompt_ids


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "temperature", "eos_ids"))
def generate(
  model: Transformer,
  params: dict,
  tokens: jax.Array,
  attention_mask: jax.Array,
  max_new_tokens: int,
  lora: LoRA | None = None,
  rng: jax.Array | None = None,
  temperature: float = 0.0,
  eos_ids: tuple[int, ...] = (),
) -> jax.Array:
  """Continues left-padded prompts tokens [batch, seq]; returns new tokens [batch, max_new_tokens].

  temperature 0 is greedy. After an eos token a row keeps emitting that eos token.
  """
  batch, seq = tokens.shape
  cache = KVCache.init(model.config, batch, seq + max_new_tokens, model.dtype)
  out = model.apply(
    {"params": params}, tokens, attention_mask, lora=lora, cache=cache, only_last_logits=True
  )
  rng = jax.random.key(0) if rng is None else rng

  def pick(logits, key):  # logits [batch, vocab]
    if temperature == 0.0:
      return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, logits / temperature).astype(jnp.int32)

  def step(carry, key):
    cache, logits, done, last = carry
    token = jnp.where(done, last, pick(logits, key))
    done = done | jnp.isin(token, jnp.asarray(eos_ids, jnp.int32))
    out = model.apply(
      {"params": params}, token[:, None], lora=lora, cache=cache, only_last_logits=True
    )
    return (out.cache, out.logits[:, -1], done, token), token

  init = (out.cache, out.logits[:, -1], jnp.zeros((batch,), bool), jnp.zeros((batch,), jnp.int32))
  _, new_tokens = jax.lax.scan(step, init, jax.random.split(rng, max_new_tokens))
  return new_tokens.T  # [batch, max_new_tokens]


def encode_chat(
  tokenizer, prompts: list[str], system: str | None = None, width: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """Chat-formatted, left-padded token ids and mask [batch, seq] for a list of user messages."""
  rows = [prompt_ids(tokenizer, Example(p, "", system)) for p in prompts]
  return left_pad(rows, tokenizer.pad_token_id or 0, width)


def left_pad(
  rows: list[list[int]], pad_id: int = 0, width: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """[batch, width] tokens and mask; a fixed width keeps jitted shapes (and compiles) constant."""
  width = max(max(len(r) for r in rows), width or 0)
  tokens = np.full((len(rows), width), pad_id, np.int32)
  mask = np.zeros((len(rows), width), bool)
  for i, row in enumerate(rows):
    tokens[i, width - len(row) :] = row
    mask[i, width - len(row) :] = True
  return tokens, mask


def decode(tokenizer, new_tokens: np.ndarray, eos_ids: tuple[int, ...]) -> list[str]:
  """Text of each row up to (not including) its first eos token."""
  texts = []
  for row in np.asarray(new_tokens).tolist():
    stop = next((i for i, t in enumerate(row) if t in eos_ids), len(row))
    texts.append(tokenizer.decode(row[:stop], skip_special_tokens=True))
  return texts


def eos_ids_of(tokenizer, config) -> tuple[int, ...]:
  """Stop tokens: the model's eos ids plus the chat template's end-of-turn token when it has one."""
  ids = set(config.eos_token_ids)
  if tokenizer.eos_token_id is not None:
    ids.add(tokenizer.eos_token_id)
  for marker in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>"):
    token_id = tokenizer.convert_tokens_to_ids(marker)
    if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
      ids.add(token_id)
  return tuple(sorted(ids))


def chat(
  loaded,
  prompts: list[str | Example],
  max_new_tokens: int = 64,
  lora: LoRA | None = None,
  temperature: float = 0.0,
  seed: int = 0,
  system: str | None = None,
  dtype=jnp.float32,
  *,
  batch: int | None = None,
  width: int | None = None,
  keep_end: bool = False,
  desc: str | None = None,
) -> list[str]:
  """Answers each user message with the loaded model (optionally LoRA-patched): the one place that
  turns prompts into answers (CLI, evaluations, D2L's teacher). A prompt is a user message, or an
  sft.Example whose own system message and assistant prefill are used (its target is not).

  batch: prompts per generate call (None: all at once, required for a per-row LoRA whose leading
  axis matches the prompts); a short last batch is filled up so every call has one shape. width:
  padded prompt length (None: the longest prompt rounded up to 32 tokens); a longer prompt is an
  error, or with keep_end its last `width` tokens are kept. desc: a progress bar label.
  """
  if not prompts:
    return []
  tok = loaded.tokenizer
  eos = eos_ids_of(tok, loaded.config)
  model = loaded.module(dtype)
  size = batch or len(prompts)
  rows = [prompt_ids(tok, p if isinstance(p, Example) else Example(p, "", system)) for p in prompts]
  answers = []
  starts = range(0, len(rows), size)
  for start in tqdm(starts, desc=desc, leave=False, disable=desc is None or len(starts) < 2):
    part = rows[start : start + size]
    part += [part[-1]] * (size - len(part))  # a full batch keeps the shape (one compile)
    longest = max(map(len, part))
    fixed = width or -(-longest // 32) * 32
    if longest > fixed:
      if not keep_end:
        raise ValueError(
          f"a prompt of {longest} tokens exceeds the width {fixed}; raise the "
          f"config's max length or use shorter prompts"
        )
      part = [r[-fixed:] for r in part]
    tokens, mask = left_pad(part, tok.pad_token_id or 0, fixed)
    new = generate(
      model,
      loaded.params,
      jnp.asarray(tokens),
      jnp.asarray(mask),
      max_new_tokens,
      lora,
      jax.random.fold_in(jax.random.key(seed), start),
      temperature,
      eos,
    )
    answers += decode(tok, np.asarray(new), eos)[: len(rows) - start]
  return [a.strip() for a in answers]
