"""Task-count scaling sweep: how zero-shot quality grows with the number of training tasks.

For each (task count, seed): meta-train T2L on that many training tasks, evaluate on the held-out
tasks, then write one table (CSV + JSON) and a plot (PNG) of held-out score against task count.

  # here, one run after another (tiny sizes: seconds per run)
  python launch/sweep.py --config configs/t2l/tiny.py --task-counts 4 8 16 --seeds 0 1 \\
      --out runs/sweep -- --config.base_model=DIR
  # on a cluster: print one command per run for your scheduler, then collect
  python launch/sweep.py --config configs/t2l/smollm2_suite.py --task-counts 16 32 57 --seeds 0 1 2
  \\
      --out runs/sweep --print-commands
  python launch/sweep.py ... --out runs/sweep --collect-only

Extra arguments after `--` are config overrides passed to every run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import sys

METRICS = ("held-out exact match", "held-out ROUGE-L", "held-out loss")


def sweep_dir(out: str, count: int, seed: int) -> str:
  return os.path.join(out, f"tasks{count:04d}_seed{seed}")


def overrides(count: int, seed: int, workdir: str, extra: list[str]) -> list[str]:
  return [
    f"--config.data.max_train_tasks={count}",
    f"--config.train.seed={seed}",
    f"--config.workdir={workdir}",
    "--config.baselines.multitask_steps=0",
    "--config.baselines.oracle_steps=0",
    *extra,
  ]


def run_local(config_file: str, count: int, seed: int, workdir: str, extra: list[str]) -> None:
  """One (task count, seed) run in this process, configured as `t2l train` would be."""
  # Training code (JAX) loads only for local runs: printing commands stays instant.
  from hyperlora import cli_config
  from t2l_jax.evaluate import evaluate
  from t2l_jax.train import train

  config, _ = cli_config.parse(
    "sweep", [f"--config={config_file}", *overrides(count, seed, workdir, extra)], ""
  )
  if config is None:
    raise SystemExit(2)
  train(config)
  evaluate(workdir, os.path.join(workdir, "eval.json"), variants=("base", "t2l"))


def collect(out: str, counts: list[int], seeds: list[int]) -> list[dict]:
  rows = []
  for count in counts:
    for seed in seeds:
      path = os.path.join(sweep_dir(out, count, seed), "eval.json")
      if not os.path.isfile(path):
        print(f"missing {path}: run not finished", file=sys.stderr)
        continue
      table = {r["adapter"]: r for r in json.load(open(path))["rows"]}
      for adapter in ("base model", "T2L, task descriptions"):
        rows.append(
          {
            "train_tasks": count,
            "seed": seed,
            "adapter": adapter,
            **{m: table[adapter][m] for m in METRICS},
          }
        )
  return rows


def write_outputs(rows: list[dict], out: str) -> tuple[str, str, str]:
  # matplotlib loads only when there is a plot to draw.
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np

  csv_path, json_path, png_path = (
    os.path.join(out, f"sweep.{ext}") for ext in ("csv", "json", "png")
  )
  with open(csv_path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  with open(json_path, "w") as f:
    json.dump(rows, f, indent=2)

  fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 4))
  for ax, metric in zip(axes, METRICS):
    for adapter, style in (("T2L, task descriptions", "o-"), ("base model", "s--")):
      counts = sorted({r["train_tasks"] for r in rows if r["adapter"] == adapter})
      values = [
        [r[metric] for r in rows if r["adapter"] == adapter and r["train_tasks"] == c]
        for c in counts
      ]
      mean = np.array([np.mean(v) for v in values])
      std = np.array([np.std(v) for v in values])
      ax.errorbar(counts, mean, yerr=std, fmt=style, capsize=3, label=adapter)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training tasks")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
  axes[0].legend()
  fig.suptitle("Zero-shot on held-out tasks vs number of training tasks (mean ± std over seeds)")
  fig.tight_layout()
  fig.savefig(png_path, dpi=120)
  return csv_path, json_path, png_path


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  extra = argv[argv.index("--") + 1 :] if "--" in argv else []
  argv = argv[: argv.index("--")] if "--" in argv else argv
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--config", required=True)
  parser.add_argument("--task-counts", type=int, nargs="+", required=True)
  parser.add_argument("--seeds", type=int, nargs="+", default=[0])
  parser.add_argument("--out", required=True)
  mode = parser.add_mutually_exclusive_group()
  mode.add_argument("--print-commands", action="store_true", help="print the runs for a scheduler")
  mode.add_argument("--collect-only", action="store_true", help="only gather finished runs")
  args = parser.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  for count in args.task_counts:
    for seed in args.seeds:
      workdir = sweep_dir(args.out, count, seed)
      if args.print_commands:
        train = ["t2l", "train", f"--config={args.config}", *overrides(count, seed, workdir, extra)]
        evaluate = [
          "t2l",
          "eval",
          "--checkpoint",
          workdir,
          "--out",
          os.path.join(workdir, "eval.json"),
          "--variants",
          "base,t2l",
        ]
        print(shlex.join(train), "&&", shlex.join(evaluate))
      elif not args.collect_only and not os.path.isfile(os.path.join(workdir, "eval.json")):
        run_local(args.config, count, seed, workdir, extra)
  if args.print_commands:
    return 0
  rows = collect(args.out, args.task_counts, args.seeds)
  if not rows:
    print("no finished runs to collect", file=sys.stderr)
    return 1
  for path in write_outputs(rows, args.out):
    print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
