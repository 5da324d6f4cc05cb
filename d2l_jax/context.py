"""Context features for D2L: the base model's hidden states over a document, no gradient into it.

The document is wrapped as the reference wraps it: an empty system message (so no default system
prompt puts the same tokens in front of every chunk), the document as the user turn, and the
generation prompt. Features are the hidden states of every layer but the last, in transformers'
sense (the embeddings and the outputs of layers 0..L-2, i.e. the input of each of the L layers:
[L, seq, d]; the reference's main setting), or only the state after the first L // 4 layers
([1, seq, d]; its NIAH setting). As in transformers (and so the reference), the last state returned
has the model's final RMSNorm applied: the raw residual stream has a few tokens whose norm is
~8x the median (SmolLM2's first token), which an attention over it would follow instead of the text.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
from jinja2.exceptions import (
  TemplateError,  # chat templates are jinja2 (a transformers dependency)
)

from hyperlora.models.layers import RMSNorm

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


def wrap_document(tokenizer, document: str) -> str:
  """The document as the reference feeds it to the context encoder: an empty system turn, the
  document (stripped) as the user turn, the generation prompt. Templates that refuse a system turn
  (Gemma-2's) get the user turn alone."""
  user = [{"role": "user", "content": document.strip()}]
  try:
    return tokenizer.apply_chat_template(
      [{"role": "system", "content": ""}] + user, tokenize=False, add_generation_prompt=True
    )
  except TemplateError:  # e.g. "System role not supported"
    return tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)


def document_tokens(tokenizer, document: str) -> list[int]:
  """Token ids of the wrapped document (validated as by `content_tokens`)."""
  content_tokens(tokenizer, document)
  return tokenizer(wrap_document(tokenizer, document), add_special_tokens=False)["input_ids"]


def read_document(path: str) -> str:
  """A UTF-8 text file; binary or undecodable files are refused with the reason."""
  if os.path.isdir(path):
    raise ValueError(f"{path!r} is a directory; give the document as a UTF-8 text file")
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
  model, params = first_layers(model, params, reader_layers(model.config, which))
  out = model.apply({"params": params}, tokens, mask, return_hidden_states=True)
  hidden = jax.lax.stop_gradient(out.hidden_states)  # [n_layers + 1, n, seq, d]
  # The final norm, as transformers returns the last state.
  norm = RMSNorm(model.config.rms_norm_eps, model.config.norm_offset)
  last = norm.apply({"params": params["norm"]}, hidden[-1])
  hidden = hidden.at[-1].set(last) if which == "all_but_last" else last[None]
  return jnp.swapaxes(hidden, 0, 1).astype(jnp.float32)  # [n, layers_used, seq, d]


def reader_layers(model_config, which: str) -> int:
  """The layers that run to give the features: only those whose outputs are used, L - 1 of them
  ('all_but_last') or L // 4 ('quarter')."""
  return model_config.num_layers - 1 if which == "all_but_last" else model_config.num_layers // 4


def first_layers_config(model_config, n: int):
  """The model's config cut after its first n layers."""
  return dataclasses.replace(model_config, num_layers=n, local_layers=model_config.local_layers[:n])


def first_layers(model, params, n: int):
  """The model cut after its first n layers, and its params (the layer stack sliced)."""
  return model.clone(config=first_layers_config(model.config, n)), {
    **params,
    "layers": jax.tree.map(lambda x: x[:n], params["layers"]),
  }
