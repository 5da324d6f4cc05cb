"""`t2l` command line: train, library, generate, eval.

t2l train --config configs/t2l/smollm2_suite.py [--config.train.steps=100 ...]
t2l library --config configs/t2l/smollm2_suite.py --out LIBRARY_DIR   (one LoRA per training task)
t2l train --config configs/t2l/recon.py --config.recon.library=LIBRARY_DIR
t2l generate --checkpoint WORKDIR "Add 7 to the number." --out ADAPTER_DIR [--pad-rank vllm]
t2l generate --checkpoint WORKDIR --descriptions tasks.jsonl --out-dir ADAPTERS   (one per line)
t2l eval --checkpoint WORKDIR [--out results.json] [--step N]  (also writes results.md)
t2l eval --checkpoint WORKDIR --export-harness-tasks DIR   (held-out tasks, base and adapters for
                                        lm-evaluation-harness; then `hyperlora harness DIR`)
t2l curve --checkpoint WORKDIR --steps 60,120,180 [--out curve.json]   (T2L vs its control by step)
t2l encoders --config configs/t2l/smollm2_channel.py [--out encoders.json]
                                        (how MiniLM and the base model separate the suite's tasks)
"""

from __future__ import annotations

# Commands import JAX and the method's modules when they run, so `--help` answers at once.
import argparse
import json
import os
import sys

# Every row `t2l eval` can print (t2l_jax.evaluate.VARIANTS, spelled out so --help needs no JAX).
EVAL_VARIANTS = (
  "base,multitask,multitask_described,oracle,t2l,t2l_heldout,t2l_sibling,t2l_family,t2l_random"
)


