"""`d2l eval --export-harness-tasks DIR`: a run's held-out documents as lm-evaluation-harness
tasks, one task per document (its questions, asked without the document) and one with the
document in the prompt (ICL), with the base model and one D2L adapter per document (as `d2l
internalize --out-dir` writes them), and our own answers and scores on the same questions;
`hyperlora harness DIR` then runs the harness and sets the two side by side.

Adapters answer the task of their own document (D2L) and of the previous one (the control, as in
`d2l eval`: document i asked with the adapter of document i + 1). A run that trained on haystacks
also gets its held-out needle-in-a-haystack documents at the training length, one task each."""

from __future__ import annotations

import os

from d2l_jax import evaluate as d2l_eval
from d2l_jax import scoring
from d2l_jax.internalize import Internalizer
from hyperlora import generate as gen
from hyperlora import harness
from hyperlora.sft import Example, prompt_text
from hyperlora.staging import check_new_dir


def _questions(doc, kind: str) -> tuple[list[str], list]:
  """The questions asked of a document and their gold answers: QA documents in both phrasings
  (as `d2l eval` asks them), a haystack its one question."""
  qas = doc.test if kind == "niah" else [qa for p in d2l_eval.PHRASINGS for qa in getattr(doc, p)]
  return [qa.question for qa in qas], [list(qa.answers) for qa in qas]


def _score(kind: str, doc, answers: list[str], golds: list) -> list[float]:
  if kind == "niah":
    return [d2l_eval.needle_found(doc, a) for a in answers]
  return [scoring.best(scoring.exact_match, a, g) for a, g in zip(answers, golds)]


def check_controls(counts: dict) -> None:
  """{flag: number of documents (None: not given)}: the control asks each document with another
  one's adapter, so every group needs two or more."""
  for flag, count in counts.items():
    if count is not None and count < 2:
      raise ValueError(f"the control needs two or more documents: give {flag} 2 or more")


def export(
  workdir: str,
  out_dir: str,
  step: int | None = None,
  overrides: dict | None = None,
  niah: bool | None = None,
) -> str:
  """Writes the bundle at out_dir (new or empty; checked before anything loads). overrides: fields
  of the run's config.eval (documents, squad_file, synthetic, max_new_tokens); niah: add the
  haystacks (None: when the run trained on them)."""
  check_new_dir(out_dir, harness.BUNDLE_FLAG)
  internalizer = Internalizer(workdir, step=step)
  asker = d2l_eval.Harness(internalizer)
  config, tok = asker.config, asker.base.tokenizer
  config.eval.update(overrides or {})
  ec = config.eval
  groups = {"qa": d2l_eval.eval_documents(config, asker.cache_dir)}
  if niah or (niah is None and config.data.niah_documents):
    groups["niah"] = d2l_eval.niah_documents(config, tok, 1)
  flags = {"qa": "--documents", "niah": "--niah-depths"}
  check_controls({flags[kind]: len(docs) for kind, docs in groups.items()})

  tasks, entries, documents = {}, [], {}
  for kind, docs in groups.items():
    names = [f"{kind}{i:03d}" for i in range(len(docs))]
    chunk_len = ec.niah_chunk_len if kind == "niah" else ec.chunk_len
    adapters = [internalizer(doc.text, chunk_len) for doc in docs]
    for i, (name, doc) in enumerate(zip(names, docs)):
      documents[name] = (doc.text, adapters[i])
      questions, golds = _questions(doc, kind)
      match = "digits" if kind == "niah" else "squad"
      targets = [g[0] for g in golds] if kind == "niah" else golds
      tasks[name] = harness.Task(
        [prompt_text(tok, Example(q, "")) for q in questions], targets, match
      )
      icl = asker.prompts("icl", doc.text, questions)
      tasks[f"{name}_icl"] = harness.Task(
        [prompt_text(tok, Example(p, "")) for p in icl], targets, match
      )
      other = d2l_eval.control_index(i, len(docs))
      runs = (
        ("base", name, None, None, "base"),
        ("icl", f"{name}_icl", None, None, "icl"),
        ("d2l", name, adapters[i], f"adapters/d2l/{name}", "d2l"),
        ("control", name, adapters[other], f"adapters/d2l/{names[other]}", "d2l"),
      )
      for variant, task, lora, path, method in runs:
        answers = asker.answer(method, doc, questions, None, lora)
        scores = _score(kind, doc, answers, golds)
        entries.append(
          {
            "variant": variant,
            "task": task,
            "adapter": path,
            "document": doc.doc_id,
            "answers": answers,
            "exact_match": scores,
          }
        )
        print(f"{variant} / {task}: d2l eval score {sum(scores) / len(scores):.3f}")

  def write_adapters(staging: str) -> None:
    for name, (text, lora) in documents.items():  # the adapters scored above, not made again
      internalizer.write(lora, text, os.path.join(staging, "adapters", "d2l", name))

  return harness.write_bundle(
    out_dir,
    internalizer.base_model,
    tok,
    gen.eos_ids_of(tok, asker.base.config),
    ec.max_new_tokens,
    tasks,
    write_adapters,
    entries,
    source=f"d2l run {workdir}",
    scorer="d2l eval",
  )
