"""A base model we load (the embedded GGUF, a .gguf file or a Hugging Face directory) -> a Hugging
Face model directory: config.json, model.safetensors (float32, the weights we compute with) and the
tokenizer files, which `AutoModelForCausalLM.from_pretrained` loads with our logits. Evaluation
harnesses and serving engines take such a directory as the base beside our PEFT adapters.
"""

from __future__ import annotations

import os

import safetensors.numpy

from hyperlora import base_weights
from hyperlora.staging import check_new_dir, staging_beside

WEIGHTS_FILE = "model.safetensors"


def export_base(model: str, out_dir: str) -> str:
  """Writes `model` as a Hugging Face directory at out_dir (new or empty); returns out_dir. The
  files are written beside it and renamed into place, so a failure leaves nothing half-written."""
  check_new_dir(out_dir)
  loaded = base_weights.load(model)
  config = base_weights.hf_config(model)
  config.dtype = "float32"  # the weights are written as we compute with them
  tensors = base_weights.hf_tensors_from_params(loaded.config, loaded.params)
  with staging_beside(out_dir, ".base-") as staging:
    safetensors.numpy.save_file(
      tensors, os.path.join(staging, WEIGHTS_FILE), metadata={"format": "pt"}
    )
    config.save_pretrained(staging)
    loaded.tokenizer.save_pretrained(staging)
    check_new_dir(out_dir)  # again: the export took time, something may be there now
    if os.path.isdir(out_dir):
      os.rmdir(out_dir)  # empty (just checked)
    os.rename(staging, out_dir)
  return out_dir
