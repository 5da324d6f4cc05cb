"""LoRA pytree <-> Hugging Face PEFT adapter directory.

Export folds the scale into B and writes lora_alpha = r with rsLoRA off, so PEFT's scaling is
exactly 1 and every consumer (PEFT, vLLM, ...) applies the same dW = B @ A, whatever scaling rule
produced the adapter. Files are written to a temporary directory and renamed into place.
"""

from __future__ import annotations

import json
import os
import re

import jax
import numpy as np
import safetensors.numpy

from hyperlora import base_weights
from hyperlora import lora as lora_lib
from hyperlora.lora import LoRA
from hyperlora.models.config import LORA_TARGETS, ModelConfig
from hyperlora.serving import serving_rank
from hyperlora.staging import check_new_dir, staging_beside

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
METADATA_FILE = "hyperlora.json"
# What an adapter directory this project writes holds; only such a directory is ever replaced.
ADAPTER_FILES = frozenset((CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE))
_KEY = re.compile(
  r"^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$"
)


def _key(layer: int, module: str, which: str) -> str:
  return (
    f"base_model.model.model.layers.{layer}.{LORA_TARGETS[module]}.{module}.lora_{which}.weight"
  )


def check_out_dir(out_dir: str, overwrite: bool = False, flag: str = "--out") -> None:
  """Refuses (ValueError) an export target that is not a new directory, an empty one, or, with
  `overwrite`, an adapter directory (adapter_config.json + adapter_model.safetensors, at most
  hyperlora.json beside them). Called before any work, so a bad --out costs nothing."""
  if not _is_adapter_dir(out_dir):
    check_new_dir(out_dir, flag, "an adapter directory", ADAPTER_FILES)
  elif not overwrite:
    raise ValueError(
      f"{flag} {out_dir!r} already holds an adapter; pass --overwrite to replace it, or give a "
      f"new directory path"
    )


def _is_adapter_dir(out_dir: str) -> bool:
  """A directory this project's export wrote: the adapter's two files, at most its metadata
  beside them, nothing else (no subdirectory, no symbolic link)."""
  if os.path.islink(out_dir) or not os.path.isdir(out_dir):
    return False
  names = set(os.listdir(out_dir))
  return {CONFIG_FILE, WEIGHTS_FILE} <= names <= ADAPTER_FILES and all(
    os.path.isfile(os.path.join(out_dir, n)) for n in names
  )


def _replace_dir(staging: str, out_dir: str) -> None:
  """Moves the finished `staging` directory to `out_dir`. An existing adapter there (checked by
  check_out_dir) is renamed aside first and deleted file by file only once the new one is in
  place, so a failure at any point leaves one complete adapter at out_dir."""
  if not os.path.isdir(out_dir):
    os.rename(staging, out_dir)
    return
  old = staging + ".old"
  os.rename(out_dir, old)
  try:
    os.rename(staging, out_dir)
  except BaseException:
    os.rename(old, out_dir)
    raise
  for name in os.listdir(old):
    os.remove(os.path.join(old, name))
  os.rmdir(old)


def export(
  lora: LoRA,
  out_dir: str,
  base_model: str = "",
  extra: dict | None = None,
  overwrite: bool = False,
  ranks: tuple[int, ...] | None = None,
) -> str:
  """Writes one adapter (unbatched LoRA) as a PEFT directory; returns out_dir.

  out_dir must be new or empty, or (with `overwrite`) an adapter directory: anything else is
  refused with nothing written (check_out_dir). `extra` is stored as hyperlora.json beside the
  adapter (e.g. the task description), with the adapter's rank, the rank written and the scale
  folded into B. `ranks` (a serving engine's list, e.g. serving.VLLM_RANKS): zero-pad to the
  smallest of them that holds the adapter; the applied delta is unchanged.
  """
  check_out_dir(out_dir, overwrite)
  if lora.is_batched:
    raise ValueError("export takes one adapter; use export_batch for per-example adapters")
  lora.check_modules()
  rank = serving_rank(lora.rank, ranks) if ranks else lora.rank
  folded = lora_lib.pad_rank(lora_lib.fold_scale(lora), rank)
  tensors = {}
  for module, w in jax.device_get(folded.weights).items():
    for layer in range(w["A"].shape[0]):
      tensors[_key(layer, module, "A")] = np.ascontiguousarray(w["A"][layer], np.float32)
      tensors[_key(layer, module, "B")] = np.ascontiguousarray(w["B"][layer], np.float32)
  config = {
    "peft_type": "LORA",
    "task_type": "CAUSAL_LM",
    "base_model_name_or_path": base_model,
    "r": rank,
    "lora_alpha": rank,
    "use_rslora": False,
    "lora_dropout": 0.0,
    "target_modules": list(lora.modules),
    "bias": "none",
    "fan_in_fan_out": False,
    "inference_mode": True,
    "init_lora_weights": True,
    "modules_to_save": None,
  }
  with staging_beside(out_dir, ".adapter-") as staging:
    safetensors.numpy.save_file(
      tensors, os.path.join(staging, WEIGHTS_FILE), metadata={"format": "pt"}
    )
    with open(os.path.join(staging, CONFIG_FILE), "w") as f:
      json.dump(config, f, indent=2)
    if extra:
      with open(os.path.join(staging, METADATA_FILE), "w") as f:
        meta = {**extra, "rank": lora.rank, "peft_rank": rank, "scale_folded": float(lora.scale)}
        json.dump(meta, f, indent=2)
    check_out_dir(out_dir, overwrite)  # Again: the export took time, something may be there now.
    _replace_dir(staging, out_dir)
  return out_dir


