"""`t2l` command line: train, generate, eval.

  t2l train --config configs/t2l/smollm2_suite.py [--config.train.steps=100 ...]
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


def train_main(argv: list[str]) -> int:
  """absl flags with an ml_collections config file: --config=FILE --config.a.b=value."""
  from absl import flags
  from ml_collections import config_flags

  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "experiment config file (configs/t2l/*.py)",
                                  flag_values=flag_values, lock_config=True)
  if any(a in ("-h", "--help") for a in argv):
    print(__doc__ + "\nflags:\n  --config=FILE          a configs/t2l/*.py file (get_config())\n"
          "  --config.KEY=VALUE     override any config field, e.g. --config.train.steps=50")
    return 0
  flag_values(["t2l train"] + argv)
  if flag_values.config is None:
    print("error: --config is required (e.g. --config configs/t2l/smollm2_suite.py)", file=sys.stderr)
    return 2
  from t2l_jax.train import train

  print(flag_values.config)
  workdir = train(flag_values.config)
  print(f"checkpoints in {workdir}; next: t2l eval --checkpoint {workdir}")
  return 0


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  _logging()
  if argv and argv[0] == "train":
    return train_main(argv[1:])
  parser = argparse.ArgumentParser(prog="t2l", description="Text-to-LoRA in JAX: a task description -> "
                                   "a LoRA adapter in one forward pass.", epilog=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  sub.add_parser("train", help="meta-train (see `t2l train --help`)")
  g = sub.add_parser("generate", help="description -> PEFT adapter directory")
  g.add_argument("description", help="what the task is, in a sentence or two")
  g.add_argument("--checkpoint", required=True, help="a `t2l train` workdir")
  g.add_argument("--out", required=True, help="adapter directory to write (PEFT format)")
  g.add_argument("--model", help="base model the adapter is for (default: the checkpoint's)")
  e = sub.add_parser("eval", help="zero-shot table on held-out tasks")
  e.add_argument("--checkpoint", required=True, help="a `t2l train` workdir")
  e.add_argument("--out", help="also write the table as JSON here")
  args = parser.parse_args(argv)

  try:
    if args.command == "generate":
      from t2l_jax.generate import Generator

      out = Generator(args.checkpoint, args.model).export(args.description, args.out)
      print(f"wrote {out}")
    else:
      from t2l_jax.evaluate import evaluate

      evaluate(args.checkpoint, args.out)
  except (FileNotFoundError, ValueError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
