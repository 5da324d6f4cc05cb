"""T2L speed on CPU: adapter generation latency (L/M/S) and one SFT step, with achieved FLOP/s.

  python benchmarks/t2l_speed.py [--batch 8] [--seq 64] [--repeats 5]

Generation: SmolLM2 shapes, h=128, head_in=512, q/v, r=8, one description (384-d MiniLM embedding
precomputed; the encoder's own time is a separate row). SFT step: 8 examples x 64 tokens, a
different generated adapter per example, forward + backward + AdamW update, T2L-L. FLOPs are
counted from the model's shapes (`step_flops`; XLA's own count sees a scanned layer once); the peak
is a float32 matmul measured in the same run.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from report import median_seconds, write

import hyperlora
from hyperlora import train as train_lib
from t2l_jax import model as t2l_model
from t2l_jax.encoder import SentenceEncoder
from t2l_jax.hypernet import HyperSpec, T2LHypernet, init_params


def step_flops(c, batch: int, seq: int, answer: int, modules=("q_proj", "v_proj"), rank=8) -> float:
  """Matmul FLOPs of one SFT step. The base is frozen, so its backward pass computes activation
  gradients only (as many FLOPs as the forward); the hypernetwork's own cost is negligible."""
  tokens = batch * seq
  per_layer = sum(
    d_in * d_out
    for d_in, d_out in (
      c.projection_dims(m)
      for m in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    )
  )
  lora = sum(rank * sum(c.projection_dims(m)) for m in modules)
  attention = 2 * seq * c.num_heads * c.head_dim  # scores + weighted values, per query token
  forward = 2 * tokens * c.num_layers * (per_layer + lora + attention)
  forward += 2 * batch * answer * c.hidden_size * c.vocab_size  # logits at answer positions only
  return 2 * forward


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  seconds = median_seconds(lambda: f(a).block_until_ready(), repeats)
  return 2 * n**3 / seconds


def main():
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--seq", type=int, default=64)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()

  loaded = hyperlora.load("smollm2", with_tokenizer=False)
  rows = []
  encoder = SentenceEncoder()
  description = ["Add 7 to the number and write the result."]
  seconds = median_seconds(lambda: encoder(description), args.repeats * 4)
  rows.append({"what": "encode 1 description (MiniLM, torch)", "ms": 1e3 * seconds})
  embedding = jnp.asarray(encoder(description))
  for variant in ("L", "M", "S"):
    spec = HyperSpec.for_model(loaded.config, variant, ["q_proj", "v_proj"])
    params = init_params(spec, embedding.shape[-1], jax.random.key(0))
    apply = jax.jit(lambda p, e, spec=spec: T2LHypernet(spec).apply({"params": p}, e))
    seconds = median_seconds(
      lambda: jax.block_until_ready(apply(params, embedding)), args.repeats * 20
    )
    rows.append({"what": f"generate adapter T2L-{variant}", "ms": 1e3 * seconds})

  spec = HyperSpec.for_model(loaded.config, "L", ["q_proj", "v_proj"])
  params = init_params(spec, embedding.shape[-1], jax.random.key(0))
  optimizer = train_lib.make_optimizer(1e-4, 100)
  loss_fn = train_lib.lm_loss_fn(
    loaded.module(),
    t2l_model.hypernet_adapter_fn(T2LHypernet(spec)),
    t2l_model.l2_penalty(1e-3),
    0.1,
  )
  step = jax.jit(train_lib.make_train_step(loss_fn, optimizer), donate_argnums=0)
  rng = np.random.default_rng(0)
  answer = 8
  batch = {
    "tokens": jnp.asarray(
      rng.integers(0, loaded.config.vocab_size, (args.batch, args.seq)), jnp.int32
    ),
    "attention_mask": jnp.ones((args.batch, args.seq), bool),
    "target_index": jnp.tile(jnp.arange(args.seq - answer - 1, args.seq - 1), (args.batch, 1)),
    "target_ids": jnp.asarray(
      rng.integers(0, loaded.config.vocab_size, (args.batch, answer)), jnp.int32
    ),
    "target_mask": jnp.ones((args.batch, answer), jnp.float32),
    "task_emb": jnp.asarray(rng.normal(size=(args.batch, embedding.shape[-1])), jnp.float32),
  }
  state = train_lib.init_state(params, optimizer, 0)
  flops = step_flops(loaded.config, args.batch, args.seq, answer)
  holder = {"state": state}

  def run():
    holder["state"], metrics = step(holder["state"], loaded.params, batch)
    jax.block_until_ready(metrics)

  seconds = median_seconds(run, args.repeats)
  peak = matmul_peak()
  rows.append(
    {
      "what": f"SFT step T2L-L, {args.batch}x{args.seq} tokens",
      "ms": 1e3 * seconds,
      "GFLOP": flops / 1e9,
      "GFLOP/s": flops / seconds / 1e9,
      "fraction of matmul peak": flops / seconds / peak,
    }
  )
  rows.append({"what": "float32 matmul peak (2048^3)", "GFLOP/s": peak / 1e9})
  write("t2l_speed", rows, {"batch": args.batch, "seq": args.seq, "device": str(jax.devices()[0])})


if __name__ == "__main__":
  main()
