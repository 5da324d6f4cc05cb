"""Task-count scaling sweep: how zero-shot quality grows with the number of training tasks.

Each (task count, seed) run meta-trains T2L and its equal-budget multi-task LoRA on a seeded sample
of that many training tasks (nested within a seed), then evaluates base model, multi-task LoRA,
T2L and its controls (a sibling task's description, random descriptions) on the held-out splits.
The summary (CSV, JSON, Markdown, PNG) gives, per task count, the mean over seeds and its 95%
t-interval.

Two budgets: fixed steps (the config's train.steps for every count: equal compute, so more tasks
means fewer examples of each), or with --steps-per-task N fixed epochs (N x count steps, the
reference's way: each task is seen as often at every count).

  # here, one run after another; finished runs are skipped, an interrupted one resumes
  python launch/sweep.py --config configs/t2l/sweep_cpu.py --task-counts 4 8 16 --seeds 0 1 2 \\
      --out runs/sweep
  # SLURM: one job-array task per (task count, seed), requeued on preemption, then collect
  python launch/sweep.py --config configs/t2l/smollm2_suite.py --task-counts 8 16 32 49 \\
      --seeds 0 1 2 --out runs/sweep --slurm [--sbatch-args="--partition=gpu --time=4:00:00"]
  python launch/sweep.py --config ... --task-counts 8 16 32 49 --seeds 0 1 2 --out runs/sweep \\
      --collect-only
  # any other scheduler: one shell command per run
  python launch/sweep.py ... --print-commands

Extra arguments after `--` are config overrides passed to every run.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import shlex
import subprocess
import sys

import numpy as np
from scipy import stats

SPLITS = ("sibling held-out", "extrapolation", "family held-out")
# T2L beside its controls (a sibling's description, random strings) and its equal-budget baseline.
ADAPTERS = {
  "base": "base model",
  "multitask": "multi-task LoRA",
  "t2l_random": "T2L, random descriptions (control)",
  "t2l_sibling": "T2L, a sibling task's description (control)",
  "t2l": "T2L, task descriptions",
}
METRICS = {"exact_match": "exact match", "rougeL": "ROUGE-L"}  # those the runs report


def sweep_dir(out: str, count: int, seed: int) -> str:
  return os.path.join(out, f"tasks{count:04d}_seed{seed}")


def runs(counts: list[int], seeds: list[int]) -> list[tuple[int, int]]:
  """The sweep's (task count, seed) pairs, in job-array order."""
  return list(itertools.product(counts, seeds))


def overrides(
  count: int, seed: int, workdir: str, extra: list[str], steps_per_task: int = 0
) -> list[str]:
  return [
    f"--config.data.max_train_tasks={count}",
    f"--config.train.seed={seed}",
    f"--config.workdir={workdir}",
    "--config.baselines.oracle_steps=0",
    "--config.eval.seen_tasks=0",  # the sweep's table has the held-out splits only
    *extra,
    # Last, so it wins over a train.steps among the extra overrides.
    *([f"--config.train.steps={steps_per_task * count}"] if steps_per_task else []),
  ]


def eval_json(workdir: str) -> str:
  return os.path.join(workdir, "eval.json")


def run_one(
  config_file: str, count: int, seed: int, out: str, extra: list[str], steps_per_task: int = 0
) -> None:
  """One (task count, seed) run in this process, configured as `t2l train` would be. A finished
  run (its eval.json exists) is skipped; an unfinished one resumes from its checkpoints."""
  # Training code (JAX) loads only for runs here: printing and submitting stay instant.
  from hyperlora import cli_config, run_lock
  from t2l_jax.evaluate import evaluate
  from t2l_jax.train import train

  workdir = sweep_dir(out, count, seed)
  if os.path.isfile(eval_json(workdir)):
    print(f"{workdir}: finished, skipped", file=sys.stderr)
    return
  config, _ = cli_config.parse(
    "sweep",
    [f"--config={config_file}", *overrides(count, seed, workdir, extra, steps_per_task)],
    "",
  )
  if config is None:
    raise SystemExit(2)
  with run_lock.hold(workdir):  # one process per run, as `t2l train` holds it
    train(config)
  evaluate(workdir, eval_json(workdir), variants=tuple(ADAPTERS))


