"""`d2l` command line: train, internalize, ask, eval.

d2l train --config configs/d2l/smollm2_synthetic.py [--config.train.steps=100 ...]
d2l internalize --checkpoint WORKDIR doc.txt --out ADAPTER_DIR     (PEFT dir, rank (K + 1) r)
d2l internalize --checkpoint WORKDIR a.txt b.txt --out-dir ADAPTERS [--pad-rank vllm]
d2l ask --checkpoint WORKDIR doc.txt "What did she keep as a pet?" [--compare]
d2l eval --checkpoint WORKDIR [--out results.json]  (QA: base / ICL / CD / D2L / control; NIAH
lengths)
d2l eval --checkpoint WORKDIR --export-harness-tasks DIR   (held-out documents, base and one
                                        adapter each for lm-evaluation-harness; then
                                        `hyperlora harness DIR`)
d2l curve --checkpoint WORKDIR --steps 300,600,900 [--out curve.json]   (D2L vs control by step)
"""

from __future__ import annotations

# Commands import JAX and the method's modules when they run, so `--help` answers at once.
import argparse
import os
import sys


def train_main(argv: list[str]) -> int:
  from hyperlora import cli_config

  config, _ = cli_config.parse("d2l train", argv, __doc__ + "\nflags:\n" + cli_config.CONFIG_HELP)
  if config is None:
    return 0 if any(a in ("-h", "--help") for a in argv) else 2
  cli_config.start(config)
  from d2l_jax import train as train_lib

  return cli_config.run_training(train_lib.train, config, "d2l")


def positive_int(text: str) -> int:
  """argparse type: a whole number above 0."""
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value <= 0:
    raise argparse.ArgumentTypeError(f"must be a whole number above 0, not {text!r}")
  return value


