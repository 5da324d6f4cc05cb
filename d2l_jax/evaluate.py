"""D2L evaluation in one harness: documents' questions answered by the base model without the
document, with it in context (ICL), with a context-distilled LoRA (CD), with the D2L adapter, and
with **another document's D2L adapter** (the control: a hypernetwork that ignores its input scores
the same with either); and needle-in-a-haystack accuracy at multiples of the training length.

Questions are asked in both phrasings (study: the ones training saw; test: unseen phrasings of the
same facts) on held-out documents and, for D2L and its control, on training documents. Every score
carries a 95% bootstrap interval (documents resampled, then their questions), and D2L minus control
is a paired difference with its own interval. Besides F1 and exact match, each method reports its
latency per document (preparing the context + answering) and memory: the context state it keeps
(KV cache of the document for ICL, the adapter for D2L and CD) and the peak of its compiled programs
(XLA's buffer assignment: arguments, outputs and temporaries).
"""

from __future__ import annotations

import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

import hyperlora
from d2l_jax import chunking, context, corpus, diagnostics, scoring, squad, teacher
from d2l_jax.internalize import Internalizer
from d2l_jax.train import ContextDistillation, question_pairs, squad_split
from hyperlora import generate as gen
from hyperlora import run_dir
from hyperlora.memory import array_mb, kv_cache_mb, program_mb
from hyperlora.metrics import bootstrap_ci, markdown_table, print_table, with_ci
from hyperlora.sft import Example, prompt_ids

METHODS = ("base", "icl", "cd", "d2l")
_NAMES = {
  "base": "base model, no document",
  "icl": "document in context (ICL)",
  "cd": "context distillation LoRA",
  "d2l": "D2L adapter",
  "control": "D2L, another document's adapter (control)",
  "gap": "D2L minus control",
}
PHRASINGS = ("study", "test")


def eval_documents(config, cache_dir: str) -> list:
  """Held-out documents: eval.squad_file's paragraphs when set (all of them held out, any run),
  unseen synthetic biographies when eval.synthetic is set or the run trained on them, else the
  run's held-out SQuAD articles."""
  ec, dc = config.eval, config.data
  if ec.squad_file and ec.synthetic:
    raise ValueError("ask either a SQuAD file's paragraphs or synthetic biographies, not both")
  if ec.squad_file:
    return squad.interleave(squad.load(ec.squad_file, cache_dir))[: ec.documents]
  if dc.corpus == "squad" and not ec.synthetic:
    return squad_split(config, cache_dir)[1][: ec.documents]
  return corpus.synthetic_corpus(ec.documents, seed=ec.seed)


def seen_documents(config, cache_dir: str) -> list:
  """The first eval.train_documents documents training saw (QA documents, not haystacks)."""
  dc, n = config.data, config.eval.train_documents
  if dc.corpus == "squad":
    return squad_split(config, cache_dir)[0][: min(n, dc.train_documents or n)]
  return corpus.synthetic_corpus(min(n, dc.train_documents), seed=config.train.seed)


def control_index(i: int, n: int) -> int:
  """The document whose adapter answers document i's questions in the control (another one)."""
  return (i + 1) % n