def sbatch_script(args, extra: list[str]) -> str:
  """A SLURM job array, one task per (task count, seed). SLURM's SIGTERM before preemption makes
  training checkpoint and exit; --requeue starts the task again and it resumes."""
  n = len(runs(args.task_counts, args.seeds))
  command = [
    "python",
    "launch/sweep.py",
    f"--config={args.config}",
    "--task-counts",
    *map(str, args.task_counts),
    "--seeds",
    *map(str, args.seeds),
    f"--out={args.out}",
    *([f"--steps-per-task={args.steps_per_task}"] if args.steps_per_task else []),
    "--array-index",
    "$SLURM_ARRAY_TASK_ID",
  ]
  if extra:
    command += ["--", *extra]
  quote = lambda c: '"$SLURM_ARRAY_TASK_ID"' if c == "$SLURM_ARRAY_TASK_ID" else shlex.quote(c)
  return "\n".join(
    [
      "#!/usr/bin/env bash",
      "#SBATCH --job-name=t2l-sweep",
      f"#SBATCH --array=0-{n - 1}",
      "#SBATCH --ntasks=1",
      "#SBATCH --requeue",
      "#SBATCH --signal=TERM@120",
      f"#SBATCH --output={os.path.join(args.out, 'slurm-%A_%a.out')}",
      "set -euo pipefail",
      f"cd {shlex.quote(os.getcwd())}",
      ". .venv/bin/activate",
      " ".join(map(quote, command)),
      "",
    ]
  )


def interval(values: list[float]) -> tuple[float, float, float]:
  """Mean over seeds and its 95% t-interval (the mean itself when there is one seed)."""
  values = np.asarray(values, np.float64)
  mean = float(values.mean())
  if len(values) < 2:
    return mean, mean, mean
  half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
  return mean, mean - half, mean + half


def collect(out: str, counts: list[int], seeds: list[int]) -> list[dict]:
  """One row per (task count, seed, split, adapter): the run's mean over its tasks' examples."""
  rows = []
  for count, seed in runs(counts, seeds):
    path = eval_json(sweep_dir(out, count, seed))
    if not os.path.isfile(path):
      print(f"missing {path}: run not finished", file=sys.stderr)
      continue
    scores = json.load(open(path))["scores"]
    for split in [s for s in SPLITS if s in scores]:
      for key, adapter in ADAPTERS.items():
        if key not in scores[split]:
          continue
        by_task = scores[split][key].values()
        rows.append(
          {
            "train_tasks": count,
            "seed": seed,
            "split": split,
            "adapter": adapter,
            **{
              title: float(np.mean([x for t in by_task for x in t[metric]]))
              for metric, title in METRICS.items()
              if all(metric in t for t in by_task)
            },
          }
        )
  return rows


def summary(rows: list[dict]) -> list[dict]:
  """Per (split, adapter, task count): mean over seeds with its interval."""
  out = []
  keys = sorted(
    {(r["split"], r["adapter"], r["train_tasks"]) for r in rows},
    key=lambda k: (SPLITS.index(k[0]), list(ADAPTERS.values()).index(k[1]), k[2]),
  )
  for split, adapter, count in keys:
    runs_here = [
      r for r in rows if (r["split"], r["adapter"], r["train_tasks"]) == (split, adapter, count)
    ]
    row = {"split": split, "adapter": adapter, "train_tasks": count, "seeds": len(runs_here)}
    for title in [t for t in METRICS.values() if all(t in r for r in runs_here)]:
      mean, low, high = interval([r[title] for r in runs_here])
      row[title] = f"{mean:.3f} [{low:.3f}, {high:.3f}]"
      row[f"_{title}"] = (mean, low, high)
    out.append(row)
  return out