def positive_ints(text: str) -> tuple[int, ...]:
  """argparse type: comma-separated whole numbers above 0."""
  return tuple(positive_int(v) for v in text.split(","))


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="d2l",
    description="Doc-to-LoRA in JAX: a document -> a LoRA "
    "adapter, so the model answers about it without it in context.",
    epilog=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  sub = parser.add_subparsers(dest="command", required=True)
  sub.add_parser("train", help="meta-train (see `d2l train --help`)")
  checkpoint = dict(required=True, help="a `d2l train` workdir")
  chunk = dict(
    type=positive_int, help="chunk length in tokens (default: the checkpoint's eval.chunk_len)"
  )
  max_chunks = dict(
    type=positive_int,
    help="refuse documents of more chunks (default: what rank 512, the most serving engines "
    "load, holds: 63 chunks at r=8)",
  )
  chunk_scaling = dict(
    choices=("none", "mean", "dedup"),  # d2l_jax.chunking.CHUNK_SCALINGS, without importing JAX
    help="how the chunks' deltas combine: none (the reference's sum), mean (1 / K each), dedup "
    "(chunks that are near-copies of one another counted once) (default: the run's "
    "eval.chunk_scaling)",
  )
  i = sub.add_parser(
    "internalize", help="document -> PEFT adapter directory (or documents -> one directory each)"
  )
  i.add_argument("documents", nargs="+", metavar="document", help="UTF-8 text file(s)")
  i.add_argument("--checkpoint", **checkpoint)
  i.add_argument("--out", help="a new directory to write the adapter of one document to (PEFT)")
  i.add_argument(
    "--out-dir", help="one adapter directory per document, DIR/<file name without extension>"
  )
  i.add_argument(
    "--overwrite", action="store_true", help="replace --out if it already holds an adapter"
  )
  i.add_argument("--chunk-len", **chunk)
  i.add_argument("--max-chunks", **max_chunks)
  i.add_argument("--chunk-scaling", **chunk_scaling)
  i.add_argument(
    "--pad-rank",
    metavar="vllm|R,R,..",
    help="zero-pad the adapter to the next rank a serving engine accepts: 'vllm' or a list "
    "like 8,16,32 (the applied delta is unchanged)",
  )
  a = sub.add_parser("ask", help="answer questions about a document from its adapter alone")
  a.add_argument("document", help="a UTF-8 text file")
  a.add_argument("questions", nargs="+", help="one or more questions")
  a.add_argument("--checkpoint", **checkpoint)
  a.add_argument("--chunk-len", **chunk)
  a.add_argument("--max-chunks", **max_chunks)
  a.add_argument("--chunk-scaling", **chunk_scaling)
  a.add_argument("--max-new-tokens", type=positive_int, default=48)
  a.add_argument(
    "--compare",
    action="store_true",
    help="also answer with the document in context (ICL) and with the base model alone",
  )
  e = sub.add_parser(
    "eval",
    help="QA table (base, ICL, CD, D2L and its another-document control, "
    "with bootstrap intervals) and NIAH accuracy by length",
  )
  e.add_argument("--checkpoint", **checkpoint)
  e.add_argument(
    "--out", help="also write the tables as JSON here (and as Markdown, .md beside it)"
  )
  e.add_argument(
    "--step", type=int, help="evaluate the checkpoint of this step (default: the latest)"
  )
  e.add_argument(
    "--methods", default="base,icl,cd,d2l", help="comma-separated subset of base,icl,cd,d2l"
  )
  niah = e.add_mutually_exclusive_group()
  niah.add_argument("--no-niah", action="store_true", help="skip the needle-in-a-haystack table")
  niah.add_argument(
    "--niah",
    action="store_true",
    help="ask the needle-in-a-haystack table even of a run that did not train on haystacks "
    "(what a curriculum's later stage kept)",
  )
  e.add_argument(
    "--niah-multiples",
    type=positive_ints,
    help="haystack lengths as comma-separated multiples of the training length, e.g. "
    "1,4,8,32,64,128 (default: the config's)",
  )
  e.add_argument("--chunk-scaling", **chunk_scaling)
  e.add_argument(
    "--niah-depths",
    type=positive_int,
    help="haystacks per length, the needle at evenly spaced depths (default: the config's)",
  )
  source = e.add_mutually_exclusive_group()
  source.add_argument(
    "--squad-file",
    help="ask the paragraphs of this SQuAD-format JSON file (all treated as held-out) instead "
    "of the run's own held-out documents; --documents N takes N of them, spread over articles",
  )
  source.add_argument(
    "--synthetic",
    action="store_true",
    help="ask held-out synthetic biographies, whatever the run trained on",
  )
  e.add_argument(
    "--documents", type=int, help="held-out documents to ask about (default: the config's)"
  )
  e.add_argument(
    "--train-documents",
    type=int,
    help="training documents D2L and its control are also asked about (default: the config's)",
  )
  e.add_argument("--max-new-tokens", type=int, help="answer length limit (default: the config's)")
  e.add_argument(
    "--export-harness-tasks",
    metavar="DIR",
    help="instead of the tables: write the held-out documents' questions as lm-evaluation-harness "
    "tasks (without and with the document), the base model, one D2L adapter per document and our "
    "answers and scores, to a new directory DIR; then `hyperlora harness DIR` compares",
  )
  e.add_argument(
    "--cd-documents",
    type=int,
    help="documents to run context distillation on (minutes each on CPU; default: the config's)",
  )
  c = sub.add_parser("curve", help="learning curve: D2L beside its control at several checkpoints")
  c.add_argument("--checkpoint", **checkpoint)
  c.add_argument(
    "--steps", required=True, help="comma-separated checkpoint steps, e.g. 300,600,900"
  )
  c.add_argument("--out", help="also write the curve as JSON here (and as Markdown, .md beside it)")
  c.add_argument(
    "--documents", type=int, help="held-out documents to ask about (default: the config's)"
  )
  return parser


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  from hyperlora.cli_config import setup_logging

  setup_logging("d2l_jax")
  if argv and argv[0] == "train":
    return train_main(argv[1:])
  args = _parser().parse_args(argv)
  from hyperlora.cli_config import guarded

  return guarded(lambda: run_command(args))


