"""`t2l eval --export-harness-tasks DIR`: a run's held-out sibling tasks as lm-evaluation-harness
tasks, with the base model, the multi-task LoRA and one T2L adapter per task (generated from the
task's first description, as a user generates one), and our own scores of each on the same
examples; `hyperlora harness DIR` then runs the harness and sets the two side by side."""

from __future__ import annotations

import os

from hyperlora import generate as gen
from hyperlora import harness, peft_io
from hyperlora.staging import check_new_dir
from t2l_jax.evaluate import TaskEval, open_for_eval, restore_direct


def export(workdir: str, out_dir: str, step: int | None = None) -> str:
  """Writes the bundle at out_dir (new or empty; checked before anything loads)."""
  check_new_dir(out_dir, harness.BUNDLE_FLAG)
  setup, generator = open_for_eval(workdir, step)
  config, ec = generator.config, generator.config.eval
  tasks = setup.split.siblings
  if not tasks:
    raise ValueError(f"the run {workdir!r} holds out no sibling tasks; nothing to export")
  descriptions = {t.name: t.descriptions[0] for t in tasks}
  multitask = restore_direct(generator, setup, "multitask")
  # variant -> (adapter for a task, its path in the bundle)
  variants = {"base": (lambda t: None, lambda t: None)}
  if multitask is not None:
    variants["multitask"] = (lambda t: multitask, lambda t: "adapters/multitask")
  variants["t2l"] = (
    lambda t: generator([descriptions[t.name]]).example(0),
    lambda t: f"adapters/t2l/{t.name}",
  )
  task_eval = TaskEval(setup.base, config)
  entries = []
  for variant, (adapter, path) in variants.items():
    for task in tasks:
      scores = task_eval(task, adapter(task))
      entries.append(
        {
          "variant": variant,
          "task": task.name,
          "adapter": path(task),
          "description": descriptions[task.name] if variant == "t2l" else None,
          "answers": scores["answers"],
          "exact_match": scores["exact_match"],
        }
      )
      mean = sum(scores["exact_match"]) / len(scores["exact_match"])
      print(f"{variant} / {task.name}: t2l eval exact match {mean:.3f}")

  def write_adapters(staging: str) -> None:
    if multitask is not None:
      peft_io.export(
        multitask,
        os.path.join(staging, "adapters", "multitask"),
        generator.base_model,
        {"source": "multi-task LoRA", "t2l_run": os.path.abspath(workdir)},
      )
    generator.export_many(descriptions, os.path.join(staging, "adapters", "t2l"))

  tok = setup.base.tokenizer
  return harness.write_bundle(
    out_dir,
    generator.base_model,
    tok,
    gen.eos_ids_of(tok, setup.base.config),
    ec.max_new_tokens,
    {
      t.name: harness.Task.from_examples(tok, t.eval_examples(ec.examples_per_task, ec.seed))
      for t in tasks
    },
    write_adapters,
    entries,
    source=f"t2l run {workdir}",
    scorer="t2l eval",
  )
