"""D2L data: synthetic corpus, NIAH generator, SQuAD files through tfds, scoring, training
batches."""

import json

import numpy as np
import pytest

import hyperlora
from d2l_jax import corpus, scoring, squad, teacher
from d2l_jax.data import DocBatches
from d2l_jax.train import question_pairs
from tests.conftest import squad_articles


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
  return hyperlora.load(tiny_model("llama")[0]).tokenizer


def test_synthetic_documents_are_deterministic_and_answerable():
  doc = corpus.synthetic_document(3)
  assert doc == corpus.synthetic_document(3) and doc != corpus.synthetic_document(4)
  assert len(doc.study) == len(doc.test) == 7
  for study, test in zip(doc.study, doc.test):
    assert study.answers == test.answers and study.question != test.question  # two phrasings
    assert study.answers[0] in doc.text
  train_people = {d.text.split(" was born")[0] for d in corpus.synthetic_corpus(50, 0)}
  held_out_people = {d.text.split(" was born")[0] for d in corpus.synthetic_corpus(50, 10**6)}
  assert not train_people & held_out_people


def test_niah_lengths_depths_and_needle(tokenizer):
  for n_tokens in (64, 256, 1024):
    for depth in (0.0, 0.5, 1.0):
      doc = corpus.niah_document(tokenizer, n_tokens, depth, seed=1)
      number = doc.test[0].answers[0]
      assert len(number) == 4 and f"The special magic number is {number}." in doc.text
      measured = len(tokenizer(doc.text, add_special_tokens=False)["input_ids"])
      assert abs(measured - n_tokens) <= 0.1 * n_tokens, (n_tokens, measured)
      needle = corpus.NEEDLE.format(number=number).strip()
      # The share of the haystack before the needle.
      position = doc.text.index(needle) / (len(doc.text) - len(needle))
      assert abs(position - depth) < 0.15, (depth, position)
  assert doc.test[0].question == corpus.NIAH_QUESTION
  assert doc.text.startswith("The grass is green. The sky is blue.")


def test_squad_file_through_tfds(tmp_path):
  data = {
    "data": [
      {
        "title": "Rivers",
        "paragraphs": [
          {
            "context": "The Zorv river flows north past Quellin.",
            "qas": [
              {
                "id": "1",
                "question": "Which way does the Zorv flow?",
                "answers": [
                  {"text": "north", "answer_start": 16},
                  {"text": "north", "answer_start": 16},
                  {"text": "flows north", "answer_start": 10},
                ],
              },
              {"id": "2", "question": "Where is the sea?", "answers": [], "is_impossible": True},
            ],
          },
          {
            "context": "Nothing to ask here.",
            "qas": [{"id": "3", "question": "x?", "answers": [], "is_impossible": True}],
          },
        ],
      }
    ]
  }
  path = tmp_path / "dev.json"
  path.write_text(json.dumps(data))
  docs = squad.load(str(path), str(tmp_path / "cache"))
  assert len(docs) == 1  # the paragraph without answerable questions is skipped
  (qa,) = docs[0].test
  assert docs[0].text == "The Zorv river flows north past Quellin."
  assert qa.question.startswith("Which way does the Zorv flow?") and qa.answers == (
    "north",
    "flows north",
  )
  with pytest.raises(FileNotFoundError, match="no SQuAD-format file"):
    squad.load(str(tmp_path / "missing.json"), str(tmp_path / "cache"))


def test_squad_split_holds_out_whole_articles(tmp_path):
  path = tmp_path / "dev.json"
  # 12 paragraphs per article: "Alpha-10" sorts before "Alpha-2" as a string, not as a paragraph.
  path.write_text(json.dumps(squad_articles(["Delta", "Alpha", "Gamma", "Beta"], 12)))
  docs = squad.load(str(path), str(tmp_path / "cache"))
  assert [d.doc_id for d in docs[:12]] == [f"Alpha-{p}" for p in range(12)]
  train, held_out = squad.split_articles(docs, 2)
  assert {squad.article(d) for d in train} == {"Alpha", "Beta"}
  assert {squad.article(d) for d in held_out} == {"Delta", "Gamma"} and len(held_out) == 24
  # Any prefix of either side spans its articles (data.train_documents takes a prefix).
  assert [d.doc_id for d in held_out[:4]] == ["Delta-0", "Gamma-0", "Delta-1", "Gamma-1"]
  assert [d.doc_id for d in train[:3]] == ["Alpha-0", "Beta-0", "Alpha-1"]
  with pytest.raises(ValueError, match="leaves no training article"):
    squad.split_articles(docs, 4)


