"""Forward (prefill) throughput of SmolLM2-135M: ours (JAX) vs transformers (PyTorch), same
weights and batch, and the cost of per-example LoRA (r=8 on q,v) over the plain forward.

  python benchmarks/forward_throughput.py [--batch 8] [--seq 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
from report import median_seconds, write

import hyperlora
from hyperlora import base_weights
from hyperlora import lora as lora_lib


def main():
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--seq", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--model", default="smollm2")
  parser.add_argument("--skip-torch", action="store_true", help="only the JAX rows")
  args = parser.parse_args()

  loaded = hyperlora.load(args.model, with_tokenizer=False)
  model = loaded.module()
  tokens = np.random.default_rng(0).integers(0, loaded.config.vocab_size, (args.batch, args.seq))
  tokens_jax = jnp.asarray(tokens, jnp.int32)
  n_tokens = args.batch * args.seq

  @jax.jit
  def forward(params, tokens, lora):
    return model.apply({"params": params}, tokens, lora=lora).logits

  def jax_time(lora):
    return median_seconds(
      lambda: forward(loaded.params, tokens_jax, lora).block_until_ready(), args.repeats
    )

  key = jax.random.key(0)
  per_example = lora_lib.init(
    key,
    loaded.config,
    ["q_proj", "v_proj"],
    8,
    lora_lib.rslora_scale(16, 8),
    batch=args.batch,
    b_std=0.01,
  )
  shared = per_example.example(0)
  base_s = jax_time(None)
  rows = [{"impl": "jax", "lora": "none", "seconds": base_s, "tokens/s": n_tokens / base_s}]
  for name, lora in (("shared r=8 q,v", shared), ("per-example r=8 q,v", per_example)):
    seconds = jax_time(lora)
    rows.append(
      {
        "impl": "jax",
        "lora": name,
        "seconds": seconds,
        "tokens/s": n_tokens / seconds,
        "overhead vs none": f"{100 * (seconds / base_s - 1):+.1f}%",
      }
    )

  if not args.skip_torch:
    import torch
    import transformers

    path = base_weights.resolve(args.model)
    reference = transformers.AutoModelForCausalLM.from_pretrained(
      os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32
    ).eval()
    ids = torch.tensor(tokens)

    def torch_forward():
      with torch.no_grad():
        reference(ids)

    seconds = median_seconds(torch_forward, args.repeats)
    rows.append(
      {
        "impl": "torch",
        "lora": "none",
        "seconds": seconds,
        "tokens/s": n_tokens / seconds,
        "threads": torch.get_num_threads(),
      }
    )
    rows[0]["speed vs torch"] = f"{seconds / base_s:.2f}x"
  write(
    "forward_throughput",
    rows,
    {"batch": args.batch, "seq": args.seq, "model": args.model, "device": str(jax.devices()[0])},
  )


if __name__ == "__main__":
  main()
