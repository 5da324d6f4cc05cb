"""lm-evaluation-harness on our own held-out examples: a bundle directory holding the tasks as
local JSONL + YAML (offline: `dataset_path: json`), the base model as a Hugging Face directory,
the PEFT adapters, and our own per-example scores; then the harness run on each adapter, its exact
match set beside ours example by example.

The tasks carry the decoding `t2l eval` / `d2l eval` use, so a difference is a finding, not a
setting: the prompt is the fully chat-formatted text (the harness gets no --apply_chat_template
and adds no special tokens: add_bos_token=False, as our prompt_ids tokenizes), greedy decoding,
the same max new tokens, the same stop tokens, and the harness's exact match configured as close
to our metric as its options go (`MATCH`): whitespace stripped (T2L's `a.strip() == y.strip()`),
SQuAD-normalised against any gold answer (D2L's QA), digits only (D2L's needle).

Layout of a bundle (written whole or not at all):
  tasks/hyperlora_<task>.yaml, tasks/hyperlora_<task>.jsonl
  base/                    the base model (hyperlora export-base)
  adapters/...             PEFT directories
  ours.json                one entry per (variant, task): adapter path, our answers and scores
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from hyperlora import hf_export
from hyperlora.metrics import markdown_table, print_table
from hyperlora.sft import Example, prompt_text
from hyperlora.staging import check_new_dir, staging_beside

TASK_PREFIX = "hyperlora_"
MANIFEST = "ours.json"
BUNDLE_FLAG = "--export-harness-tasks"  # of `t2l eval` and `d2l eval`, which write bundles
# What a bundle holds; `hyperlora harness` adds its results beside them.
BUNDLE_ENTRIES = frozenset(("tasks", "base", "adapters", MANIFEST))
# The harness's exact_match options for each of our metrics. The harness removes
# regexes_to_ignore, then lower-cases, then drops punctuation, on answer and target alike.
MATCH = {
  # T2L: a.strip() == y.strip()
  "strip": {"regexes_to_ignore": ["^\\s+", "\\s+$"]},
  # D2L QA, SQuAD's normalisation (lower case, no punctuation, no articles, whitespace ignored),
  # against any gold answer. Conventions that differ from the official script: the harness drops
  # articles before punctuation, and all whitespace ("new york" matches "newyork").
  "squad": {
    "regexes_to_ignore": ["(?i)\\b(a|an|the)\\b", "\\s+"],
    "ignore_case": True,
    "ignore_punctuation": True,
  },
  # D2L's needle: the answer's digits are the number (ours: the number occurs in the answer; an
  # answer with other digits besides is a named difference).
  "digits": {"regexes_to_ignore": ["\\D"]},
}


MATCH_NAMES = {
  "strip": "exact match after stripping whitespace",
  "squad": "SQuAD-normalised exact match against any gold answer (QA)",
  "digits": "the answer's digits equal the needle's number (NIAH; ours: the number occurs in it)",
}


@dataclasses.dataclass(frozen=True)
class Task:
  """One harness task: chat-formatted prompts, a target per prompt (a string, or a list of gold
  answers of which any matches), and which of MATCH scores them."""

  prompts: list[str]
  targets: list
  match: str = "strip"

  @classmethod
  def from_examples(cls, tokenizer, examples: list[Example], match: str = "strip") -> Task:
    return cls([prompt_text(tokenizer, e) for e in examples], [e.target for e in examples], match)


def task_name(task: str) -> str:
  return TASK_PREFIX + task


def write_task(
  tasks_dir: str, final_dir: str, name: str, task: Task, max_new_tokens: int, stop: list
) -> None:
  """One harness task in tasks_dir: JSONL rows {prompt: chat text, target} and the YAML that reads
  them from final_dir, where the bundle will be (the harness resolves a relative data file against
  its working directory, so the YAML names the absolute path: a moved bundle is exported again).
  The YAML is written as JSON (a subset of YAML), so no YAML writer is needed."""
  name = task_name(name)
  with open(os.path.join(tasks_dir, f"{name}.jsonl"), "w", encoding="utf-8") as f:
    for prompt, target in zip(task.prompts, task.targets, strict=True):
      f.write(json.dumps({"prompt": prompt, "target": target}) + "\n")
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
        **MATCH[task.match],
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
  tasks: dict[str, Task],
  write_adapters,
  entries: list[dict],
  source: str,
  scorer: str,
) -> str:
  """Writes a bundle at out_dir (new or empty). write_adapters(staging_dir) exports the adapters
  under staging_dir/adapters; entries: {variant, task, adapter (path relative to the bundle, or
  None for the base), answers, exact_match} for each score of ours; scorer: the command that
  scored them (`t2l eval`), which names our column in the comparison."""
  check_new_dir(out_dir, BUNDLE_FLAG)
  stop = stop_strings(tokenizer, eos_ids)
  with staging_beside(out_dir, ".harness-") as staging:
    os.makedirs(os.path.join(staging, "tasks"))
    for name, task in tasks.items():
      write_task(
        os.path.join(staging, "tasks"),
        os.path.join(os.path.abspath(out_dir), "tasks"),
        name,
        task,
        max_new_tokens,
        stop,
      )
    hf_export.export_base(base_model, os.path.join(staging, "base"))
    write_adapters(staging)
    manifest = {
      "source": source,
      "max_length": window(tokenizer, os.path.join(staging, "base"), tasks, max_new_tokens),
      "scorer": scorer,
      "match": {name: task.match for name, task in tasks.items()},
      "max_new_tokens": max_new_tokens,
      "stop": stop,
      "entries": entries,
    }
    with open(os.path.join(staging, MANIFEST), "w") as f:
      json.dump(manifest, f, indent=2)
    check_new_dir(out_dir, BUNDLE_FLAG)  # again: the export took time
    if os.path.isdir(out_dir):
      os.rmdir(out_dir)  # empty (just checked)
    os.rename(staging, out_dir)
  return out_dir


def read_bundle(bundle: str) -> dict:
  path = os.path.join(bundle, MANIFEST)
  if not os.path.isfile(path):
    raise ValueError(
      f"{bundle!r} is not a harness bundle (no {MANIFEST}); write one with "
      "`t2l eval` or `d2l eval --checkpoint RUN --export-harness-tasks DIR`"
    )
  with open(path) as f:
    return json.load(f)


def model_args(bundle: str, adapter: str | None, max_length: int | None = None) -> str:
  """--model_args for `lm_eval --model hf`: the bundle's base, the adapter, our tokenization and
  (max_length) the harness's context window."""
  args = f"pretrained={os.path.join(bundle, 'base')},dtype=float32,add_bos_token=False"
  args += f",max_length={max_length}" if max_length else ""
  return args + (f",peft={os.path.join(bundle, adapter)}" if adapter else "")