def run_command(args) -> None:
  if args.command == "curve":
    from d2l_jax.evaluate import learning_curve

    try:
      steps = [int(s) for s in args.steps.split(",")]
    except ValueError as err:
      raise ValueError(f"--steps must be comma-separated integers, not {args.steps!r}") from err
    learning_curve(
      args.checkpoint,
      steps,
      args.out,
      {"documents": args.documents} if args.documents is not None else None,
    )
    return
  if args.command == "eval":
    from d2l_jax.evaluate import evaluate

    if args.squad_file:
      from d2l_jax.squad import check_file

      check_file(args.squad_file)  # before loading anything
    overrides = {
      k: v
      for k, v in (
        ("niah_multiples", args.niah_multiples),
        ("niah_depths", args.niah_depths),
        ("chunk_scaling", args.chunk_scaling),
        ("documents", args.documents),
        ("cd_documents", args.cd_documents),
        ("train_documents", args.train_documents),
        ("max_new_tokens", args.max_new_tokens),
        ("squad_file", args.squad_file),
        ("synthetic", args.synthetic or None),
      )
      if v is not None
    }
    niah = False if args.no_niah else (True if args.niah else None)
    if args.export_harness_tasks:
      from d2l_jax import harness_tasks
      from hyperlora import harness
      from hyperlora.staging import check_new_dir

      check_new_dir(args.export_harness_tasks, harness.BUNDLE_FLAG)  # before loading anything
      harness_tasks.check_controls(
        {"--documents": args.documents, "--niah-depths": args.niah_depths}
      )
      out = harness_tasks.export(
        args.checkpoint, args.export_harness_tasks, args.step, overrides, niah
      )
      print(f"wrote {out}; next: hyperlora harness {out}")
      return
    evaluate(
      args.checkpoint,
      args.out,
      tuple(args.methods.split(",")),
      niah=niah,
      overrides=overrides,
      step=args.step,
    )
    return
  from d2l_jax.context import read_document
  from d2l_jax.internalize import Internalizer, check_questions
  from hyperlora import peft_io, serving

  if args.command == "internalize":  # everything checked before anything loads
    if bool(args.out) == bool(args.out_dir) or (args.out and len(args.documents) > 1):
      raise ValueError("give one document with --out DIR, or documents with --out-dir DIR")
    ranks = serving.parse_ranks(args.pad_rank) if args.pad_rank else None
    names = [os.path.splitext(os.path.basename(p))[0] for p in args.documents]
    if len(set(names)) < len(names):
      raise ValueError("two documents share a file name; --out-dir names adapters by file name")
    documents = {n: read_document(p) for n, p in zip(names, args.documents)}
    if args.out:
      peft_io.check_out_dir(args.out, args.overwrite)
    else:
      for name in names:
        peft_io.check_out_dir(os.path.join(args.out_dir, name), args.overwrite)
    internalizer = Internalizer(args.checkpoint, chunk_scaling=args.chunk_scaling)
    if args.out:
      out = internalizer.export(
        documents[names[0]], args.out, args.chunk_len, args.overwrite, args.max_chunks, ranks
      )
      print(f"wrote {out}")
    else:
      written = internalizer.export_many(
        documents, args.out_dir, args.chunk_len, args.overwrite, args.max_chunks, ranks
      )
      print(f"wrote {len(written)} adapters to {args.out_dir}")
    return
  document = read_document(args.document)
  check_questions(args.questions)  # before loading anything
  internalizer = Internalizer(args.checkpoint, chunk_scaling=args.chunk_scaling)
  answers = {
    "D2L adapter": internalizer.ask(
      document, args.questions, args.chunk_len, args.max_new_tokens, args.max_chunks
    )
  }
  if args.compare:
    from d2l_jax.teacher import in_context_prompt
    from hyperlora.generate import chat

    base = internalizer.base
    answers["document in context"] = chat(
      base, [in_context_prompt(document, q) for q in args.questions], args.max_new_tokens
    )
    answers["base model alone"] = chat(base, args.questions, args.max_new_tokens)
  for i, question in enumerate(args.questions):
    print(f"Q: {question}")
    for method, replies in answers.items():
      print(f"  {method}: {replies[i]}")


if __name__ == "__main__":
  sys.exit(main())