def config_main(command: str, argv: list[str]) -> int:
  """`train` and `library`: absl flags with an ml_collections config file (--config.a.b=value)."""
  from hyperlora import cli_config

  def out_flag(flags, flag_values):
    flags.DEFINE_string(
      "out",
      None,
      "library: directory for the per-task PEFT adapters; encoders: JSON file",
      flag_values=flag_values,
    )

  usage = (
    __doc__
    + "\nflags:\n"
    + cli_config.CONFIG_HELP
    + "  --out=DIR              (library) where to write one PEFT adapter per training task\n"
    + "  --out=FILE             (encoders) also write the tables as JSON (and Markdown beside it)"
  )
  config, flag_values = cli_config.parse(f"t2l {command}", argv, usage, out_flag)
  if config is None:
    return 0 if any(a in ("-h", "--help") for a in argv) else 2
  cli_config.start(config)
  from t2l_jax import train as train_lib

  if command == "encoders":
    from t2l_jax import description_stats
    from t2l_jax import model as t2l_model

    return cli_config.guarded(
      lambda: description_stats.report(t2l_model.build(config), config, flag_values.out) and None
    )
  if command == "library":
    if not flag_values.out or not config.baselines.oracle_steps:
      print(
        "error: library needs --out DIR and --config.baselines.oracle_steps > 0", file=sys.stderr
      )
      return 2
    from t2l_jax import model as t2l_model

    def library():
      setup = t2l_model.build(config)
      dirs = train_lib.train_task_loras(
        setup, config, setup.train_tasks, flag_values.out, config.baselines.oracle_steps
      )
      print(f"wrote {len(dirs)} adapters to {flag_values.out}")

    return cli_config.guarded(library)
  if config.mode not in ("sft", "recon"):
    print(f"error: config.mode must be 'sft' or 'recon', not {config.mode!r}", file=sys.stderr)
    return 2
  return cli_config.run_training(
    train_lib.train if config.mode == "sft" else train_lib.train_reconstruction, config, "t2l"
  )


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  from hyperlora.cli_config import setup_logging

  setup_logging("t2l_jax")
  if argv and argv[0] in ("train", "library", "encoders"):
    return config_main(argv[0], argv[1:])
  parser = argparse.ArgumentParser(
    prog="t2l",
    description="Text-to-LoRA in JAX: a task description -> a LoRA adapter in one forward pass.",
    epilog=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  sub = parser.add_subparsers(dest="command", required=True)
  sub.add_parser("train", help="meta-train, SFT or reconstruction (see `t2l train --help`)")
  sub.add_parser("library", help="train one LoRA per training task (see `t2l library --help`)")
  sub.add_parser(
    "encoders",
    help="per family: description cosines and nearest-own-task rate for MiniLM and the base model",
  )
  g = sub.add_parser(
    "generate",
    help="description -> PEFT adapter directory (or a JSONL of them -> one directory each)",
  )
  g.add_argument("description", nargs="?", help="what the task is, in a sentence or two")
  g.add_argument("--checkpoint", required=True, help="a `t2l train` workdir")
  g.add_argument("--out", help="a new directory to write the adapter to (PEFT format)")
  g.add_argument(
    "--descriptions",
    metavar="FILE.jsonl",
    help='a benchmark\'s descriptions, one JSON object a line: {"name": ..., "description": ...}',
  )
  g.add_argument(
    "--out-dir", help="with --descriptions: write one adapter directory per line, DIR/NAME"
  )
  g.add_argument(
    "--overwrite", action="store_true", help="replace --out if it already holds an adapter"
  )
  g.add_argument("--model", help="base model the adapter is for (default: the checkpoint's)")
  g.add_argument(
    "--pad-rank",
    metavar="vllm|R,R,..",
    help="zero-pad the adapter to the next rank a serving engine accepts: 'vllm' or a list "
    "like 8,16,32 (the applied delta is unchanged)",
  )
  # argparse formats help strings with %: a literal percent sign is written %%.
  e = sub.add_parser(
    "eval", help="zero-shot tables (sibling / family held-out, seen tasks) with 95%% intervals"
  )
  e.add_argument("--checkpoint", required=True, help="a `t2l train` workdir")
  e.add_argument(
    "--out", help="also write the tables as JSON here (per-example scores) and Markdown (.md)"
  )
  e.add_argument(
    "--step",
    type=int,
    help="evaluate T2L's checkpoint of this step (default: the latest), for a learning curve",
  )
  e.add_argument(
    "--export-harness-tasks",
    metavar="DIR",
    help="instead of the tables: write the held-out sibling tasks as lm-evaluation-harness tasks "
    "(JSONL + YAML), the base model, the multi-task LoRA, one T2L adapter per task and our "
    "scores, to a new directory DIR; then `hyperlora harness DIR` compares",
  )
  e.add_argument(
    "--variants",
    default=EVAL_VARIANTS,
    help="rows to evaluate (comma-separated; the multi-task and oracle LoRAs appear when trained)",
  )
  c = sub.add_parser(
    "curve", help="learning curve: T2L beside its sibling-description control by checkpoint"
  )
  c.add_argument("--checkpoint", required=True, help="a `t2l train` workdir")
  c.add_argument("--steps", required=True, help="comma-separated checkpoint steps, e.g. 60,120")
  c.add_argument("--out", help="also write the curve as JSON here (and as Markdown, .md beside it)")
  args = parser.parse_args(argv)

  from hyperlora.cli_config import guarded

  return guarded(lambda: run_command(args))


def read_descriptions(path: str) -> dict[str, str]:
  """--descriptions FILE.jsonl -> {name: description}, every line checked (one line says which is
  wrong and how) before any model loads."""
  if not os.path.isfile(path):
    raise ValueError(f"--descriptions {path!r} is not a file; give a JSONL file")
  named: dict[str, str] = {}
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      where = f"{path}:{number}"
      try:
        row = json.loads(line)
      except json.JSONDecodeError as err:
        raise ValueError(f"{where} is not JSON ({err.msg})") from err
      name, description = (
        row.get(k) if isinstance(row, dict) else None for k in ("name", "description")
      )
      if not isinstance(name, str) or not isinstance(description, str) or not description.strip():
        raise ValueError(
          f'{where}: want {{"name": "...", "description": "..."}} with both non-empty'
        )
      if name in ("", ".", "..") or os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(f"{where}: name {name!r} must be a plain directory name")
      if name in named:
        raise ValueError(f"{where}: name {name!r} appears twice; names must be unique")
      named[name] = description
  if not named:
    raise ValueError(f"--descriptions {path!r} holds no descriptions")
  return named


def run_command(args) -> None:
  if args.command == "generate":
    from hyperlora import peft_io, serving
    from t2l_jax.generate import Generator

    ranks = serving.parse_ranks(args.pad_rank) if args.pad_rank else None
    if args.descriptions or args.out_dir:
      if not (args.descriptions and args.out_dir) or args.description or args.out:
        raise ValueError(
          "give --descriptions FILE.jsonl with --out-dir DIR, or a description with --out"
        )
      named = read_descriptions(args.descriptions)
      for name in named:  # before loading anything
        peft_io.check_out_dir(os.path.join(args.out_dir, name), args.overwrite)
      generator = Generator(args.checkpoint, args.model)
      written = generator.export_many(named, args.out_dir, args.overwrite, ranks)
      print(f"wrote {len(written)} adapters to {args.out_dir}")
      return
    if not args.description or not args.out:
      raise ValueError(
        "give a description and --out DIR (or --descriptions FILE.jsonl --out-dir DIR)"
      )
    if not args.description.strip():
      raise ValueError("the description is empty; say what the task is")
    peft_io.check_out_dir(args.out, args.overwrite)  # before loading anything
    generator = Generator(args.checkpoint, args.model)
    out = generator.export(args.description, args.out, args.overwrite, ranks)
    print(f"wrote {out}")
  elif args.command == "curve":
    from t2l_jax.evaluate import learning_curve

    try:
      steps = [int(s) for s in args.steps.split(",")]
    except ValueError as err:
      raise ValueError(f"--steps must be comma-separated integers, not {args.steps!r}") from err
    learning_curve(args.checkpoint, steps, args.out)
  elif args.export_harness_tasks:
    from hyperlora import harness
    from hyperlora.staging import check_new_dir
    from t2l_jax import harness_tasks

    check_new_dir(args.export_harness_tasks, harness.BUNDLE_FLAG)  # before loading anything
    print(f"wrote {harness_tasks.export(args.checkpoint, args.export_harness_tasks, args.step)}")
  else:
    from t2l_jax.evaluate import evaluate

    evaluate(args.checkpoint, args.out, variants=tuple(args.variants.split(",")), step=args.step)


if __name__ == "__main__":
  sys.exit(main())
