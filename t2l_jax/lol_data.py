"""Super-NaturalInstructions / Lots-of-LoRAs tasks from local files, via tensorflow-datasets.

Expected layout (what the T2L reference's preprocessing leaves per task):

  ROOT/<task>/metadata.yaml      descriptions, user_prompt_template, response_field, system_message,
                                 assistant_prefill (the reference's metadata format); optionally
                                 task_def, the Super-NI definition that templates use as {task_def}
  ROOT/<task>/train.jsonl        one JSON object per instance, with the fields the template names
  ROOT/<task>/test.jsonl         (optional) held-out instances for evaluation

`LocalTaskData` (a tfds builder) applies each task's template once and writes array_record files
(no TensorFlow needed); tasks then read rows by index through grain, so sampling is random access
and deterministic.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re

import grain.python as grain
import numpy as np
import tensorflow_datasets as tfds

from t2l_jax.tasks import Example, load_lol_metadata

SPLITS = ("train", "test")
_FIELDS = ("prompt", "response", "system", "prefill")


def task_dirs(root: str) -> list[str]:
  if not os.path.isdir(root):
    raise FileNotFoundError(f"no task directory {root!r}")
  names = sorted(
    d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "metadata.yaml"))
  )
  if not names:
    raise FileNotFoundError(f"{root!r} has no <task>/metadata.yaml")
  return names


def split_name(task: str, split: str) -> str:
  return re.sub(r"\W", "_", f"{task}__{split}")


def render(meta: dict, row: dict) -> dict:
  """One instance -> prompt/response strings, using the task's template (fields may be nested:
  `{choices[text][0]}`)."""
  fields = {"task_def": meta["task_def"], **row} if "task_def" in meta else row
  try:
    prompt = meta["user_prompt_template"].format(**fields)
    response = row[meta["response_field"]]
  except (KeyError, IndexError) as err:
    raise ValueError(
      f"instance lacks field {err} needed by the template or response_field "
      f"{meta['response_field']!r}; its fields are {sorted(row)}"
    ) from err
  return {
    "prompt": prompt,
    "response": str(response),
    "system": meta.get("system_message") or "",
    "prefill": meta.get("assistant_prefill") or "",
  }


class LocalTaskData(tfds.core.GeneratorBasedBuilder):
  """Every task's train/test instances, rendered, one tfds split per (task, split)."""

  VERSION = tfds.core.Version("1.0.0")

  def __init__(self, *, source_dir: str, **kwargs):
    self.source_dir = os.path.abspath(source_dir)
    super().__init__(**kwargs)

  def _info(self):
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict({name: tfds.features.Text() for name in _FIELDS})
    )

  def _split_generators(self, dl_manager):
    splits = {}
    for task in task_dirs(self.source_dir):
      for split in SPLITS:
        path = os.path.join(self.source_dir, task, f"{split}.jsonl")
        if os.path.isfile(path):
          splits[split_name(task, split)] = self._generate_examples(task, path)
    return splits

  def _generate_examples(self, task, path):
    meta = load_lol_metadata(os.path.join(self.source_dir, task))
    with open(path) as f:
      for line_number, line in enumerate(f):
        if line.strip():
          yield line_number, render(meta, json.loads(line))


def _fingerprint(root: str) -> str:
  """Changes when any task file changes, so edited data is re-prepared, not silently reused."""
  h = hashlib.sha256(os.path.abspath(root).encode())
  for task in task_dirs(root):
    for name in sorted(os.listdir(os.path.join(root, task))):
      stat = os.stat(os.path.join(root, task, name))
      h.update(f"{task}/{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
  return h.hexdigest()[:16]


def prepare(root: str, cache_dir: str) -> LocalTaskData:
  builder = LocalTaskData(
    source_dir=root,
    data_dir=os.path.join(cache_dir, "tfds", _fingerprint(root)),
    file_format="array_record",
  )
  builder.download_and_prepare()
  return builder


@dataclasses.dataclass
class SourceTask:
  """A task whose instances live in a tfds data source (read through grain)."""

  name: str
  descriptions: tuple[str, ...]
  train_rows: object  # grain MapDataset of decoded rows
  test_rows: object

  @property
  def definition(self) -> str:
    return self.descriptions[0]

  @staticmethod
  def _example(row) -> Example:
    text = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in row.items()}
    # No system message in the metadata: no system turn (the template's default, as before).
    return Example(text["prompt"], text["response"], text["system"] or None, text["prefill"])

  def sample(self, seed: int) -> Example:
    return self._example(self.train_rows[seed % len(self.train_rows)])

  def eval_examples(self, n: int, seed: int) -> list[Example]:
    rows = self.test_rows if self.test_rows is not None else self.train_rows
    picks = np.random.default_rng(seed).choice(len(rows), min(n, len(rows)), replace=False)
    return [self._example(rows[int(i)]) for i in picks]


def load_tasks(root: str, cache_dir: str) -> list[SourceTask]:
  builder = prepare(root, cache_dir)
  available = set(builder.info.splits.keys())
  tasks = []
  for task in task_dirs(root):
    meta = load_lol_metadata(os.path.join(root, task))
    rows = {
      s: grain.MapDataset.source(builder.as_data_source(split=split_name(task, s)))
      for s in SPLITS
      if split_name(task, s) in available
    }
    if "train" not in rows:
      raise FileNotFoundError(f"task {task!r} in {root!r} has no train.jsonl")
    tasks.append(SourceTask(task, tuple(meta["descriptions"]), rows["train"], rows.get("test")))
  return tasks
