"""lm-evaluation-harness on our own held-out examples: a bundle directory holding the tasks as
local JSONL + YAML (offline: `dataset_path: json`), the base model as a Hugging Face directory,
the PEFT adapters, and our own per-example scores; then the harness run on each adapter, its exact
match set beside ours example by example.

The tasks carry the decoding `t2l eval` / `d2l eval` use, so a difference is a finding, not a
setting: the prompt is the fully chat-formatted text (the harness gets no --apply_chat_template
and adds no special tokens: add_bos_token=False, as our prompt_ids tokenizes), greedy decoding,
the same max new tokens, the same stop tokens, and exact match after stripping whitespace on both
sides (our `a.strip() == y.strip()`).

Layout of a bundle (written whole or not at all):
  tasks/hyperlora_<task>.yaml, tasks/hyperlora_<task>.jsonl
  base/                    the base model (hyperlora export-base)
  adapters/...             PEFT directories
  ours.json                one entry per (variant, task): adapter path, our answers and scores
"""

from __future__ import annotations

import json
import os

import numpy as np

from hyperlora import hf_export
from hyperlora.metrics import markdown_table, print_table
from hyperlora.sft import Example, prompt_text
from hyperlora.staging import staging_beside

TASK_PREFIX = "hyperlora_"
MANIFEST = "ours.json"
# What a bundle holds; `hyperlora harness` adds its results beside them.
BUNDLE_ENTRIES = frozenset(("tasks", "base", "adapters", MANIFEST))
# Whitespace the comparison ignores, as our a.strip() == y.strip() does.
STRIP = ("^\\s+", "\\s+$")


def task_name(task: str) -> str:
  return TASK_PREFIX + task


def write_task(
  tasks_dir: str,
  final_dir: str,
  task: str,
  tokenizer,
  examples: list[Example],
  max_new_tokens: int,
  stop: list,
) -> None:
  """One harness task in tasks_dir: JSONL rows {prompt: chat text, target} and the YAML that reads
  them from final_dir, where the bundle will be (the harness resolves a relative data file against
  its working directory, so the YAML names the absolute path: a moved bundle is exported again).
  The YAML is written as JSON (a subset of YAML), so no YAML writer is needed."""
  name = task_name(task)
  with open(os.path.join(tasks_dir, f"{name}.jsonl"), "w", encoding="utf-8") as f:
    for e in examples:
      f.write(json.dumps({"prompt": prompt_text(tokenizer, e), "target": e.target}) + "\n")
  config = {
    "task": name,
    "dataset_path": "json",
    "dataset_kwargs": {"data_files": {"test": os.path.join(final_dir, f"{name}.jsonl")}},
    "test_split": "test",
    "output_type": "generate_until",
    "doc_to_text": "prompt",
    "doc_to_target": "target",
    "target_delimiter": "",
    "generation_kwargs": {"until": stop, "do_sample": False, "max_gen_toks": max_new_tokens},
    "metric_list": [
      {
        "metric": "exact_match",
        "aggregation": "mean",
        "higher_is_better": True,
        "regexes_to_ignore": list(STRIP),
      }
    ],
  }
  with open(os.path.join(tasks_dir, f"{name}.yaml"), "w", encoding="utf-8") as f:
    json.dump(config, f, indent=2)


def stop_strings(tokenizer, eos_ids) -> list[str]:
  """Our stop tokens (generate.eos_ids_of) as the strings the harness stops on."""
  return sorted({tokenizer.decode([i], skip_special_tokens=False) for i in eos_ids})


def write_bundle(
  out_dir: str,
  base_model: str,
  tokenizer,
  eos_ids,
  max_new_tokens: int,
  tasks: dict[str, list[Example]],
  write_adapters,
  entries: list[dict],
  source: str,
) -> str:
  """Writes a bundle at out_dir (new or empty). write_adapters(staging_dir) exports the adapters
  under staging_dir/adapters; entries: {variant, task, adapter (path relative to the bundle, or
  None for the base), answers, exact_match} for each score of ours."""
  hf_export.check_new_dir(out_dir)
  stop = stop_strings(tokenizer, eos_ids)
  with staging_beside(out_dir, ".harness-") as staging:
    os.makedirs(os.path.join(staging, "tasks"))
    for task, examples in tasks.items():
      write_task(
        os.path.join(staging, "tasks"),
        os.path.join(os.path.abspath(out_dir), "tasks"),
        task,
        tokenizer,
        examples,
        max_new_tokens,
        stop,
      )
    hf_export.export_base(base_model, os.path.join(staging, "base"))
    write_adapters(staging)
    manifest = {
      "source": source,
      "max_new_tokens": max_new_tokens,
      "stop": stop,
      "entries": entries,
    }
    with open(os.path.join(staging, MANIFEST), "w") as f:
      json.dump(manifest, f, indent=2)
    hf_export.check_new_dir(out_dir)  # again: the export took time
    if os.path.isdir(out_dir):
      os.rmdir(out_dir)  # empty (just checked)
    os.rename(staging, out_dir)
  return out_dir


