"""How well an encoder separates a suite's tasks: per family, cosines between a task's own
descriptions and its siblings', and whether an unseen phrasing lands nearest its own task.

The number that matters for T2L is `nearest own task`: for each evaluation description (a template
no training description uses), is the training description with the highest cosine one of the same
task? When the sentence frame outweighs the parameter ("Add 7" nearer "Add 6" than "Increase by
7"), this is low and the hypernetwork must learn to undo the frame.

  t2l encoders --config configs/t2l/smollm2_channel.py [--out runs/encoders.json]
"""

from __future__ import annotations

import json
import os

import numpy as np

from hyperlora.metrics import markdown_table, print_table
from t2l_jax import encoder as encoder_lib
from t2l_jax import tasks as tasks_lib


def family_stats(tasks: list, embeddings: dict, n_train: int) -> list[dict]:
  """One row per family: mean cosine within a task (training descriptions), with the sibling of the
  same template, with the sibling across templates, and the nearest-own-task rate."""
  rows = []
  for family in dict.fromkeys(t.family for t in tasks):
    members = [t for t in tasks if t.family == family]
    if len(members) < 2:
      continue
    unit = {
      t.name: embeddings[t.name] / np.linalg.norm(embeddings[t.name], axis=-1)[:, None]
      for t in members
    }
    within, same_template, across, hits, total = [], [], [], 0, 0
    train = np.concatenate([unit[t.name][:n_train] for t in members])  # [tasks * n, d]
    owner = np.repeat(np.arange(len(members)), n_train)
    for i, task in enumerate(members):
      mine = unit[task.name][:n_train]
      cos = mine @ mine.T
      within.append(cos[~np.eye(len(cos), dtype=bool)].mean())
      sibling = unit[tasks_lib.sibling_of(task, members).name][:n_train]
      between = mine @ sibling.T
      same_template.append(np.diag(between).mean())
      across.append(between[~np.eye(len(between), dtype=bool)].mean())
      for query in unit[task.name][n_train:]:
        hits += int(owner[np.argmax(train @ query)] == i)
        total += 1
    rows.append(
      {
        "family": family,
        "tasks": len(members),
        "within a task": float(np.mean(within)),
        "sibling, same template": float(np.mean(same_template)),
        "sibling, other templates": float(np.mean(across)),
        "nearest own task (unseen phrasings)": hits / total if total else float("nan"),
      }
    )
  return rows


def report(setup, config, out: str | None = None) -> dict[str, list[dict]]:
  """The table for the run's own encoder and for the other kind (MiniLM and the base model)."""
  tasks, n_train = setup.split.suite, config.data.train_descriptions
  texts = [d for t in tasks for d in t.descriptions]
  encoders = {
    "sentence (all-MiniLM-L6-v2)": encoder_lib.make_encoder("sentence"),
    "base model (last token)": encoder_lib.make_encoder("base", setup.base, pooling="last"),
  }
  tables = {}
  for name, encoder in encoders.items():
    flat = encoder(texts)
    by_task, start = {}, 0
    for t in tasks:
      by_task[t.name] = flat[start : start + len(t.descriptions)]
      start += len(t.descriptions)
    tables[name] = family_stats(tasks, by_task, n_train)
    print(f"\n{name}:")
    print_table(tables[name])
  if out:
    os.makedirs(os.path.dirname(os.path.abspath(out)) or ".", exist_ok=True)
    with open(out, "w") as f:
      json.dump(tables, f, indent=2)
    with open(os.path.splitext(out)[0] + ".md", "w") as f:
      f.write(
        f"Description cosines per family ({config.data.suite} suite, {n_train} training "
        "descriptions per task; nearest own task: share of unseen phrasings whose nearest "
        "training description is of the same task).\n"
      )
      for name, rows in tables.items():
        f.write(f"\n{name}:\n\n{markdown_table(rows)}")
  return tables
