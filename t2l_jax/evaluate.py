"""Zero-shot evaluation: base, multi-task LoRA, oracle LoRAs and T2L adapters from the tasks' own
(unseen) descriptions, held-out paraphrases and random strings (the control), on three splits
(sibling held-out, family held-out, seen), with bootstrap intervals and paired differences."""

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
from hyperlora import peft_io
from hyperlora.losses import answer_cross_entropy
from hyperlora.metrics import bootstrap_ci, markdown_table, print_table, with_ci
from hyperlora.sft import encode_example, pad_batch
from t2l_jax import model as t2l_model
from t2l_jax import tasks as tasks_lib
from t2l_jax.generate import Generator


class TaskEval:
  """Per-example loss (teacher-forced, answer tokens), exact match and ROUGE-L (greedy) of one
  adapter on one task."""

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

  def __call__(self, task, lora) -> dict[str, list[float]]:
    ec, tok, max_len = self.config.eval, self.base.tokenizer, self.config.data.max_len
    examples = task.eval_examples(ec.examples_per_task, ec.seed)
    rows = [encode_example(tok, example, max_len) for example in examples]
    batch = {
      k: jnp.asarray(v)
      for k, v in pad_batch(
        rows, self.config.data.max_len, tok.pad_token_id or 0, self.config.data.max_answer
      ).items()
    }
    loss = np.asarray(self._loss(self.base.params, batch, lora), np.float64)  # [examples]
    answers = gen.chat(self.base, examples, ec.max_new_tokens, lora, width=max_len, keep_end=True)
    targets = [e.target for e in examples]
    return {
      "exact_match": [float(a.strip() == y.strip()) for a, y in zip(answers, targets)],
      "rougeL": [self._rouge.score(y, a)["rougeL"].fmeasure for a, y in zip(answers, targets)],
      "loss": loss.tolist(),
    }


def _cycle(embeddings: np.ndarray, n: int) -> jnp.ndarray:
  return jnp.asarray(np.resize(embeddings, (n, embeddings.shape[-1])))


VARIANTS = ("base", "multitask", "oracle", "t2l", "t2l_heldout", "t2l_random")
METRICS = {"exact_match": "exact match", "rougeL": "ROUGE-L", "loss": "loss"}
# Paired differences (same tasks, same examples) that decide the comparisons the README makes.
DIFFERENCES = (("t2l", "t2l_random"), ("t2l", "multitask"))


def splits(setup, config) -> dict[str, list]:
  """The zero-shot splits: sibling and family held-out tasks, and a seeded sample of
  eval.seen_tasks training tasks ("seen"; none when 0). Empty splits are left out."""
  n_seen = config.eval.seen_tasks
  out = {
    "sibling held-out": setup.split.siblings,
    "family held-out": setup.split.families,
    "seen": tasks_lib.sample_tasks(setup.train_tasks, n_seen, config.eval.seed) if n_seen else [],
  }
  return {k: v for k, v in out.items() if v}


def summarise(scores: dict, names: dict, resamples: int, seed: int) -> dict[str, list[dict]]:
  """Per split, one row per adapter: mean and 95% bootstrap interval (tasks, then examples) of each
  metric, then the paired differences. scores[split][variant][task][metric] = [per example]."""
  tables = {}
  for split, by_variant in scores.items():
    rows = []
    ci = lambda groups: with_ci(*bootstrap_ci(groups, resamples, seed=seed))
    for variant, by_task in by_variant.items():
      row = {"adapter": names[variant]}
      for metric, title in METRICS.items():
        row[title] = ci([t[metric] for t in by_task.values()])
      rows.append(row)
    for a, b in DIFFERENCES:
      if a in by_variant and b in by_variant:
        row = {"adapter": f"{names[a]} minus {names[b]}"}
        for metric, title in METRICS.items():
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


