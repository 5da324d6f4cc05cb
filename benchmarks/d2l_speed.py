"""D2L on CPU: internalisation latency per 1K document tokens vs context distillation.

  python benchmarks/d2l_speed.py [--config ../configs/d2l/smollm2_synthetic.py] [--cd-steps 20]

Internalise: SmolLM2-135M features + the hypernetwork of the given config (random weights: the
latency does not depend on training), documents of 1K/2K/4K tokens, chunks of the config's
eval.chunk_len and of --chunk-len, after one warm-up call. Context distillation (CD): the
reference's per-document
LoRA (r=8, down_proj, AdamW) on the document's 7 questions; its step is timed over --cd-steps and
the reference's 300 steps are that time x 300 / cd_steps (marked "extrapolated").
"""

from __future__ import annotations

import argparse
import time

import jax
from report import median_seconds, write

import hyperlora
from d2l_jax import corpus, teacher
from d2l_jax import model as d2l_model
from d2l_jax.train import ContextDistillation, question_pairs
from hyperlora.cli_config import load_config_file


def main():
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--config", default="../configs/d2l/smollm2_synthetic.py")
  parser.add_argument("--cd-steps", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--chunk-len", type=int, default=1024, help="a second chunk length to time")
  args = parser.parse_args()

  config = load_config_file(args.config)
  base = hyperlora.load(config.base_model)
  setup = d2l_model.build(config, base)
  params = setup.init_params(0)
  tok = base.tokenizer
  rows = []
  for chunk_len in dict.fromkeys((config.eval.chunk_len, args.chunk_len)):
    for n_tokens in (1024, 2048, 4096):
      doc = corpus.niah_document(tok, n_tokens, 0.5, seed=0).text
      seconds = median_seconds(
        lambda: jax.block_until_ready(setup.internalize(params, doc, chunk_len)), args.repeats
      )
      rows.append(
        {
          "method": f"D2L internalize, chunk {chunk_len}",
          "doc tokens": n_tokens,
          "seconds": seconds,
          "s per 1K tokens": seconds / n_tokens * 1024,
          "chunks": -(-len(tok(doc, add_special_tokens=False)["input_ids"]) // chunk_len),
        }
      )

  doc = corpus.synthetic_document(0)
  pairs, _ = question_pairs([doc], "study")
  config.eval.cd_steps = args.cd_steps
  cd = ContextDistillation(base, config)
  targets = teacher.prepare(base, pairs, config.data, None)
  cd(targets)  # compile
  start = time.perf_counter()
  cd(targets)
  per_step = (time.perf_counter() - start) / args.cd_steps
  n_tokens = len(tok(doc.text, add_special_tokens=False)["input_ids"])
  internalize = median_seconds(
    lambda: jax.block_until_ready(setup.internalize(params, doc.text, config.eval.chunk_len)),
    args.repeats,
  )
  rows.append(
    {
      "method": "D2L internalize (the CD document)",
      "doc tokens": n_tokens,
      "seconds": internalize,
      "s per 1K tokens": internalize / n_tokens * 1024,
      "chunks": 1,
    }
  )
  rows.append(
    {
      "method": "context distillation, 300 steps (extrapolated)",
      "doc tokens": n_tokens,
      "seconds": 300 * per_step,
      "s per 1K tokens": 300 * per_step / n_tokens * 1024,
      "chunks": "-",
    }
  )
  write(
    "d2l_speed",
    rows,
    {
      "config": args.config,
      "cd_step_seconds": per_step,
      "cd_over_d2l": 300 * per_step / internalize,
      "hypernet": dict(config.hypernet),
      "features": config.features,
    },
  )


if __name__ == "__main__":
  main()