class Harness:
  def __init__(self, internalizer: Internalizer):
    self.d2l = internalizer
    self.config, self.base = internalizer.config, internalizer.base
    self.cache_dir = os.path.join(internalizer.workdir, "cache")
    self._cd = None

  def prompt_width(self, method: str) -> int:
    """Padded prompt length: a question, or (ICL) the document and a question."""
    return self.config.data.max_teacher_len if method == "icl" else self.config.data.max_len

  def prompts(self, method: str, document: str, questions: list[str]) -> list[str]:
    if method == "icl":
      return [teacher.in_context_prompt(document, q) for q in questions]
    return questions

  def adapter(self, method: str, doc, chunk_len: int):
    if method == "d2l":
      # No serving limit on the rank here: the adapter stays in JAX (NIAH asks up to 128x).
      return self.d2l(doc.text, chunk_len, max_chunks=math.inf)
    if method == "cd":
      if self._cd is None:
        self._cd = ContextDistillation(self.base, self.config)
      if self.config.data.responses == "gold":
        fitting = teacher.with_fitting_gold(self.base.tokenizer, [doc], self.config.data.max_answer)
        doc = (fitting or [doc])[0]  # none fits: the long answer's own error says what to raise
      pairs, _ = question_pairs([doc], "study")
      return self._cd(
        teacher.prepare(
          self.base,
          pairs,
          self.config.data,
          self.cache_dir,
          with_top_k=self.config.train.loss == "distill",
        )
      )
    return None

  def answer(self, method: str, doc, questions: list[str], width: int | None, lora=None):
    """Greedy answers to questions about doc (ICL puts the document in the prompt)."""
    prompts = self.prompts(method, doc.text, questions)
    if method == "icl":
      # Real paragraphs can outgrow the width the teacher trained with: such a document gets the
      # width it needs (one more compile); the others keep the configured one.
      needed = max(len(prompt_ids(self.base.tokenizer, Example(p, ""))) for p in prompts)
      width = max(width or 0, -(-needed // 32) * 32)
    return gen.chat(
      self.base,
      prompts,
      self.config.eval.max_new_tokens,
      lora,
      batch=self.config.eval.batch,
      width=width,
      desc=method,
    )

  def peak_program_mb(self, method: str, doc_tokens: int, lora) -> float:
    """The largest compiled program a method runs to answer: generation for a full batch, and for
    D2L also the feature pass over one chunk (CD's training step is not counted)."""
    ec = self.config.eval
    tokens = jnp.zeros((ec.batch, self.prompt_width(method)), jnp.int32)
    eos = gen.eos_ids_of(self.base.tokenizer, self.base.config)
    peaks = [
      program_mb(
        gen.generate,
        self.base.module(),
        self.base.params,
        tokens,
        tokens > -1,
        ec.max_new_tokens,
        lora,
        None,
        0.0,
        eos,
      )
    ]
    if method == "d2l":
      chunk = min(doc_tokens, ec.chunk_len)
      row = jnp.zeros((1, chunk), jnp.int32)
      peaks.append(
        program_mb(
          context.features,
          self.base.module(),
          self.base.params,
          row,
          row > -1,
          self.d2l.setup.features,
        )
      )
    return max(peaks)


def _score(answers: list[str], qas) -> dict:
  return {
    "f1": [scoring.best(scoring.word_f1, a, qa.answers) for a, qa in zip(answers, qas)],
    "em": [scoring.best(scoring.exact_match, a, qa.answers) for a, qa in zip(answers, qas)],
  }


def run_method(harness: Harness, method: str, docs: list) -> dict:
  """Asks every document's study and test questions with one method. Returns per-document scores
  {phrasing: {"f1": [[per question] per doc], "em": ...}} (for D2L also under "control"), the
  timings and the context state."""
  ec, tok = harness.config.eval, harness.base.tokenizer
  runs = {"d2l": ("d2l", "control")}.get(method, (method,))
  scores = {name: {p: {"f1": [], "em": []} for p in PHRASINGS} for name in runs}
  adapters, prepare_s, answer_s, state = [], [], [], []
  for doc in tqdm(docs, desc=f"prepare / {method}", leave=False):
    start = time.perf_counter()
    lora = jax.block_until_ready(harness.adapter(method, doc, ec.chunk_len))
    prepare_s.append(time.perf_counter() - start)
    adapters.append(lora)
    n_tokens = len(tok(doc.text, add_special_tokens=False)["input_ids"])
    state.append(
      kv_cache_mb(harness.base.config, n_tokens)
      if method == "icl"
      else array_mb(lora.weights)
      if lora is not None
      else 0.0
    )
  for i, doc in enumerate(tqdm(docs, desc=f"QA / {method}", leave=False)):
    qas = {p: getattr(doc, p) for p in PHRASINGS}
    questions = [qa.question for p in PHRASINGS for qa in qas[p]]
    for name in runs:
      lora = adapters[control_index(i, len(docs)) if name == "control" else i]
      start = time.perf_counter()
      answers = harness.answer(method, doc, questions, harness.prompt_width(method), lora)
      if name == method:
        answer_s.append(time.perf_counter() - start)
      for p in PHRASINGS:
        part, answers = answers[: len(qas[p])], answers[len(qas[p]) :]
        for metric, values in _score(part, qas[p]).items():
          scores[name][p][metric].append(values)
  steady = lambda times: float(np.mean(times[1:] or times))  # the first call compiles
  cost = {
    "prepare s/doc": steady(prepare_s),
    "answer s/doc": steady(answer_s),
    "context state MB": float(np.mean(state)),
    "peak program MB": harness.peak_program_mb(method, n_tokens, adapters[-1]),
  }
  return {"scores": scores, "cost": cost}


def _paired_gap(scores: dict, phrasing: str) -> list:
  own, other = scores["d2l"][phrasing]["f1"], scores["control"][phrasing]["f1"]
  return [list(np.subtract(a, b)) for a, b in zip(own, other)]


def qa_tables(harness: Harness, held_out: list, seen: list, methods) -> dict:
  """The QA table (F1 with intervals per document set and phrasing), the cost table, and the
  per-document scores behind them."""
  ec = harness.config.eval
  columns = [("held-out", p) for p in PHRASINGS] + [("training", p) for p in PHRASINGS]
  results = {}
  for method in methods:
    docs = held_out[: ec.cd_documents] if method == "cd" else held_out
    if docs:
      results[("held-out", method)] = run_method(harness, method, docs)
  if "d2l" in methods and seen:
    results[("training", "d2l")] = run_method(harness, "d2l", seen)
  rows, per_doc = {}, {}
  for (split, method), result in results.items():
    for name, by_phrasing in result["scores"].items():
      row = rows.setdefault(name, {"method": _NAMES[name]})
      for p, values in by_phrasing.items():
        row[f"{split} {p} F1"] = with_ci(*bootstrap_ci(values["f1"]))
        row[f"{split} {p} EM"] = float(np.mean(np.concatenate(values["em"])))
        per_doc[f"{name}/{split}/{p}"] = values
      row["documents" if split == "held-out" else "training documents"] = len(values["f1"])
    if method == "d2l":
      gap = rows.setdefault("gap", {"method": _NAMES["gap"]})
      for p in PHRASINGS:
        gap[f"{split} {p} F1"] = with_ci(*bootstrap_ci(_paired_gap(result["scores"], p)))
  f1_columns = [f"{s} {p} F1" for s, p in columns]
  qa = [{"method": r["method"], **{c: r.get(c, "-") for c in f1_columns}} for r in rows.values()]
  cost = [
    {
      "method": _NAMES[m],
      "held-out test EM": rows[m].get("held-out test EM", "-"),
      **results[("held-out", m)]["cost"],
    }
    for m in methods
    if ("held-out", m) in results
  ]
  return {"qa": qa, "cost": cost, "per_document": per_doc}


def niah_documents(config, tokenizer, multiple: int) -> list:
  """eval.niah_depths held-out haystacks of `multiple` times the training length, the needle at
  evenly spaced depths."""
  ec = config.eval
  return [
    corpus.niah_document(
      tokenizer, config.data.niah_max_len * multiple, float(d), seed=ec.seed + 1000 * multiple + i
    )
    for i, d in enumerate(np.linspace(0.0, 1.0, ec.niah_depths))
  ]


def needle_found(doc, answer: str) -> float:
  """NIAH's score: the needle's number occurs in the answer."""
  return float(doc.test[0].answers[0] in answer)


def norm_row(harness: Harness, docs: list, adapters: list, length: int) -> dict:
  """Why accuracy may fall with the chunk count K: the chunks' deltas are summed with no 1/K, so
  the needle's chunk is one of K. Means over the haystacks: |dW| of the needle's chunk, of the
  other chunks (each), and of the whole adapter (all chunks and the bias); chunks: the most any
  haystack has."""
  rank, tok = harness.d2l.setup.spec.rank, harness.base.tokenizer
  needle, others, whole, chunks = [], [], [], []
  for doc, lora in zip(docs, adapters):
    norms = np.asarray(diagnostics.chunk_norms(lora, rank))[:-1]  # the bias's is last
    chunks.append(len(norms))
    k = diagnostics.needle_chunk(
      tok, doc.text, doc.test[0].answers[0], harness.config.eval.niah_chunk_len
    )
    if k >= 0:
      needle.append(norms[k])
      others.extend(np.delete(norms, k))
    whole.append(float(diagnostics.dw_norm(lora)))
  return {
    "length": f"{length} tok",
    "chunks": max(chunks),
    "needle chunk dW norm": float(np.mean(needle)) if needle else float("nan"),
    "other chunk dW norm": float(np.mean(others)) if others else float("nan"),
    "whole adapter dW norm": float(np.mean(whole)),
  }


def niah_table(harness: Harness, methods) -> tuple[list[dict], list[dict]]:
  """Accuracy (the needle's number in the answer) over eval.niah_depths haystacks at multiples of
  the training length, with its interval; the control answers each haystack with the adapter of the
  next one (another number). With D2L, also its adapters' norms by length (norm_row)."""
  ec, dc, tok = harness.config.eval, harness.config.data, harness.base.tokenizer
  rows, norms = {}, []
  for multiple in ec.niah_multiples:
    length = dc.niah_max_len * multiple
    docs = niah_documents(harness.config, tok, multiple)
    question = docs[0].test[0].question
    hits = {}
    for method in [m for m in methods if m in ("base", "icl", "d2l")]:
      adapters = [
        harness.adapter(method, d, ec.niah_chunk_len)
        for d in tqdm(docs, desc=f"NIAH {length} / {method}", leave=False)
      ]
      if method == "d2l":
        norms.append(norm_row(harness, docs, adapters, length))
      for name in {"d2l": ("d2l", "control")}.get(method, (method,)):
        hits[name] = [
          [
            needle_found(
              doc,
              harness.answer(
                method,
                doc,
                [question],
                None,
                adapters[control_index(i, len(docs)) if name == "control" else i],
              )[0],
            )
          ]
          for i, doc in enumerate(docs)
        ]
    if "d2l" in hits:
      hits["gap"] = [[a[0] - b[0]] for a, b in zip(hits["d2l"], hits["control"])]
    for name, values in hits.items():
      rows.setdefault(name, {"method": _NAMES[name]})[f"{multiple}x ({length} tok)"] = with_ci(
        *bootstrap_ci(values)
      )
  return list(rows.values()), norms


def evaluate(
  workdir: str,
  out_json: str | None = None,
  methods=METHODS,
  niah: bool | None = None,
  overrides: dict | None = None,
  step: int | None = None,
  base=None,
) -> dict:
  """The tables for a `d2l train` workdir (its latest checkpoint, or that of `step`); `overrides`
  replace fields of its config.eval. niah: ask the needle-in-a-haystack table (None: when the run
  trained on haystacks; True also asks a run that did not, to see what it kept or never learned).
  With out_json, writes the JSON (per-document scores included) and the tables as Markdown beside
  it. `base`: the loaded base model, to reuse across calls."""
  unknown = sorted(set(methods) - set(METHODS))
  if unknown:
    raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
  harness = Harness(Internalizer(workdir, base=base, step=step))
  harness.config.eval.update(overrides or {})
  ec = harness.config.eval
  held_out = eval_documents(harness.config, harness.cache_dir)
  seen = seen_documents(harness.config, harness.cache_dir)
  result = {"workdir": workdir, "step": step, **qa_tables(harness, held_out, seen, methods)}
  sections = [
    (
      f"QA word F1 with 95% bootstrap intervals: {len(held_out)} held-out and {len(seen)} "
      f"training documents; study = the phrasings training saw, test = unseen phrasings",
      result["qa"],
    ),
    ("Cost per held-out document (test phrasings)", result["cost"]),
  ]
  if niah or (niah is None and harness.config.data.niah_documents):
    result["niah"], result["niah_norms"] = niah_table(harness, methods)
    sections.append(
      (
        f"Needle in a haystack: accuracy over {ec.niah_depths} held-out haystacks per "
        f"length (trained on up to {harness.config.data.niah_max_len} tokens; D2L chunk "
        f"{ec.niah_chunk_len})",
        result["niah"],
      )
    )
    if result["niah_norms"]:
      sections.append(
        (
          "D2L adapters of the haystacks: Frobenius norm of the weight delta (each chunk's as "
          "it enters the adapter), means over the haystacks; chunks combined by "
          f"{chunking.CHUNK_SCALINGS[ec.chunk_scaling]}",
          result["niah_norms"],
        )
      )
  for title, rows in sections:
    print(f"\n{title}:")
    print_table(rows)
  if out_json:
    os.makedirs(os.path.dirname(os.path.abspath(out_json)), exist_ok=True)
    with open(out_json, "w") as f:
      json.dump(result, f, indent=2)
    with open(os.path.splitext(out_json)[0] + ".md", "w") as f:
      f.write("\n".join(f"{title}:\n\n{markdown_table(rows)}" for title, rows in sections))
  return result


def learning_curve(
  workdir: str, steps: list[int], out_json: str | None = None, overrides: dict | None = None
) -> list[dict]:
  """D2L beside its control at several checkpoints of one run: the probe logged in training at
  that step, D2L minus control F1 on held-out documents (both phrasings), and NIAH accuracy of D2L
  and its control at each evaluated length. One row per step; printed, and with out_json saved as
  JSON and Markdown."""
  logged = {}
  with open(os.path.join(workdir, "logs", "metrics.jsonl")) as f:
    for line in f:
      record = json.loads(line)
      logged[record["step"]] = record
  # The base model, loaded once for every checkpoint.
  base = hyperlora.load(run_dir.open_run(workdir, "d2l").config.base_model)
  rows = []
  for step in steps:
    result = evaluate(workdir, methods=("d2l",), overrides=overrides, step=step, base=base)
    qa = {r["method"]: r for r in result["qa"]}
    row = {
      "step": step,
      "probe_rel_diff": logged.get(step, {}).get("probe_rel_diff", float("nan")),
      "doc_share": logged.get(step, {}).get("doc_share", float("nan")),
    }
    for p in PHRASINGS:
      row[f"held-out {p} F1: D2L minus control"] = qa[_NAMES["gap"]][f"held-out {p} F1"]
    for r in result.get("niah", []):
      if r["method"] in (_NAMES["d2l"], _NAMES["control"]):
        short = "D2L" if r["method"] == _NAMES["d2l"] else "control"
        row.update({f"NIAH {k.split(' ')[0]} {short}": v for k, v in r.items() if k != "method"})
    rows.append(row)
  print(f"\nlearning curve of {workdir}:")
  print_table(rows, float_format=".4f")
  if out_json:
    with open(out_json, "w") as f:
      json.dump(rows, f, indent=2)
    with open(os.path.splitext(out_json)[0] + ".md", "w") as f:
      f.write(markdown_table(rows, float_format=".4f"))
  return rows