def evaluate(
  workdir: str, out_json: str | None = None, variants: tuple[str, ...] = VARIANTS
) -> dict[str, list[dict]]:
  """The zero-shot tables, one per split (sibling held-out, family held-out, seen), each adapter's
  mean with its interval; `variants` picks rows. With out_json, writes the JSON (per-task,
  per-example scores included) and the tables as Markdown beside it (same name, .md)."""
  unknown = sorted(set(variants) - set(VARIANTS))
  if unknown:
    raise ValueError(f"unknown eval variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
  generator = Generator(workdir)
  config = generator.config
  setup = t2l_model.build(config)
  paths = t2l_model.workdir_paths(workdir)
  ec = config.eval
  n = ec.examples_per_task
  task_eval = TaskEval(setup.base, config)
  t2l = lambda emb: generator.apply(generator.params, _cycle(emb, n))
  random_emb = setup.embed(t2l_model.RANDOM_DESCRIPTIONS)

  multitask = None
  if os.path.isdir(paths["multitask"]) and os.listdir(paths["multitask"]):
    abstract = jax.eval_shape(lambda: t2l_model.init_direct_lora(setup.spec, setup.base.config, 0))
    multitask = lora_lib.LoRA(
      generator.run.restore_params(abstract, subdir="multitask"), setup.spec.scale
    )

  def oracle(task):
    directory = os.path.join(paths["oracle"], task.name)
    return peft_io.load(directory, setup.base.config) if os.path.isdir(directory) else None

  groups = splits(setup, config)
  train_emb, heldout_emb = (
    {
      g: t2l_model.description_embeddings(setup, ts, config, which, paths["cache"])
      for g, ts in groups.items()
    }
    for which in ("train", "held_out")
  )
  makers = {
    "base": lambda g, t: None,
    "multitask": (lambda g, t: multitask) if multitask is not None else None,
    "oracle": lambda g, t: oracle(t),
    "t2l": lambda g, t: t2l(train_emb[g][t.name]),
    "t2l_heldout": lambda g, t: t2l(heldout_emb[g][t.name]),
    "t2l_random": lambda g, t: t2l(random_emb),
  }
  names = {
    "base": "base model",
    "multitask": "multi-task LoRA",
    "oracle": "oracle LoRA (trained on the task)",
    "t2l": "T2L, task descriptions",
    "t2l_heldout": "T2L, held-out paraphrases",
    "t2l_random": "T2L, random descriptions",
  }

  scores = {}
  for group, tasks in groups.items():
    for variant in [v for v in VARIANTS if v in variants and makers[v] is not None]:
      by_task = {}
      for task in tqdm(tasks, desc=f"{names[variant]} / {group}", leave=False):
        lora = makers[variant](group, task)
        if lora is None and variant == "oracle":
          break  # Oracles exist for held-out tasks only, when trained.
        by_task[task.name] = task_eval(task, lora)
      if len(by_task) == len(tasks):
        scores.setdefault(group, {})[variant] = by_task
  tables = summarise(scores, names, ec.get("bootstrap", 2000), ec.seed)  # older runs lack it
  for split, rows in tables.items():
    print(f"\n{split} ({len(groups[split])} tasks x {n} examples; 95% bootstrap intervals):")
    print_table(rows)
  if out_json:
    os.makedirs(os.path.dirname(os.path.abspath(out_json)), exist_ok=True)
    with open(out_json, "w") as f:
      json.dump(
        {
          "workdir": workdir,
          "tasks": {g: [t.name for t in ts] for g, ts in groups.items()},
          "tables": tables,
          "scores": scores,
        },
        f,
        indent=2,
      )
    header = (
      f"Zero-shot exact match, ROUGE-L and answer loss, {n} examples per task; mean and 95% "
      "bootstrap interval (tasks, then examples); paired differences on the same examples.\n"
    )
    with open(os.path.splitext(out_json)[0] + ".md", "w") as f:
      f.write(markdown(tables, header))
  return tables