def test_squad_scoring():
  # Worked by hand with the SQuAD evaluation rules (lower case, no punctuation or articles).
  assert scoring.exact_match("The Eiffel Tower!", "eiffel tower") == 1.0
  # "in north of france" vs "north france": precision 2/4, recall 2/2.
  assert scoring.word_f1("in the north of France", "north France") == pytest.approx(
    2 * 0.5 * 1 / (0.5 + 1)
  )
  assert scoring.word_f1("Paris", "London") == 0.0
  assert scoring.best(scoring.word_f1, "flows north", ("south", "north")) == pytest.approx(2 / 3)


def test_doc_batches_shapes_chunks_and_processes(tokenizer):
  documents = corpus.synthetic_corpus(6, 0)
  pairs, pair_doc = question_pairs(documents)

  class Data:
    responses, top_k, max_len, max_teacher_len, max_answer, teacher_batch = (
      "gold",
      4,
      96,
      448,
      16,
      8,
    )

  targets = teacher.prepare(hyperlora.load(tokenizer.name_or_path), pairs, Data, None)
  assert targets["teacher_ids"].shape == (len(pairs), 16, 4)
  top = targets["teacher_logprobs"][targets["target_mask"] > 0]  # [answer tokens, k]
  assert (np.diff(top, axis=-1) <= 0).all() and 0 < np.exp(top).sum(-1).max() <= 1 + 1e-6
  kwargs = dict(
    docs_per_batch=4,
    queries_per_doc=3,
    max_doc_len=320,
    chunk_counts=(1, 2, 4),
    chunk_probs=(0.2, 0.4, 0.4),
    min_chunk_len=10,
    seed=0,
  )
  whole = DocBatches(documents, targets, pair_doc, tokenizer, **kwargs)
  seen_k = set()
  for step in range(8):
    batch = whole(step)
    docs, k, width = batch["chunk_tokens"].shape
    seen_k.add(k)
    assert docs == 4 and width == whole.chunk_width(k) and batch["tokens"].shape == (12, 96)
    assert batch["chunk_mask"].sum(-1).min() >= 10  # every chunk holds real tokens
    halves = [
      DocBatches(
        documents, targets, pair_doc, tokenizer, process_index=i, process_count=2, **kwargs
      )(step)
      for i in range(2)
    ]
    for key in ("chunk_tokens", "tokens", "teacher_ids"):
      np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), batch[key])
  assert seen_k == {1, 2, 4}
  with pytest.raises(ValueError, match="more than data.max_doc_len"):
    DocBatches(documents, targets, pair_doc, tokenizer, **{**kwargs, "max_doc_len": 20})


def test_squad_training_skips_what_does_not_fit(tokenizer, tmp_path):
  """Real text is uneven: gold training keeps only the questions with a gold answer that fits
  max_answer (any of the annotators' answers), drops a paragraph left with none, and skips the
  paragraphs longer than one max_doc_len chunk, instead of stopping the run."""
  import types

  from ml_collections import ConfigDict

  from d2l_jax.train import training_documents

  long = " ".join(["word"] * 40)
  docs = [
    corpus.Document("a-0", "t", (corpus.QA("q1", ("one",)), corpus.QA("q2", (long,))), ()),
    corpus.Document("a-1", "t", (corpus.QA("q3", (long, "two")),), ()),
    corpus.Document("a-2", "t", (corpus.QA("q4", (long,)),), ()),
  ]
  kept = teacher.with_fitting_gold(tokenizer, docs, max_answer=16)
  assert [(d.doc_id, [q.question for q in d.study]) for d in kept] == [
    ("a-0", ["q1"]),
    ("a-1", ["q3"]),
  ]
  data = squad_articles(["Alpha", "Beta", "Gamma"], 2)
  data["data"][0]["paragraphs"][1]["context"] = long
  path = tmp_path / "dev.json"
  path.write_text(json.dumps(data))
  config = ConfigDict(
    dict(
      data=dict(
        corpus="squad",
        squad_file=str(path),
        squad_held_out_articles=1,
        train_documents=0,
        niah_documents=0,
        max_doc_len=32,
      ),
      train=dict(seed=0),
    )
  )
  setup = types.SimpleNamespace(base=types.SimpleNamespace(tokenizer=tokenizer))
  train = training_documents(setup, config, str(tmp_path / "cache"))
  assert [d.doc_id for d in train] == ["Alpha-0", "Beta-0", "Beta-1"]
