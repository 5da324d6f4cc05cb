"""Zero-shot evaluation on held-out tasks: base, multi-task LoRA, oracle LoRAs and T2L adapters
from the tasks' own (unseen) descriptions, held-out paraphrases and random strings; one table."""

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
from hyperlora.metrics import print_table
from hyperlora.sft import encode_example, pad_batch
from t2l_jax import model as t2l_model
from t2l_jax.generate import Generator


class TaskEval:
  """Loss (teacher-forced, answer tokens) and exact match (greedy) of one adapter on one task."""

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

  def __call__(self, task, lora) -> dict:
    ec, tok, max_len = self.config.eval, self.base.tokenizer, self.config.data.max_len
    examples = task.eval_examples(ec.examples_per_task, ec.seed)
    rows = [encode_example(tok, example, max_len) for example in examples]
    batch = {
      k: jnp.asarray(v)
      for k, v in pad_batch(
        rows, self.config.data.max_len, tok.pad_token_id or 0, self.config.data.max_answer
      ).items()
    }
    loss = float(self._loss(self.base.params, batch, lora).mean())
    answers = gen.chat(self.base, examples, ec.max_new_tokens, lora, width=max_len, keep_end=True)
    targets = [e.target for e in examples]
    exact = float(np.mean([a.strip() == y.strip() for a, y in zip(answers, targets)]))
    rouge = float(
      np.mean([self._rouge.score(y, a)["rougeL"].fmeasure for a, y in zip(answers, targets)])
    )
    return {"loss": loss, "exact_match": exact, "rougeL": rouge}


def _cycle(embeddings: np.ndarray, n: int) -> jnp.ndarray:
  return jnp.asarray(np.resize(embeddings, (n, embeddings.shape[-1])))


VARIANTS = ("base", "multitask", "oracle", "t2l", "t2l_heldout", "t2l_random")


def evaluate(
  workdir: str, out_json: str | None = None, variants: tuple[str, ...] = VARIANTS
) -> list[dict]:
  """The zero-shot table (plus a few training tasks as "seen"); `variants` picks rows."""
  unknown = sorted(set(variants) - set(VARIANTS))
  if unknown:
    raise ValueError(f"unknown eval variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
  generator = Generator(workdir)
  config = generator.config
  setup = t2l_model.build(config)
  paths = t2l_model.workdir_paths(workdir)
  n = config.eval.examples_per_task
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

  groups = {
    "held-out": setup.eval_tasks,
    "seen": setup.train_tasks[: config.eval.get("seen_tasks", 4)],
  }
  train_emb = {
    g: t2l_model.description_embeddings(setup, ts, config, "train", paths["cache"])
    for g, ts in groups.items()
  }
  heldout_emb = {
    g: t2l_model.description_embeddings(setup, ts, config, "held_out", paths["cache"])
    for g, ts in groups.items()
  }
  rows_by_key = {
    "base": ("base model", lambda g, t: None),
    "multitask": ("multi-task LoRA", (lambda g, t: multitask) if multitask is not None else None),
    "oracle": ("oracle LoRA (trained on the task)", lambda g, t: oracle(t)),
    "t2l": ("T2L, task descriptions", lambda g, t: t2l(train_emb[g][t.name])),
    "t2l_heldout": ("T2L, held-out paraphrases", lambda g, t: t2l(heldout_emb[g][t.name])),
    "t2l_random": ("T2L, random descriptions", lambda g, t: t2l(random_emb)),
  }
  variants = dict(rows_by_key[k] for k in VARIANTS if k in variants)

  rows = []
  for name, make_lora in variants.items():
    if make_lora is None:
      continue
    row = {"adapter": name}
    for group, tasks in groups.items():
      scores = []
      for task in tqdm(tasks, desc=f"{name} / {group}", leave=False):
        lora = make_lora(group, task)
        if lora is None and name.startswith("oracle"):
          break
        scores.append(task_eval(task, lora))
      if len(scores) == len(tasks):
        row[f"{group} exact match"] = float(np.mean([s["exact_match"] for s in scores]))
        row[f"{group} ROUGE-L"] = float(np.mean([s["rougeL"] for s in scores]))
        row[f"{group} loss"] = float(np.mean([s["loss"] for s in scores]))
    if len(row) > 1:
      rows.append(row)
  print_table(rows)
  if out_json:
    os.makedirs(os.path.dirname(os.path.abspath(out_json)), exist_ok=True)
    with open(out_json, "w") as f:
      json.dump(
        {"workdir": workdir, "held_out_tasks": [t.name for t in setup.eval_tasks], "rows": rows},
        f,
        indent=2,
      )
  return rows