def read_bundle(bundle: str) -> dict:
  path = os.path.join(bundle, MANIFEST)
  if not os.path.isfile(path):
    raise ValueError(
      f"{bundle!r} is not a harness bundle (no {MANIFEST}); write one with "
      "`t2l eval --checkpoint RUN --export-harness-tasks DIR`"
    )
  with open(path) as f:
    return json.load(f)


def model_args(bundle: str, adapter: str | None) -> str:
  """--model_args for `lm_eval --model hf`: the bundle's base, the adapter, our tokenization."""
  args = f"pretrained={os.path.join(bundle, 'base')},dtype=float32,add_bos_token=False"
  return args + (f",peft={os.path.join(bundle, adapter)}" if adapter else "")


def command(bundle: str, adapter: str | None, tasks: list[str]) -> str:
  """The lm_eval command line a user runs for one adapter of the bundle."""
  return (
    f"lm_eval --model hf --model_args {model_args(bundle, adapter)} "
    f"--tasks {','.join(task_name(t) for t in tasks)} "
    f"--include_path {os.path.join(bundle, 'tasks')} --batch_size 1 --device cpu --log_samples"
  )


def run_harness(bundle: str, adapter: str | None, tasks: list[str], limit: int | None = None):
  """The harness's answers and exact match per example, {task: (answers, scores)}, in the order of
  the task's JSONL (doc_id)."""
  os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # local JSON only; nothing is downloaded
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  try:
    import lm_eval
    from lm_eval.tasks import TaskManager
  except ImportError as err:
    raise ValueError(
      "lm-evaluation-harness is not installed: make install-eval (or pip install -e '.[eval]')"
    ) from err

  results = lm_eval.simple_evaluate(
    model="hf",
    model_args=model_args(bundle, adapter),
    tasks=[task_name(t) for t in tasks],
    task_manager=TaskManager(include_path=os.path.join(bundle, "tasks")),
    batch_size=1,
    device="cpu",
    limit=limit,
    log_samples=True,
  )
  out = {}
  for task in tasks:
    samples = sorted(results["samples"][task_name(task)], key=lambda s: s["doc_id"])
    out[task] = (
      [s["filtered_resps"][0] for s in samples],
      [float(s["exact_match"]) for s in samples],
    )
  return out


def compare(bundle: str, out_json: str | None = None, limit: int | None = None) -> list[dict]:
  """Runs the harness on every adapter of the bundle; one row per (variant, task): our exact
  match, the harness's, and on how many examples the scores and the answers differ. Writes the
  rows as JSON and Markdown (out_json, default bundle/harness.json, .md beside it)."""
  manifest = read_bundle(bundle)
  if out_json:  # a file of the user's: never replaced (the default, in the bundle, is ours)
    for path in (out_json, os.path.splitext(out_json)[0] + ".md"):
      if os.path.lexists(path):
        raise ValueError(f"--out: {path!r} already exists; nothing was run: give a new file")
  by_adapter: dict = {}
  for entry in manifest["entries"]:
    by_adapter.setdefault(entry["adapter"], []).append(entry)
  rows, answers = [], []
  for adapter, entries in by_adapter.items():
    theirs = run_harness(bundle, adapter, [e["task"] for e in entries], limit)
    for e in entries:
      their_answers, their_scores = theirs[e["task"]]
      n = len(their_scores)
      ours, our_answers = e["exact_match"][:n], e["answers"][:n]
      differ = [i for i in range(n) if our_answers[i].strip() != their_answers[i].strip()]
      rows.append(
        {
          "adapter": e["variant"],
          "task": e["task"],
          "examples": n,
          "t2l eval exact match": f"{np.mean(ours):.3f}",
          "harness exact match": f"{np.mean(their_scores):.3f}",
          "scores differ": sum(a != b for a, b in zip(ours, their_scores)),
          "answers differ": len(differ),
        }
      )
      answers += [
        {
          "adapter": e["variant"],
          "task": e["task"],
          "example": i,
          "ours": our_answers[i],
          "harness": their_answers[i],
        }
        for i in differ
      ]
  print_table(rows)
  out_json = out_json or os.path.join(bundle, "harness.json")
  commands = {str(a): command(bundle, a, [e["task"] for e in es]) for a, es in by_adapter.items()}
  with open(out_json, "w") as f:
    json.dump(
      {"bundle": bundle, "rows": rows, "differing_answers": answers, "commands": commands},
      f,
      indent=2,
    )
  header = (
    f"lm-evaluation-harness beside our evaluation on the same examples ({manifest['source']}): "
    f"greedy, {manifest['max_new_tokens']} new tokens, stop at {', '.join(manifest['stop'])}, "
    "exact match after stripping whitespace.\n\n"
  )
  with open(os.path.splitext(out_json)[0] + ".md", "w") as f:
    f.write(header + markdown_table(rows))
  return rows
