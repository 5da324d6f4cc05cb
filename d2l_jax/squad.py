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


def load(path: str, cache_dir: str) -> list[Document]:
  """Paragraphs of a SQuAD-format file as documents (study and test questions are the same)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no SQuAD-format file {path!r}")
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
  return sorted(documents, key=lambda d: d.doc_id)