def write_outputs(rows: list[dict], out: str) -> list[str]:
  # matplotlib loads only when there is a plot to draw.
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from hyperlora.metrics import markdown_table

  paths = {ext: os.path.join(out, f"sweep.{ext}") for ext in ("csv", "json", "md", "png")}
  table = summary(rows)
  with open(paths["csv"], "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  with open(paths["json"], "w") as f:
    json.dump({"runs": rows, "summary": table}, f, indent=2)
  with open(paths["md"], "w") as f:
    f.write(
      "Zero-shot quality against the number of training tasks: mean over seeds and its 95% "
      "t-interval.\n\n"
    )
    f.write(markdown_table([{k: v for k, v in r.items() if not k.startswith("_")} for r in table]))

  splits = [s for s in SPLITS if any(r["split"] == s for r in table)]
  titles = [t for t in METRICS.values() if all(f"_{t}" in r for r in table)]
  fig, axes = plt.subplots(len(titles), len(splits), figsize=(6 * len(splits), 4 * len(titles)))
  axes = np.asarray(axes).reshape(len(titles), len(splits))
  for (i, title), (j, split) in itertools.product(enumerate(titles), enumerate(splits)):
    ax = axes[i, j]
    for adapter, style in zip(ADAPTERS.values(), ("s--", "^-.", "d:", "x:", "o-")):
      points = [r for r in table if r["split"] == split and r["adapter"] == adapter]
      if not points:
        continue
      counts = [r["train_tasks"] for r in points]
      mean, low, high = (np.array(v) for v in zip(*[r[f"_{title}"] for r in points]))
      ax.plot(counts, mean, style, label=adapter)
      ax.fill_between(counts, low, high, alpha=0.2)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training tasks")
    ax.set_ylabel(title)
    ax.set_title(split)
    ax.grid(alpha=0.3)
  axes[0, 0].legend()
  fig.suptitle("Zero-shot quality vs number of training tasks (mean and 95% interval over seeds)")
  fig.tight_layout()
  fig.savefig(paths["png"], dpi=120)
  return list(paths.values())


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  extra = argv[argv.index("--") + 1 :] if "--" in argv else []
  argv = argv[: argv.index("--")] if "--" in argv else argv
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--config", required=True, help="a T2L config file (configs/t2l/)")
  parser.add_argument("--task-counts", type=int, nargs="+", required=True)
  parser.add_argument("--seeds", type=int, nargs="+", default=[0])
  parser.add_argument("--out", required=True, help="sweep directory (one workdir per run)")
  parser.add_argument(
    "--steps-per-task",
    type=int,
    default=0,
    help="fixed epochs: train each run for this many steps per training task (default: the "
    "config's train.steps for every count, i.e. fixed compute)",
  )
  mode = parser.add_mutually_exclusive_group()
  mode.add_argument("--print-commands", action="store_true", help="print the runs for a scheduler")
  mode.add_argument(
    "--slurm", action="store_true", help="write OUT/sweep.sbatch (a job array) and submit it"
  )
  mode.add_argument(
    "--array-index", type=int, help="run only this (task count, seed), 0-based in array order"
  )
  mode.add_argument("--collect-only", action="store_true", help="only gather finished runs")
  parser.add_argument(
    "--sbatch-args", default="", help="--slurm: extra sbatch options, e.g. '--partition=gpu'"
  )
  parser.add_argument(
    "--no-submit", action="store_true", help="--slurm: write the script, do not submit"
  )
  args = parser.parse_args(argv)
  pairs = runs(args.task_counts, args.seeds)
  os.makedirs(args.out, exist_ok=True)

  if args.print_commands:
    for count, seed in pairs:
      workdir = sweep_dir(args.out, count, seed)
      train = [
        "t2l",
        "train",
        f"--config={args.config}",
        *overrides(count, seed, workdir, extra, args.steps_per_task),
      ]
      evaluate = ["t2l", "eval", "--checkpoint", workdir, "--out", eval_json(workdir)]
      print(shlex.join(train), "&&", shlex.join([*evaluate, "--variants", ",".join(ADAPTERS)]))
    return 0
  if args.slurm:
    script = os.path.join(args.out, "sweep.sbatch")
    with open(script, "w") as f:
      f.write(sbatch_script(args, extra))
    print(f"wrote {script} ({len(pairs)} array tasks)")
    if not args.no_submit:
      subprocess.run(["sbatch", *shlex.split(args.sbatch_args), script], check=True)
      print(f"then: python launch/sweep.py ... --out {args.out} --collect-only")
    return 0
  if args.array_index is not None:
    if not 0 <= args.array_index < len(pairs):
      parser.error(f"--array-index {args.array_index} is outside 0..{len(pairs) - 1}")
    run_one(args.config, *pairs[args.array_index], args.out, extra, args.steps_per_task)
    return 0
  if not args.collect_only:
    for count, seed in pairs:
      run_one(args.config, count, seed, args.out, extra, args.steps_per_task)
  rows = collect(args.out, args.task_counts, args.seeds)
  if not rows:
    print("no finished runs to collect", file=sys.stderr)
    return 1
  for path in write_outputs(rows, args.out):
    print(f"wrote {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
