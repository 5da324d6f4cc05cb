"""SQuAD-format question answering from a local JSON file, via tensorflow-datasets.

The file is the SQuAD v1.1 / v2.0 layout: {"data": [{"title", "paragraphs": [{"context", "qas":
[{"id", "question", "answers": [{"text", ...}], "is_impossible"?}]}]}]}. `SquadContexts` (a tfds
builder) writes one example per paragraph to array_record (no TensorFlow needed), with the
answerable questions and their gold answers; `load` reads them back as `Document`s through grain.
"""

from __future__ import annotations

import hashlib
import json
import os

import grain.python as grain
import tensorflow_datasets as tfds

from d2l_jax.corpus import ANSWER_STYLE, QA, Document


class SquadContexts(tfds.core.GeneratorBasedBuilder):
  """One example per paragraph: its context and answerable questions (answers tab-joined)."""

  VERSION = tfds.core.Version("1.0.0")

  def __init__(self, *, source_file: str, **kwargs):
    self.source_file = os.path.abspath(source_file)
    super().__init__(**kwargs)

  def _info(self):
    return self.dataset_info_from_configs(
      features=tfds.features.FeaturesDict(
        {
          "id": tfds.features.Text(),
          "context": tfds.features.Text(),
          "questions": tfds.features.Sequence(tfds.features.Text()),
          "answers": tfds.features.Sequence(tfds.features.Text()),
        }
      )
    )

  def _split_generators(self, dl_manager):
    return {"contexts": self._generate_examples()}

  def _generate_examples(self):
    with open(self.source_file) as f:
      try:
        data = json.load(f)["data"]
      except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{self.source_file!r} is not SQuAD-format JSON ({err})") from err
    for a, article in enumerate(data):
      for p, paragraph in enumerate(article["paragraphs"]):
        qas = [qa for qa in paragraph["qas"] if not qa.get("is_impossible") and qa["answers"]]
        if qas:
          yield (
            f"{a}-{p}",
            {
              "id": f"{article.get('title', a)}-{p}",
              "context": paragraph["context"],
              "questions": [qa["question"] for qa in qas],
              "answers": [
                "\t".join(dict.fromkeys(ans["text"] for ans in qa["answers"])) for qa in qas
              ],
            },
          )


def check_file(path: str) -> None:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no SQuAD-format file {path!r}")


def load(path: str, cache_dir: str) -> list[Document]:
  """Paragraphs of a SQuAD-format file as documents (study and test questions are the same)."""
  check_file(path)
  stat = os.stat(path)
  key = hashlib.sha256(
    f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}".encode()
  ).hexdigest()[:16]
  builder = SquadContexts(
    source_file=path, data_dir=os.path.join(cache_dir, "tfds", key), file_format="array_record"
  )
  builder.download_and_prepare()
  rows = grain.MapDataset.source(builder.as_data_source(split="contexts"))
  text = lambda v: v.decode() if isinstance(v, bytes) else str(v)
  documents = []
  for row in rows:
    qas = tuple(
      QA(text(q) + ANSWER_STYLE, tuple(text(a).split("\t")))
      for q, a in zip(row["questions"], row["answers"])
    )
    documents.append(Document(text(row["id"]), text(row["context"]), qas, qas))
  return sorted(documents, key=_order)


def article(doc: Document) -> str:
  """The article a paragraph comes from (its doc_id is 'TITLE-INDEX')."""
  return doc.doc_id.rsplit("-", 1)[0]


def _order(doc: Document) -> tuple[str, int]:
  return article(doc), int(doc.doc_id.rsplit("-", 1)[1])


def split_articles(documents: list[Document], held_out: int) -> tuple[list, list]:
  """(training, held-out) paragraphs: the last `held_out` articles (by title) are held out whole,
  so no article has paragraphs on both sides. Both sides are interleaved across their articles
  (the first paragraph of each, then the second of each, ...) so that any prefix spans them all:
  data.train_documents=200 trains on every training article, not on the first five."""
  titles = sorted({article(d) for d in documents})
  if held_out >= len(titles):
    raise ValueError(
      f"data.squad_held_out_articles={held_out} leaves no training article: the file has "
      f"{len(titles)}; hold out fewer"
    )
  held = set(titles[len(titles) - held_out :])
  return interleave([d for d in documents if article(d) not in held]), interleave(
    [d for d in documents if article(d) in held]
  )


def interleave(documents: list[Document]) -> list[Document]:
  """Paragraphs round-robin over their articles, in article order."""
  by_article: dict[str, list] = {}
  for d in documents:
    by_article.setdefault(article(d), []).append(d)
  columns = list(by_article.values())
  return [c[i] for i in range(max(map(len, columns), default=0)) for c in columns if i < len(c)]
