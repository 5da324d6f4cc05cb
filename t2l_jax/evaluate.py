"""Zero-shot evaluation: base, multi-task LoRAs, oracle LoRAs and T2L adapters from the tasks' own
descriptions, from unseen phrasings, and from the controls that expose an adapter ignoring its
description (a sibling task's description, another family's, random strings), on every split
(sibling held-out, extrapolation, family held-out, seen), with bootstrap intervals and paired
differences."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from rouge_score import rouge_scorer
from tqdm.auto import tqdm

from hyperlora import generate as gen
from hyperlora import lora as lora_lib
from hyperlora import peft_io, run_dir
from hyperlora.losses import answer_cross_entropy
from hyperlora.metrics import bootstrap_ci, markdown_table, print_table, with_ci
from hyperlora.sft import encode_example, pad_batch
from t2l_jax import model as t2l_model
from t2l_jax import tasks as tasks_lib
from t2l_jax.generate import Generator


class TaskEval:
  """Per-example loss (teacher-forced, answer tokens), exact match and ROUGE-L (greedy) of one
  adapter on one task, and the answers they score."""

  def __init__(self, base, config):
    self.base, self.config = base, config
    self.model = base.module()
    self._rouge = rouge_scorer.RougeScorer(["rougeL"])
    self._loss = jax.jit(
      lambda params, batch, lora: answer_cross_entropy(
        self.model.apply(
          {"params": params},
          batch["tokens"],
          batch["attention_mask"],
          lora=lora,
          logits_at=batch["target_index"],
        ).logits,
        batch["target_ids"],
        batch["target_mask"],
      )
    )

  def __call__(self, task, lora, descriptions=None) -> dict[str, list]:
    """descriptions: put these (cycled) in the prompts, as the multi-task LoRA trained on
    described prompts reads them."""
    ec, tok, dc = self.config.eval, self.base.tokenizer, self.config.data
    # Described prompts are longer: their own width, as in training.
    max_len = (descriptions and dc.described_max_len) or dc.max_len
    examples = task.eval_examples(ec.examples_per_task, ec.seed, descriptions)
    inputs = [x for x, _ in task.examples(ec.examples_per_task, ec.seed)]
    rows = [encode_example(tok, example, max_len) for example in examples]
    batch = {
      k: jnp.asarray(v)
      for k, v in pad_batch(rows, max_len, tok.pad_token_id or 0, dc.max_answer).items()
    }
    loss = np.asarray(self._loss(self.base.params, batch, lora), np.float64)  # [examples]
    answers = gen.chat(self.base, examples, ec.max_new_tokens, lora, width=max_len, keep_end=True)
    targets = [e.target for e in examples]
    return {
      "exact_match": [float(a.strip() == y.strip()) for a, y in zip(answers, targets)],
      "rougeL": [self._rouge.score(y, a)["rougeL"].fmeasure for a, y in zip(answers, targets)],
      # Answers that repeat the input: what ROUGE-L credits on tasks that only edit the input.
      "echo": [float(a.strip() == x.strip()) for a, x in zip(answers, inputs)],
      "loss": loss.tolist(),
      "answers": answers,
    }


def _cycle(embeddings: np.ndarray, n: int) -> jnp.ndarray:
  return jnp.asarray(np.resize(embeddings, (n, embeddings.shape[-1])))


VARIANTS = (
  "base",
  "multitask",
  "multitask_described",
  "oracle",
  "t2l",
  "t2l_heldout",
  "t2l_sibling",
  "t2l_family",
  "t2l_random",
)
METRICS = {"exact_match": "exact match", "rougeL": "ROUGE-L", "echo": "echo rate", "loss": "loss"}
# Paired differences (same tasks, same examples) that decide the comparisons the README makes.
DIFFERENCES = (
  ("t2l", "t2l_sibling"),
  ("t2l", "t2l_family"),
  ("t2l", "t2l_random"),
  ("t2l", "multitask"),
  ("t2l", "multitask_described"),
)


def splits(setup, config) -> dict[str, list]:
  """The zero-shot splits: sibling held-out tasks (inside the trained parameter range),
  extrapolation (siblings outside it), family held-out tasks, and a seeded sample of
  eval.seen_tasks training tasks ("seen"; none when 0). Empty splits are left out."""
  n_seen = config.eval.seen_tasks
  out = {
    "sibling held-out": setup.split.siblings,
    "extrapolation": setup.split.extrapolation,
    "family held-out": setup.split.families,
    "seen": tasks_lib.sample_tasks(setup.train_tasks, n_seen, config.eval.seed) if n_seen else [],
  }
  return {k: v for k, v in out.items() if v}


def summarise(
  scores: dict, names: dict, resamples: int, seed: int, metrics: dict = METRICS
) -> dict[str, list[dict]]:
  """Per split, one row per adapter: mean and 95% bootstrap interval (tasks, then examples) of each
  metric, then the paired differences. scores[split][variant][task][metric] = [per example]."""
  tables = {}
  for split, by_variant in scores.items():
    rows = []
    ci = lambda groups: with_ci(*bootstrap_ci(groups, resamples, seed=seed))
    for variant, by_task in by_variant.items():
      row = {"adapter": names[variant]}
      for metric, title in metrics.items():
        row[title] = ci([t[metric] for t in by_task.values()])
      rows.append(row)
    for a, b in DIFFERENCES:
      if a in by_variant and b in by_variant:
        row = {"adapter": f"{names[a]} minus {names[b]}"}
        for metric, title in metrics.items():
          row[title] = ci(
            [
              np.subtract(by_variant[a][task][metric], by_variant[b][task][metric])
              for task in by_variant[a]
            ]
          )
        rows.append(row)
    tables[split] = rows
  return tables


def markdown(tables: dict[str, list[dict]], header: str) -> str:
  return header + "".join(f"\n{split}:\n\n{markdown_table(rows)}" for split, rows in tables.items())


def restore_direct(generator: Generator, setup, name: str) -> lora_lib.LoRA | None:
  """A multi-task LoRA the run trained ("multitask" or "multitask_described"; None when not)."""
  path = t2l_model.workdir_paths(generator.workdir)[name]
  if not (os.path.isdir(path) and os.listdir(path)):
    return None
  abstract = jax.eval_shape(lambda: t2l_model.init_direct_lora(setup.spec, setup.base.config, 0))
  return lora_lib.LoRA(generator.run.restore_params(abstract, subdir=name), setup.spec.scale)


def open_for_eval(workdir: str, step: int | None = None):
  """(setup, generator) of a T2L run: its config built (base model, suite, task encoder) and its
  hypernetwork at `step` (default: the latest), the encoder loaded once for both."""
  setup = t2l_model.build(run_dir.open_run(workdir, "t2l").config)
  return setup, Generator(workdir, step=step, encoder=setup.encoder)


def evaluate(
  workdir: str,
  out_json: str | None = None,
  variants: tuple[str, ...] = VARIANTS,
  step: int | None = None,
) -> dict[str, list[dict]]:
  """The zero-shot tables, one per split, each adapter's mean with its interval; `variants` picks
  rows, `step` the T2L checkpoint (default: the latest; the baselines are always their final
  ones). With out_json, writes the JSON (per-task, per-example scores included) and the tables as
  Markdown beside it (same name, .md)."""
  unknown = sorted(set(variants) - set(VARIANTS))
  if unknown:
    raise ValueError(f"unknown eval variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
  setup, generator = open_for_eval(workdir, step)
  config = generator.config
  paths = t2l_model.workdir_paths(workdir)
  ec = config.eval
  n = ec.examples_per_task
  task_eval = TaskEval(setup.base, config)
  t2l = lambda emb: generator.apply(generator.params, _cycle(emb, n))
  random_emb = setup.embed(t2l_model.RANDOM_DESCRIPTIONS)

  multitask = restore_direct(generator, setup, "multitask")
  described = restore_direct(generator, setup, "multitask_described")

  def oracle(task):
    directory = os.path.join(paths["oracle"], task.name)
    return peft_io.load(directory, setup.base.config) if os.path.isdir(directory) else None

  groups = splits(setup, config)
  suite, n_train = setup.split.suite, config.data.train_descriptions
  # Every task's training descriptions (a control may borrow any task's), and held-out phrasings.
  train_emb = t2l_model.description_embeddings(setup, suite, config, "train", paths["cache"])
  heldout_emb = t2l_model.description_embeddings(setup, suite, config, "held_out", paths["cache"])
  sibling = {t.name: tasks_lib.sibling_of(t, suite) for ts in groups.values() for t in ts}
  family = {
    t.name: tasks_lib.other_family_of(t, suite, setup.split.partners)
    for ts in groups.values()
    for t in ts
  }
  borrowed = lambda other: lambda t: t2l(train_emb[other[t.name].name]) if other[t.name] else None
  makers = {
    "base": lambda t: None,
    "multitask": (lambda t: multitask) if multitask is not None else None,
    "multitask_described": (lambda t: described) if described is not None else None,
    "oracle": oracle,
    "t2l": lambda t: t2l(train_emb[t.name]),
    "t2l_heldout": (lambda t: t2l(heldout_emb[t.name]))
    if heldout_emb[suite[0].name].size
    else None,
    "t2l_sibling": borrowed(sibling),
    "t2l_family": borrowed(family),
    "t2l_random": lambda t: t2l(random_emb),
  }
  in_prompt = {"multitask_described": lambda t: list(t.descriptions[:n_train])}
  channel = not suite[0].definition_in_prompt
  names = {
    "base": "base model",
    "multitask": "multi-task LoRA",
    "multitask_described": "multi-task LoRA, description in the prompt",
    "oracle": "oracle LoRA (trained on the task)",
    "t2l": "T2L, task descriptions",
    "t2l_heldout": "T2L, unseen phrasings"
    if channel
    else "T2L, training phrasings in other frames",
    "t2l_sibling": "T2L, a sibling task's description (control)",
    "t2l_family": "T2L, another family's description (control)",
    "t2l_random": "T2L, random descriptions (control)",
  }
  metrics = {k: v for k, v in METRICS.items() if k != "rougeL" or ec.rouge}

  scores = {}
  for group, tasks in groups.items():
    for variant in [v for v in VARIANTS if v in variants and makers[v] is not None]:
      by_task = {}
      for task in tqdm(tasks, desc=f"{names[variant]} / {group}", leave=False):
        lora = makers[variant](task)
        if lora is None and variant != "base":
          break  # No oracle for this task (trained for held-out tasks only), or no sibling.
        by_task[task.name] = task_eval(task, lora, in_prompt.get(variant, lambda t: None)(task))
      if len(by_task) == len(tasks):
        scores.setdefault(group, {})[variant] = by_task
  tables = summarise(scores, names, ec.bootstrap, ec.seed, metrics)
  for split, rows in tables.items():
    print(f"\n{split} ({len(groups[split])} tasks x {n} examples; 95% bootstrap intervals):")
    print_table(rows)
  if out_json:
    os.makedirs(os.path.dirname(os.path.abspath(out_json)), exist_ok=True)
    controls = {
      "sibling": {k: v.name for k, v in sibling.items() if v},
      "family": {k: v.name for k, v in family.items() if v},
    }
    with open(out_json, "w") as f:
      json.dump(
        {
          "workdir": workdir,
          "tasks": {g: [t.name for t in ts] for g, ts in groups.items()},
          "controls": controls,
          "tables": tables,
          "scores": scores,
        },
        f,
        indent=2,
      )
    at_step = f", T2L at step {step}" if step is not None else ""
    header = (
      f"Zero-shot {', '.join(metrics.values())}, {n} examples per task{at_step}; mean and 95% "
      "bootstrap interval (tasks, then examples); paired differences on the same examples.\n"
    )
    with open(os.path.splitext(out_json)[0] + ".md", "w") as f:
      f.write(markdown(tables, header))
  return tables


CURVE_VARIANTS = ("t2l", "t2l_sibling")


def learning_curve(workdir: str, steps: list[int], out_json: str | None = None) -> list[dict]:
  """T2L beside its sibling-description control at several checkpoints: per step and split, the
  exact match of each and their paired difference (the number that says whether T2L reads the
  parameter). With out_json, writes the rows as JSON and Markdown (.md beside it)."""
  rows = []
  for step in steps:
    tables = evaluate(workdir, variants=CURVE_VARIANTS, step=step)
    for split, table in tables.items():
      row = {"step": step, "split": split}
      for r in table:
        row[f"{r['adapter']}: exact match"] = r["exact match"]
      rows.append(row)
  print_table(rows)
  if out_json:
    with open(out_json, "w") as f:
      json.dump({"workdir": workdir, "rows": rows}, f, indent=2)
    with open(os.path.splitext(out_json)[0] + ".md", "w") as f:
      f.write(
        "T2L and its sibling-description control by checkpoint: exact match, mean and 95% "
        "bootstrap interval, and the paired difference.\n\n" + markdown_table(rows)
      )
  return rows
