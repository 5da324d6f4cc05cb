"""Lots-of-LoRAs / Super-NI tasks from local files through the tfds builder and grain."""

import json
import os

import numpy as np
import pytest
import yaml

from t2l_jax import lol_data
from t2l_jax.data import SFTBatches
from t2l_jax.tasks import Example

REFERENCE = os.path.join(
  os.path.dirname(__file__), "..", "..", "shared", "reference-data", "t2l_tasks"
)


def write_task(root, name, rows, split="train", **meta):
  os.makedirs(root / name, exist_ok=True)
  metadata = {
    "descriptions": [f"{name} description {i}." for i in range(12)],
    "user_prompt_template": "{task_def}\n\n{problem}",
    "response_field": "answer",
    "system_message": "",
    "assistant_prefill": "",
    "task_def": f"Definition of {name}.",
    **meta,
  }
  (root / name / "metadata.yaml").write_text(yaml.safe_dump(metadata))
  (root / name / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def task_root(tmp_path):
  root = tmp_path / "tasks"
  for t in range(3):
    write_task(
      root, f"lol_{t:03d}", [{"problem": f"q{t}-{i}", "answer": f"a{t}-{i}"} for i in range(20)]
    )
  write_task(root, "lol_000", [{"problem": "held", "answer": "out"}], split="test")
  return root


def test_builder_renders_every_instance(task_root, tmp_path):
  tasks = lol_data.load_tasks(str(task_root), str(tmp_path / "cache"))
  assert [t.name for t in tasks] == ["lol_000", "lol_001", "lol_002"]
  first = tasks[0]
  assert len(first.train_rows) == 20 and len(first.test_rows) == 1 and tasks[1].test_rows is None
  seen = {first.sample(seed) for seed in range(200)}
  assert {e.target for e in seen} == {f"a0-{i}" for i in range(20)}  # every row reachable
  example = first.sample(3)
  assert example.prompt == f"Definition of lol_000.\n\nq0-{example.target.split('-')[1]}"
  assert first.eval_examples(5, 0) == [Example("Definition of lol_000.\n\nheld", "out")]
  assert first.sample(7) == lol_data.load_tasks(str(task_root), str(tmp_path / "cache"))[0].sample(
    7
  )


def test_batches_from_lol_tasks(task_root, tmp_path, tiny_model):
  import hyperlora

  path, _ = tiny_model("llama")
  tokenizer = hyperlora.load(path, with_tokenizer=True).tokenizer
  tasks = lol_data.load_tasks(str(task_root), str(tmp_path / "cache"))
  embeddings = {t.name: np.random.default_rng(0).normal(size=(10, 8)) for t in tasks}
  batch = SFTBatches(
    tasks,
    embeddings,
    tokenizer,
    tasks_per_batch=2,
    examples_per_task=3,
    max_len=128,
    seed=0,
    max_answer=32,
  )(5)
  assert batch["tokens"].shape == (6, 128) and batch["task_emb"].shape == (6, 8)
  assert len(set(batch["task_id"].tolist())) == 2 and batch["target_mask"].sum(1).min() > 0


def test_missing_template_field_is_named(tmp_path):
  root = tmp_path / "bad"
  write_task(root, "lol_009", [{"question": "no problem field", "answer": "x"}])
  with pytest.raises(
    ValueError, match="lacks field 'problem'.*fields are \\['answer', 'question'\\]"
  ):
    lol_data.load_tasks(str(root), str(tmp_path / "cache"))
  with pytest.raises(FileNotFoundError, match="no task directory"):
    lol_data.load_tasks(str(tmp_path / "nowhere"), str(tmp_path / "cache"))


@pytest.mark.skipif(not os.path.isdir(REFERENCE), reason="no ../shared/reference-data")
def test_reference_templates_render(tmp_path):
  """The real metadata files (nested template fields, assistant prefill) render our rows."""
  root = tmp_path / "ref"
  arc = yaml.safe_load(open(os.path.join(REFERENCE, "arc_easy", "metadata.yaml")))
  gsm = yaml.safe_load(open(os.path.join(REFERENCE, "gsm8k", "metadata.yaml")))
  choices = {"label": ["A", "B", "C", "D"], "text": ["red", "blue", "green", "pink"]}
  write_task(
    root,
    "arc_easy",
    [{"question": "Sky colour?", "choices": choices, "answerKey": "B"}],
    **{k: arc[k] for k in ("descriptions", "user_prompt_template", "response_field")},
  )
  write_task(
    root,
    "gsm8k",
    [{"question": "1+1?", "answer": "2"}],
    **{
      k: gsm[k]
      for k in ("descriptions", "user_prompt_template", "response_field", "assistant_prefill")
    },
  )
  arc_task, gsm_task = lol_data.load_tasks(str(root), str(tmp_path / "cache"))
  arc_example = arc_task.sample(0)
  assert "B: blue" in arc_example.prompt and arc_example.target == "B"
  assert gsm_task.sample(0).prefill == "Let's think step by step. "
  assert len(arc_task.descriptions) == 200
