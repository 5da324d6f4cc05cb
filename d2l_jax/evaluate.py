"""D2L evaluation in one harness: held-out documents' questions (test phrasings) answered by the base
model without the document, with it in context (ICL), with a context-distilled LoRA (CD) and with the
D2L adapter; and needle-in-a-haystack accuracy at multiples of the training length.

Besides exact match and word F1, each method reports its latency per document (preparing the
context + answering) and memory: the context state it keeps (KV cache of the document for ICL, the
adapter for D2L and CD) and the peak of its compiled programs (XLA's buffer assignment: arguments,
outputs and temporaries).
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from hyperlora import generate as gen
from hyperlora.metrics import print_table
from d2l_jax import corpus, scoring, squad, teacher
from d2l_jax.internalize import Internalizer
from d2l_jax.train import ContextDistillation, question_pairs

METHODS = ("base", "icl", "cd", "d2l")
_NAMES = {"base": "base model, no document", "icl": "document in context (ICL)",
          "cd": "context distillation LoRA", "d2l": "D2L adapter"}


def eval_documents(config, cache_dir: str) -> list:
  ec, dc = config.eval, config.data
  if dc.corpus == "squad":
    return squad.load(ec.get("squad_file") or dc.squad_file, cache_dir)[-ec.documents:]
  return corpus.synthetic_corpus(ec.documents, seed=ec.seed)


def program_mb(jitted, *args) -> float:
  """Peak bytes XLA assigns to one compiled program (arguments + outputs + temporaries), in MB."""
  stats = jitted.lower(*args).compile().memory_analysis()
  return (stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes) / 1e6


def kv_cache_mb(model_config, tokens: int, bytes_per_value: int = 4) -> float:
  c = model_config
  return 2 * c.num_layers * c.num_kv_heads * c.head_dim * tokens * bytes_per_value / 1e6


def array_mb(tree) -> float:
  """Bytes held by the arrays of a pytree (an adapter's weights, a KV cache), in MB."""
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)) / 1e6


def adapter_mb(lora) -> float:
  return array_mb(lora.weights)


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
      return self.d2l(doc.text, chunk_len)
    if method == "cd":
      if self._cd is None:
        self._cd = ContextDistillation(self.base, self.config)
      pairs, _ = question_pairs([doc], "study")
      return self._cd(teacher.prepare(self.base, pairs, self.config.data, self.cache_dir))
    return None

  def answer(self, method: str, doc, questions: list[str], chunk_len: int, width: int | None):
    """(answers, seconds to prepare the context, seconds to answer, the adapter)."""
    start = time.perf_counter()
    lora = self.adapter(method, doc, chunk_len)
    jax.block_until_ready(lora)
    prepared = time.perf_counter()
    answers = teacher.greedy_answers(self.base, self.prompts(method, doc.text, questions), width,
                                     self.config.eval.max_new_tokens, self.config.eval.batch, lora,
                                     desc=method)
    return answers, prepared - start, time.perf_counter() - prepared, lora

  def peak_program_mb(self, method: str, doc_tokens: int, lora) -> float:
    """The largest compiled program a method runs to answer: generation for a full batch, and for
    D2L also the feature pass over one chunk (CD's training step is not counted)."""
    ec = self.config.eval
    tokens = jnp.zeros((ec.batch, self.prompt_width(method)), jnp.int32)
    eos = gen.eos_ids_of(self.base.tokenizer, self.base.config)
    peaks = [program_mb(gen.generate, self.base.module(), self.base.params, tokens, tokens > -1,
                        ec.max_new_tokens, lora, None, 0.0, eos)]
    if method == "d2l":
      from d2l_jax import context
      chunk = min(doc_tokens, ec.chunk_len)
      row = jnp.zeros((1, chunk), jnp.int32)
      peaks.append(program_mb(context.features, self.base.module(), self.base.params, row, row > -1,
                              self.d2l.setup.features))
    return max(peaks)


