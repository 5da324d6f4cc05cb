"""`t2l` command line: train, library, generate, eval.

  t2l train --config configs/t2l/smollm2_suite.py [--config.train.steps=100 ...]
  t2l library --config configs/t2l/smollm2_suite.py --out LIBRARY_DIR   (one LoRA per training task)
  t2l train --config configs/t2l/recon.py --config.recon.library=LIBRARY_DIR
  t2l generate --checkpoint WORKDIR "Add 7 to the number." --out ADAPTER_DIR
  t2l eval --checkpoint WORKDIR [--out results.json]
"""

from __future__ import annotations

import argparse
import logging
import sys


def _logging():
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter("%(message)s"))
  for name in ("hyperlora", "t2l_jax"):
    logging.getLogger(name).addHandler(handler)
    logging.getLogger(name).setLevel(logging.INFO)
    logging.getLogger(name).propagate = False  # absl also installs a root handler


def config_main(command: str, argv: list[str]) -> int:
  """`train` and `library`: absl flags with an ml_collections config file (--config.a.b=value)."""
  from absl import flags
  from ml_collections import config_flags

  flag_values = flags.FlagValues()
  args = [f"t2l {command}"] + argv
  # sys_argv: ml_collections reads it to know which --config.* overrides to define.
  config_flags.DEFINE_config_file("config", None, "experiment config file (configs/t2l/*.py)",
                                  flag_values=flag_values, lock_config=True, sys_argv=args)
  flags.DEFINE_string("out", None, "library: directory for the per-task PEFT adapters", flag_values=flag_values)
  if any(a in ("-h", "--help") for a in argv):
    print(__doc__ + "\nflags:\n  --config=FILE          a configs/t2l/*.py file (get_config())\n"
          "  --config.KEY=VALUE     override any config field, e.g. --config.train.steps=50\n"
          "  --out=DIR              (library) where to write one PEFT adapter per training task")
    return 0
  flag_values(args)
  config = flag_values.config
  if config is None:
    print("error: --config is required (e.g. --config configs/t2l/smollm2_suite.py)", file=sys.stderr)
    return 2
  from hyperlora import distributed

  distributed.initialize()  # no-op for a single process
  import jax

  if jax.process_index() == 0:
    print(config)
  from t2l_jax import train as train_lib

  if command == "library":
    if not flag_values.out or not config.baselines.oracle_steps:
      print("error: library needs --out DIR and --config.baselines.oracle_steps > 0", file=sys.stderr)
      return 2
    from t2l_jax import model as t2l_model

    setup = t2l_model.build(config)
    dirs = train_lib.train_task_loras(setup, config, setup.train_tasks, flag_values.out,
                                      config.baselines.oracle_steps)
    print(f"wrote {len(dirs)} adapters to {flag_values.out}")
    return 0
  if config.mode not in ("sft", "recon"):
    print(f"error: config.mode must be 'sft' or 'recon', not {config.mode!r}", file=sys.stderr)
    return 2
  from hyperlora.train import Preempted

  try:
    workdir = (train_lib.train if config.mode == "sft" else train_lib.train_reconstruction)(config)
  except Preempted as stop:
    print(stop, file=sys.stderr)
    return stop.code
  except (FileNotFoundError, ValueError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  print(f"checkpoints in {workdir}; next: t2l eval --checkpoint {workdir}")
  return 0


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  _logging()
  if argv and argv[0] in ("train", "library"):
    return config_main(argv[0], argv[1:])
  parser = argparse.ArgumentParser(prog="t2l", description="Text-to-LoRA in JAX: a task description -> "
                                   "a LoRA adapter in one forward pass.", epilog=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  sub.add_parser("train", help="meta-train, SFT or reconstruction (see `t2l train --help`)")
  sub.add_parser("library", help="train one LoRA per training task (see `t2l library --help`)")
  g = sub.add_parser("generate", help="description -> PEFT adapter directory")
  g.add_argument("description", help="what the task is, in a sentence or two")
  g.add_argument("--checkpoint", required=True, help="a `t2l train` workdir")
  g.add_argument("--out", required=True, help="adapter directory to write (PEFT format)")
  g.add_argument("--model", help="base model the adapter is for (default: the checkpoint's)")
  e = sub.add_parser("eval", help="zero-shot table on held-out tasks")
  e.add_argument("--checkpoint", required=True, help="a `t2l train` workdir")
  e.add_argument("--out", help="also write the table as JSON here")
  e.add_argument("--variants", default="base,multitask,oracle,t2l,t2l_heldout,t2l_random",
                 help="rows to evaluate (comma-separated; oracle/multitask appear when trained)")
  args = parser.parse_args(argv)

  try:
    if args.command == "generate":
      from t2l_jax.generate import Generator

      out = Generator(args.checkpoint, args.model).export(args.description, args.out)
      print(f"wrote {out}")
    else:
      from t2l_jax.evaluate import evaluate

      evaluate(args.checkpoint, args.out, variants=tuple(args.variants.split(",")))
  except (FileNotFoundError, ValueError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