def window(tokenizer, base_dir: str, tasks: dict[str, Task], max_new_tokens: int) -> int:
  """The harness's max_length: the base's context window, or the longest prompt and its answer if
  longer. The harness cuts a prompt above max_length - max_gen_toks from the left, where our
  generation reads it whole (beyond the window a model is out of its training range either way)."""
  with open(os.path.join(base_dir, "config.json")) as f:
    context = json.load(f).get("max_position_embeddings", 0)
  longest = max(
    len(tokenizer(p, add_special_tokens=False)["input_ids"])
    for task in tasks.values()
    for p in task.prompts
  )
  return max(context, longest + max_new_tokens)


def command(bundle: str, adapter: str | None, tasks: list[str], max_length=None) -> str:
  """The lm_eval command line a user runs for one adapter of the bundle."""
  return (
    f"lm_eval --model hf --model_args {model_args(bundle, adapter, max_length)} "
    f"--tasks {','.join(task_name(t) for t in tasks)} "
    f"--include_path {os.path.join(bundle, 'tasks')} --batch_size 1 --device cpu --log_samples"
  )


def run_harness(
  bundle: str, adapter: str | None, tasks: list[str], limit: int | None = None, max_length=None
):
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
    model_args=model_args(bundle, adapter, max_length),
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
  # Bundles written before D2L had neither.
  scorer, max_length = manifest.get("scorer", "t2l eval"), manifest.get("max_length")
  by_adapter: dict = {}
  for entry in manifest["entries"]:
    by_adapter.setdefault(entry["adapter"], []).append(entry)
  rows, answers = [], []
  for adapter, entries in by_adapter.items():
    theirs = run_harness(bundle, adapter, [e["task"] for e in entries], limit, max_length)
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
          f"{scorer} exact match": f"{np.mean(ours):.3f}",
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
  commands = {
    str(a): command(bundle, a, [e["task"] for e in es], max_length) for a, es in by_adapter.items()
  }
  with open(out_json, "w") as f:
    json.dump(
      {"bundle": bundle, "rows": rows, "differing_answers": answers, "commands": commands},
      f,
      indent=2,
    )
  matches = sorted(set(manifest.get("match", {}).values()) or {"strip"})
  header = (
    f"lm-evaluation-harness beside our evaluation on the same examples ({manifest['source']}): "
    f"greedy, {manifest['max_new_tokens']} new tokens, stop at {', '.join(manifest['stop'])}, "
    f"{'; '.join(MATCH_NAMES[m] for m in matches)}.\n\n"
  )
  with open(os.path.splitext(out_json)[0] + ".md", "w") as f:
    f.write(header + markdown_table(rows))
  return rows