def qa_table(harness: Harness, documents: list, methods) -> list[dict]:
  from tqdm.auto import tqdm

  ec, tok = harness.config.eval, harness.base.tokenizer
  rows = []
  for method in methods:
    docs = documents[:ec.cd_documents] if method == "cd" else documents
    if not docs:
      continue
    f1, em, prep, ans, state = [], [], [], [], []
    for doc in tqdm(docs, desc=f"QA / {method}", leave=False):
      answers, t_prep, t_ans, lora = harness.answer(method, doc, [qa.question for qa in doc.test],
                                                    ec.chunk_len, harness.prompt_width(method))
      f1 += [scoring.best(scoring.word_f1, a, qa.answers) for a, qa in zip(answers, doc.test)]
      em += [scoring.best(scoring.exact_match, a, qa.answers) for a, qa in zip(answers, doc.test)]
      prep.append(t_prep)
      ans.append(t_ans)
      n_tokens = len(tok(doc.text, add_special_tokens=False)["input_ids"])
      state.append(kv_cache_mb(harness.base.config, n_tokens) if method == "icl"
                   else adapter_mb(lora) if lora is not None else 0.0)
    rows.append({"method": _NAMES[method], "documents": len(docs), "exact match": float(np.mean(em)),
                 "F1": float(np.mean(f1)), "prepare s/doc": float(np.mean(prep[1:] or prep)),
                 "answer s/doc": float(np.mean(ans[1:] or ans)), "context state MB": float(np.mean(state)),
                 "peak program MB": harness.peak_program_mb(method, n_tokens, lora)})
  return rows


def niah_table(harness: Harness, methods) -> list[dict]:
  """Accuracy (the needle's number in the answer) at multiples of the training haystack length."""
  from tqdm.auto import tqdm

  ec, dc, tok = harness.config.eval, harness.config.data, harness.base.tokenizer
  depths = np.linspace(0.0, 1.0, ec.niah_depths)
  rows = []
  for method in [m for m in methods if m in ("base", "icl", "d2l")]:
    row = {"method": _NAMES[method]}
    for multiple in ec.niah_multiples:
      length = dc.niah_max_len * multiple
      hits = []
      for i, depth in enumerate(tqdm(depths, desc=f"NIAH {length} / {method}", leave=False)):
        doc = corpus.niah_document(tok, length, float(depth), seed=ec.seed + 1000 * multiple + i)
        answers, *_ = harness.answer(method, doc, [doc.test[0].question], ec.niah_chunk_len, None)
        hits.append(float(doc.test[0].answers[0] in answers[0]))
      row[f"{multiple}x ({length} tok)"] = float(np.mean(hits))
    rows.append(row)
  return rows


def evaluate(workdir: str, out_json: str | None = None, methods=METHODS, niah: bool = True,
             overrides: dict | None = None) -> dict:
  """Both tables for a `d2l train` workdir; `overrides` replace fields of its config.eval."""
  unknown = sorted(set(methods) - set(METHODS))
  if unknown:
    raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
  harness = Harness(Internalizer(workdir))
  harness.config.eval.update(overrides or {})
  documents = eval_documents(harness.config, harness.cache_dir)
  result = {"workdir": workdir, "qa": qa_table(harness, documents, methods)}
  print(f"held-out documents ({len(documents)}), test phrasings of their questions:")
  print_table(result["qa"])
  if niah and harness.config.data.niah_documents:
    result["niah"] = niah_table(harness, methods)
    print(f"\nneedle in a haystack, accuracy over {harness.config.eval.niah_depths} depths "
          f"(trained on haystacks up to {harness.config.data.niah_max_len} tokens, D2L chunk "
          f"{harness.config.eval.niah_chunk_len}):")
    print_table(result["niah"])
  if out_json:
    os.makedirs(os.path.dirname(os.path.abspath(out_json)), exist_ok=True)
    with open(out_json, "w") as f:
      json.dump(result, f, indent=2)
  return result
