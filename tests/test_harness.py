"""lm-evaluation-harness (the optional `eval` extra) scores a bundle we write the way we do: on a
tiny random model, base and LoRA-patched, the harness's greedy answers in PyTorch equal ours in
JAX, example by example, and so does its exact match (targets chosen so half the examples match)."""

import json
import os

import jax
import pytest

import hyperlora
from hyperlora import generate as gen
from hyperlora import harness, peft_io
from hyperlora import lora as lora_lib
from hyperlora.cli import main
from hyperlora.sft import Example

pytest.importorskip("lm_eval")

PROMPTS = ["one two three", "Count the vowels.", "The quick brown fox", "Answer with yes or no."]


def test_harness_answers_and_exact_match_equal_ours(tiny_model, tmp_path):
  path, _ = tiny_model("llama")
  loaded = hyperlora.load(path)
  lora = lora_lib.init(jax.random.key(0), loaded.config, ["q_proj", "v_proj"], 8, 2.0, b_std=0.3)
  examples = [Example(p, "", "") for p in PROMPTS]
  entries = []
  for variant, adapter, patch in (("base", None, None), ("lora", "adapters/lora", lora)):
    answers = gen.chat(loaded, examples, 6, patch)
    # Targets: our own answer on even examples, something else on odd ones (exact match 0.5).
    targets = [a if i % 2 == 0 else a + " no" for i, a in enumerate(answers)]
    entries.append(
      {
        "variant": variant,
        "task": f"{variant}_task",
        "adapter": adapter,
        "answers": answers,
        "exact_match": [float(a.strip() == t.strip()) for a, t in zip(answers, targets)],
        "targets": targets,
      }
    )
  assert entries[0]["answers"] != entries[1]["answers"]  # the adapter matters
  tasks = {
    e["task"]: harness.Task.from_examples(
      loaded.tokenizer, [Example(p, t, "") for p, t in zip(PROMPTS, e["targets"])]
    )
    for e in entries
  }
  bundle = str(tmp_path / "bundle")
  harness.write_bundle(
    bundle,
    path,
    loaded.tokenizer,
    gen.eos_ids_of(loaded.tokenizer, loaded.config),
    6,
    tasks,
    lambda staging: peft_io.export(lora, os.path.join(staging, "adapters", "lora"), path),
    entries,
    source="test",
    scorer="t2l eval",
  )
  assert main(["harness", bundle]) == 0
  with open(os.path.join(bundle, "harness.json")) as f:
    result = json.load(f)
  assert len(result["rows"]) == 2
  for row in result["rows"]:
    assert row["examples"] == len(PROMPTS)
    assert row["answers differ"] == 0 and row["scores differ"] == 0, result["differing_answers"]
    assert row["harness exact match"] == row["t2l eval exact match"] == "0.500"
  assert os.path.isfile(os.path.join(bundle, "harness.md"))
  assert "lm_eval --model hf" in result["commands"]["adapters/lora"]


def test_harness_refuses_what_is_not_a_bundle_and_never_replaces_out(tmp_path, capsys):
  assert main(["harness", str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip()
  assert "not a harness bundle" in err and "--export-harness-tasks" in err and "\n" not in err
  (tmp_path / harness.MANIFEST).write_text(json.dumps({"entries": []}))
  precious = tmp_path / "results.md"
  precious.write_text("keep me")
  assert main(["harness", str(tmp_path), "--out", str(tmp_path / "results.json")]) == 2
  assert "already exists" in capsys.readouterr().err and precious.read_text() == "keep me"


def test_harness_match_options_score_like_our_metrics():
  """The harness's exact_match with harness.MATCH's options against our own metrics, on answers
  where they could part: SQuAD normalisation (case, punctuation, articles, spacing) against any
  gold answer, and the needle's digits."""
  from lm_eval.api.metrics import exact_match_hf_evaluate

  from d2l_jax import scoring

  def theirs(match, answer, golds):
    options = harness.MATCH[match]
    return max(exact_match_hf_evaluate([answer], [g], **options)["exact_match"] for g in golds)

  squad = [
    ("The Eiffel Tower.", ["Eiffel Tower"]),
    ("  eiffel   tower ", ["the Eiffel Tower"]),
    ("An apple", ["apple", "pear"]),
    ("pear!", ["apple", "Pear"]),
    ("Paris, France", ["Paris"]),
    ("theater", ["ater"]),  # "the" inside a word is not an article
    ("1,024", ["1024"]),
    ("", ["x"]),
  ]
  for answer, golds in squad:
    ours = scoring.best(scoring.exact_match, answer, golds)
    assert theirs("squad", answer, golds) == ours, answer
  for answer, number, found in (
    ("The number is 4821.", "4821", 1.0),
    ("4821", "4821", 1.0),
    ("It is 1234", "4821", 0.0),
  ):
    assert theirs("digits", answer, [number]) == found == float(number in answer)
  assert theirs("strip", " yes \n", ["yes"]) == 1.0 and theirs("strip", "Yes", ["yes"]) == 0.0