def export_batch(
  lora: LoRA,
  out_dirs: list[str],
  base_model: str = "",
  extras: list[dict] | None = None,
  overwrite: bool = False,
  ranks: tuple[int, ...] | None = None,
) -> list[str]:
  """Per-example adapters (batched LoRA) -> one PEFT directory each (every target checked before
  the first is written)."""
  if not lora.is_batched or lora.batch_size != len(out_dirs):
    raise ValueError(f"need a batched LoRA with one adapter per directory ({len(out_dirs)})")
  for d in out_dirs:
    check_out_dir(d, overwrite)
  extras = extras or [None] * len(out_dirs)
  return [
    export(lora.example(i), d, base_model, e, overwrite, ranks)
    for i, (d, e) in enumerate(zip(out_dirs, extras))
  ]


def load(adapter_dir: str, config: ModelConfig | None = None) -> LoRA:
  """Reads a PEFT LoRA directory. With `config`, checks it fits that base model."""
  config_path = os.path.join(adapter_dir, CONFIG_FILE)
  weights_path = os.path.join(adapter_dir, WEIGHTS_FILE)
  for path in (config_path, weights_path):
    if not os.path.isfile(path):
      raise FileNotFoundError(
        f"{adapter_dir!r} is not a PEFT adapter directory: missing {os.path.basename(path)}"
      )
  with open(config_path) as f:
    peft_config = json.load(f)
  if peft_config.get("peft_type", "LORA") != "LORA":
    raise ValueError(f"{adapter_dir!r} holds a {peft_config['peft_type']} adapter, not LORA")
  if peft_config.get("rank_pattern") or peft_config.get("alpha_pattern"):
    raise ValueError(
      f"{adapter_dir!r} uses rank_pattern/alpha_pattern, which hyperlora does not read"
    )
  rank = int(peft_config["r"])
  alpha = float(peft_config.get("lora_alpha", rank))
  scale = (lora_lib.rslora_scale if peft_config.get("use_rslora") else lora_lib.standard_scale)(
    alpha, rank
  )

  per_module: dict[str, dict[str, dict[int, np.ndarray]]] = {}
  with base_weights.reading(weights_path):
    tensors = safetensors.numpy.load_file(weights_path)
  for key, array in tensors.items():
    match = _KEY.match(key)
    if not match:
      raise ValueError(
        f"{adapter_dir!r}: unexpected tensor {key!r} (only q/k/v/o/gate/up/down LoRA is read)"
      )
    layer, module, which = int(match[1]), match[3], match[4]
    per_module.setdefault(module, {}).setdefault(which, {})[layer] = array.astype(np.float32)

  num_layers = (
    config.num_layers if config else 1 + max(l for parts in per_module.values() for l in parts["A"])
  )
  weights = {}
  for module, parts in per_module.items():
    if set(parts["A"]) != set(parts["B"]):
      raise ValueError(f"{adapter_dir!r}: {module} has lora_A and lora_B for different layers")
    if max(parts["A"]) >= num_layers:
      raise ValueError(
        f"{adapter_dir!r}: {module} has layer {max(parts['A'])} but the base model "
        f"has {num_layers} layers; was it made for another model?"
      )
    a_shape, b_shape = next(iter(parts["A"].values())).shape, next(iter(parts["B"].values())).shape
    # Layers PEFT left out (layers_to_transform) carry no change: zeros.
    weights[module] = {
      "A": np.stack([parts["A"].get(l, np.zeros(a_shape, np.float32)) for l in range(num_layers)]),
      "B": np.stack([parts["B"].get(l, np.zeros(b_shape, np.float32)) for l in range(num_layers)]),
    }
  lora = LoRA(jax.tree.map(jax.numpy.asarray, weights), scale)
  if config is not None:
    lora_lib.check_compatible(lora, config, source=f"adapter {adapter_dir!r}")
  return lora
