"""The description-channel suite: prompts that do not name the task, so only the description can
carry it; and a fast check that T2L reads its description where nothing else can tell the tasks
apart (the multi-task LoRA and a sibling's description stay near chance)."""

import os
import re

import pytest

import hyperlora
from hyperlora import generate
from hyperlora.cli_config import load_config_file
from hyperlora.sft import prompt_ids
from t2l_jax import channel_suite
from t2l_jax import model as t2l_model
from t2l_jax import tasks as tasks_lib
from t2l_jax.tasks import Task

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs", "t2l")


def test_only_the_description_names_the_task():
  suite = channel_suite.channel_suite()
  by_name = {t.name: t for t in suite}
  assert {f"add_{k}" for k in range(1, 27)} <= set(by_name) and len(suite) == 76
  n = channel_suite.TRAIN_DESCRIPTIONS
  templates = channel_suite.TEMPLATES
  for family, (train, held_out) in templates.items():
    assert len(set(train)) == len(train) >= 24 and len(held_out) >= 4
    assert not set(train) & set(held_out)  # evaluation phrasings come from unused templates
    assert any("{kw}" in t for t in train) and any("{k}" in t for t in train)  # digits, words
  for task in suite:
    assert len(set(task.descriptions[:n])) == n
    assert not set(task.descriptions[:n]) & set(task.descriptions[n:])
    example = task.sample(0)
    x, y = task.examples(1, 0)[0]
    assert example.system == "" and example.target == y
    assert example.prompt == f"Please complete the task without any explanation.\n\n{x}"
  # Siblings and families share their inputs: a 2-digit integer for every arithmetic task.
  for name in ("add_1", "add_30", "subtract_12"):
    assert all(re.fullmatch(r"[1-9]\d", x) for x, _ in by_name[name].examples(50, 3))
  assert {int(y) - int(x) for x, y in by_name["subtract_12"].examples(20, 0)} == {-12}
  split = tasks_lib.split_suite(suite, channel_suite.HELD_OUT, (), channel_suite.EXTRAPOLATION)
  trained_k = {t.param for t in split.train if t.family == "add_k"}
  assert all(
    min(trained_k) < t.param < max(trained_k) for t in split.siblings if t.family == "add_k"
  )
  assert all(t.param > max(trained_k) for t in split.extrapolation)
  assert tasks_lib.sibling_of(by_name["add_12"], suite).name == "add_13"
  partner = lambda name: tasks_lib.other_family_of(by_name[name], suite, channel_suite.PARTNERS)
  assert partner("add_12").name == "subtract_12" and partner("last_4_words").name == "first_4_words"


def test_chat_with_an_empty_system_turn_gives_the_training_prompt(tiny_model):
  """`hyperlora chat --system ""` sends exactly the prompt the suite trains on."""
  path, _ = tiny_model("llama")
  tokenizer = hyperlora.load(path, with_tokenizer=True).tokenizer
  example = channel_suite.channel_suite()[0].sample(5)
  tokens, _ = generate.encode_chat(tokenizer, [example.prompt], system="")
  row = [int(t) for t in tokens[0] if t != (tokenizer.pad_token_id or 0)]
  assert row == prompt_ids(tokenizer, example)
  assert "<|im_start|>system\n<|im_end|>" in tokenizer.decode(row)
  default, _ = generate.encode_chat(tokenizer, [example.prompt])  # no --system: no system turn
  assert "system" not in tokenizer.decode([int(t) for t in default[0]])


WORDS = ("fox", "dog", "magic", "Paris")
FRAMES = (
  "Answer with the word {w}.",
  "Reply {w}, whatever the input.",
  "Say {w}.",
  "Output the word {w} and nothing else.",
  "Your answer is always {w}.",
  "Respond with {w}.",
  "Write {w}.",  # held out
)


def word_tasks() -> list[Task]:
  """Four tasks with the same inputs (2-digit numbers) and a fixed answer each: only the
  description says which word to give."""
  return [
    Task(
      f"say_{w}",
      FRAMES[0].format(w=w),
      tuple(f.format(w=w) for f in FRAMES),
      lambda rng, w=w: (str(rng.randint(10, 99)), w),
      family="say_word",
      definition_in_prompt=False,
    )
    for w in WORDS
  ]


def test_t2l_reads_the_description_where_nothing_else_can_tell(tiny_model, tmp_path, monkeypatch):
  """A tiny T2L fits four tasks that share their inputs to >= 0.9 exact match; the multi-task
  LoRA (same prompts, batches and steps) and T2L given a sibling's description stay near 1/4. This
  fails if T2L ignores its description."""
  from t2l_jax.evaluate import evaluate
  from t2l_jax.train import train

  monkeypatch.setattr(channel_suite, "channel_suite", word_tasks)
  monkeypatch.setattr(channel_suite, "PARTNERS", {})
  config = load_config_file(os.path.join(CONFIGS, "tiny.py"))
  config.base_model, config.workdir = tiny_model("llama")[0], str(tmp_path / "run")
  config.data.update(
    suite="channel", held_out=(), held_out_families=(), train_descriptions=6, max_len=40
  )
  config.train.update(steps=60, log_every=10, ckpt_every=60)
  config.eval.update(examples_per_task=8, seen_tasks=4, max_new_tokens=4, bootstrap=500)
  train(config)
  tables = evaluate(config.workdir, variants=("multitask", "t2l", "t2l_sibling"))
  rows = {r["adapter"]: r for r in tables["seen"]}
  em = lambda name: float(rows[name]["exact match"].split()[0])
  assert em("T2L, task descriptions") >= 0.9, rows
  assert em("multi-task LoRA") <= 0.5, rows
  assert em("T2L, a sibling task's description (control)") <= 0.5, rows
  gap = rows["T2L, task descriptions minus T2L, a sibling task's description (control)"]
  low = float(re.findall(r"-?\d+\.\d+", gap["exact match"])[1])
  assert low > 0, gap


def test_eval_command_prints_every_row_by_default():
  from t2l_jax import cli
  from t2l_jax.evaluate import VARIANTS

  assert tuple(cli.EVAL_VARIANTS.split(",")) == VARIANTS


def test_families_select_part_of_a_suite(tiny_model):
  """data.families keeps only the named families (the word-count main job); a family the suite
  does not have is one error that lists those it has."""

  config = load_config_file(os.path.join(CONFIGS, "smollm2_words.py"))
  config.base_model = tiny_model("llama")[0]
  setup = t2l_model.build(config)
  assert {t.family for t in setup.train_tasks} == {"first_k_words", "last_k_words"}
  assert len(setup.train_tasks) == 12
  assert {t.name for t in setup.split.siblings} == {
    "first_3_words",
    "first_6_words",
    "last_4_words",
    "last_7_words",
  }
  config.data.families = ("first_k_words", "times_k")
  with pytest.raises(ValueError, match="times_k.*choose from"):
    t2l_model.build(config)
