"""Context features for D2L: the base model's hidden states over a document, no gradient into it.

The document is wrapped as a user turn with the tokenizer's chat template. Features are the hidden
states of every layer but the last, in transformers' sense (the embeddings and the outputs of layers
0..L-2, i.e. the input of each of the L layers: [L, seq, d]; the reference's main setting), or only
the state after the first L // 4 layers ([1, seq, d]; its NIAH setting).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

FEATURE_LAYERS = ("all_but_last", "quarter")


def content_tokens(tokenizer, document: str) -> list[int]:
  """Token ids of the document's text alone; clear errors for unusable documents."""
  if not isinstance(document, str):
    raise TypeError("the document must be text")
  if not document.strip():
    raise ValueError("the document is empty")
  content_ids = tokenizer(document, add_special_tokens=False)["input_ids"]
  special = set(tokenizer.all_special_ids)
  if all(t in special for t in content_ids):
    raise ValueError("the document holds only special tokens; give it some text")
  return content_ids


def document_tokens(tokenizer, document: str) -> list[int]:
  """Token ids of the document as a user turn (validated as by `content_tokens`)."""
  content_tokens(tokenizer, document)
  text = tokenizer.apply_chat_template([{"role": "user", "content": document}], tokenize=False)
  return tokenizer(text, add_special_tokens=False)["input_ids"]


def read_document(path: str) -> str:
  """A UTF-8 text file; binary or undecodable files are refused with the reason."""
  with open(path, "rb") as f:
    raw = f.read()
  if b"\x00" in raw[:4096]:
    raise ValueError(f"{path!r} looks binary (NUL bytes); give a UTF-8 text file")
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as err:
    raise ValueError(f"{path!r} is not UTF-8 text ({err.reason} at byte {err.start})") from err


@functools.partial(jax.jit, static_argnames=("model", "which"))
def features(model, params, tokens, mask, which: str = "all_but_last"):
  """tokens, mask [n, seq] -> features [n, layers_used, seq, d] (float32, gradient stopped)."""
  if which not in FEATURE_LAYERS:
    raise ValueError(f"feature layers must be one of {FEATURE_LAYERS}, not {which!r}")
  if which == "quarter":  # Only the first L // 4 layers run: the rest would be thrown away.
    model, params = first_layers(model, params, model.config.num_layers // 4)
  out = model.apply({"params": params}, tokens, mask, return_hidden_states=True)
  hidden = jnp.swapaxes(jax.lax.stop_gradient(out.hidden_states), 0, 1)  # [n, L + 1, seq, d]
  return (hidden[:, :-1] if which == "all_but_last" else hidden[:, -1:]).astype(jnp.float32)


def first_layers(model, params, n: int):
  """The model cut after its first n layers, and its params (the layer stack sliced)."""
  config = dataclasses.replace(model.config, num_layers=n, local_layers=model.config.local_layers[:n])
  return model.clone(config=config), {**params, "layers": jax.tree.map(lambda x: x[:n], params["layers"])}
