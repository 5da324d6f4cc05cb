"""Memory of a document as context: KV cache (ICL) vs D2L adapter, 4K..128K tokens.

  python benchmarks/d2l_memory.py [--measure-up-to 16384]

For SmolLM2-135M and Gemma-2-2b shapes: the KV cache the base model keeps for the document (keys and
values of every layer, bf16) and the D2L adapter (down_proj, r=8 per chunk, rank (K + 1) r, bf16)
for chunk lengths 1024 (the reference's NIAH evaluation) and 8192 (its QA evaluation).
"Measured" rows allocate the real arrays (our KVCache and a real internalised SmolLM2 adapter, cast
to bf16) and count their bytes; beyond --measure-up-to (or for Gemma-2-2b, whose weights are not
here) the bytes are computed from the shapes (the KV formula is checked against the measured
arrays).
"""

from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp
from report import write

import hyperlora
from d2l_jax import corpus
from d2l_jax import model as d2l_model
from hyperlora.cli_config import load_config_file
from hyperlora.memory import array_mb, kv_cache_mb, lora_mb
from hyperlora.models.shapes import named_config
from hyperlora.models.transformer import KVCache

GEMMA2_2B = named_config("shapes:gemma-2-2b-it")
LENGTHS = (4096, 8192, 16384, 32768, 65536, 131072)
BF16 = 2


def main():
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--measure-up-to", type=int, default=16384)
  parser.add_argument("--config", default="../configs/d2l/smollm2_synthetic.py")
  args = parser.parse_args()
  config = load_config_file(args.config)
  base = hyperlora.load(config.base_model)
  setup = d2l_model.build(config, base)
  params = setup.init_params(0)
  rows = []
  for model_config in (base.config, GEMMA2_2B):
    for tokens in LENGTHS:
      measure = model_config is base.config and tokens <= args.measure_up_to
      row = {
        "model": model_config.name or model_config.family,
        "doc tokens": tokens,
        "how": "measured" if measure else "computed",
      }
      if measure:
        cache = KVCache.init(base.config, 1, tokens, jnp.bfloat16)
        row["KV cache MB"] = array_mb((cache.k, cache.v))
        assert row["KV cache MB"] == kv_cache_mb(base.config, tokens, BF16)
      else:
        row["KV cache MB"] = kv_cache_mb(model_config, tokens, BF16)
      for chunk in (1024, 8192):
        if measure:
          doc = corpus.niah_document(base.tokenizer, tokens - 64, 0.5, seed=0).text
          lora = setup.internalize(params, doc, chunk)
          row[f"adapter MB (chunk {chunk})"] = array_mb(
            jax.tree.map(lambda x: x.astype(jnp.bfloat16), lora.weights)
          )
        else:
          row[f"adapter MB (chunk {chunk})"] = lora_mb(
            model_config, ("down_proj",), (math.ceil(tokens / chunk) + 1) * 8, BF16
          )
      row["KV / adapter (chunk 8192)"] = row["KV cache MB"] / row["adapter MB (chunk 8192)"]
      rows.append(row)
  write("d2l_memory", rows, {"dtype": "bfloat16", "rank_per_chunk": 8, "modules": ["down_proj"]})


if __name__ == "__main__":
  main()
