"""D2L meta-training (distillation or CE) and the context-distillation baseline, from one config."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from d2l_jax import context, corpus, diagnostics, squad, teacher
from d2l_jax import model as d2l_model
from d2l_jax.data import DocBatches
from hyperlora import lora as lora_lib
from hyperlora import run_dir, sharding, train_checkpoints
from hyperlora import train as train_lib
from hyperlora.metrics import MetricWriter

log = logging.getLogger(__name__)
LOSSES = ("distill", "ce")


# Saved-config fields a resumed run (or a user of the checkpoint) must share with it.
RESUME_KEYS = {
  "spec": "hypernetwork / adapter shape",
  "base_model": "base model",
  "features": "context feature layers",
}
# D2L fields a resumed run may change besides the core's (train_checkpoints.FREE_KEYS): the warm
# start is read only when there is nothing to resume; the teacher batch only groups the targets'
# computation.
FREE_KEYS = ("train.init_from", "data.teacher_batch")


def squad_split(config, cache_dir: str) -> tuple[list, list]:
  """(training, held-out) paragraphs of the run's SQuAD file, split by article."""
  documents = squad.load(config.data.squad_file, cache_dir)
  return squad.split_articles(documents, config.data.squad_held_out_articles)


def training_documents(setup, config, cache_dir: str) -> list:
  dc = config.data
  if dc.corpus == "synthetic":
    documents = corpus.synthetic_corpus(dc.train_documents, seed=config.train.seed)
  elif dc.corpus == "squad":
    documents = squad_split(config, cache_dir)[0][: dc.train_documents or None]
    # Real paragraphs vary in length (SQuAD's run to 770 tokens); training skips the few longer
    # than one max_doc_len chunk instead of padding every batch to the longest.
    fits = [
      d
      for d in documents
      if len(context.content_tokens(setup.base.tokenizer, d.text)) <= dc.max_doc_len
    ]
    if len(fits) < len(documents):
      log.info(
        "%d training paragraphs longer than data.max_doc_len skipped", len(documents) - len(fits)
      )
    documents = fits
  else:
    raise ValueError(
      f"unknown corpus {dc.corpus!r}; choose 'synthetic' or 'squad' (data.squad_file)"
    )
  if dc.niah_documents:
    documents += corpus.niah_corpus(
      setup.base.tokenizer,
      dc.niah_documents,
      dc.niah_max_len,
      seed=config.train.seed + 7 * 10**6,
      min_tokens=dc.niah_min_len,
      depths=dc.niah_train_depths,
    )
  return documents


def question_pairs(documents, which: str = "study") -> tuple[list, np.ndarray]:
  """(document, QA) for every question of every document, and each pair's document index."""
  pairs = [(doc, qa) for doc in documents for qa in getattr(doc, which)]
  doc_index = np.asarray([i for i, doc in enumerate(documents) for _ in getattr(doc, which)])
  return pairs, doc_index


def check_targets(config) -> None:
  """The two reference settings: the teacher's own answers distilled ('teacher' + 'distill', main
  setting) or gold answers with cross-entropy ('gold' + 'ce', NIAH setting)."""
  tc, dc = config.train, config.data
  if tc.loss not in LOSSES:
    raise ValueError(f"train.loss must be one of {LOSSES}, not {tc.loss!r}")
  if tc.loss == "distill" and dc.responses == "gold":
    raise ValueError(
      "data.responses='gold' with train.loss='distill' scores the gold answers with the "
      "teacher's top-k, which rarely ranks a gold token first, so the student never learns "
      "to start or end an answer; use data.responses='teacher' (distill the teacher's own "
      "answers) or train.loss='ce' (cross-entropy on the gold answers)"
    )


def probe_documents(config, tokenizer, documents: list) -> list[str]:
  """Two documents for the training probe: haystacks that differ only in the needle's number when
  the corpus has NIAH documents (the question is then the same, so only the document can tell the
  answer), otherwise the first two training documents."""
  dc = config.data
  if dc.niah_documents:
    length = min(dc.niah_max_len, dc.max_doc_len)
    return [corpus.niah_document(tokenizer, length, 0.5, seed=s).text for s in (1, 2)]
  return [d.text for d in documents[:2]]


def start_params(setup, saved: dict, init_from: str):
  """A warm start: the trained params of the D2L run in `init_from` (its latest checkpoint), which
  must agree with this run's saved config `saved` where a resumed run must (RESUME_KEYS)."""
  source = run_dir.open_run(init_from, "d2l")
  difference = train_checkpoints.config_difference(source.saved, saved, RESUME_KEYS)
  if difference:
    raise ValueError(
      f"train.init_from={init_from!r} is a run of another hypernetwork or base ({difference}); "
      "give the workdir of a run with this config's hypernet sizes, base model and features, "
      "or leave init_from empty"
    )
  return lambda: setup.restore(source)


def training_batches(setup, config, cache_dir: str | None) -> DocBatches:
  """The batches `train` steps through: the training documents, their study questions and the
  targets (the teacher's top-k only when the loss uses them)."""
  tc, dc = config.train, config.data
  documents = training_documents(setup, config, cache_dir)
  if dc.responses == "gold":
    documents = teacher.with_fitting_gold(setup.base.tokenizer, documents, dc.max_answer)
  pairs, pair_doc = question_pairs(documents)
  targets = teacher.prepare(setup.base, pairs, dc, cache_dir, with_top_k=tc.loss == "distill")
  return DocBatches(
    documents,
    targets,
    pair_doc,
    setup.base.tokenizer,
    docs_per_batch=dc.docs_per_batch,
    queries_per_doc=dc.queries_per_doc,
    max_doc_len=dc.max_doc_len,
    chunk_counts=tc.chunk_counts,
    chunk_probs=tc.chunk_probs,
    min_chunk_len=tc.min_chunk_len,
    seed=tc.seed,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )


def train_parts(config, base_model, adapter_fn):
  """(loss_fn, optimizer) of D2L meta-training: what `train` runs and what `hyperlora plan`
  compiles."""
  tc = config.train
  loss_fn = train_lib.lm_loss_fn(
    base_model,
    adapter_fn,
    d2l_model.l1_penalty(tc.l1_coef),
    answer_loss=d2l_model.answer_loss(tc.loss),
    neftune_alpha=tc.neftune_alpha,
  )
  return loss_fn, d2l_model.optimizer(tc)


def train(config) -> str:
  """Meta-trains D2L into config.workdir; returns the workdir."""
  tc, dc = config.train, config.data
  check_targets(config)
  setup = d2l_model.build(config)
  paths = run_dir.paths(config.workdir)
  batches = training_batches(setup, config, paths["cache"])
  documents = batches.documents
  log.info(
    "D2L hypernetwork: %s parameters; base %s; %d documents, %d questions",
    f"{sum(x.size for x in jax.tree.leaves(jax.eval_shape(lambda: setup.init_params(0)))):,}",
    setup.base.config.name,
    len(documents),
    len(batches.targets["tokens"]),
  )
  mesh, rules, base_params = sharding.place(setup.base, config.mesh)
  dtype = jnp.dtype(config.dtype)
  loss_fn, optimizer = train_parts(
    config, setup.base.module(dtype, remat=tc.remat), setup.adapter_fn(dtype)
  )
  probe = diagnostics.make_probe(
    setup, probe_documents(config, setup.base.tokenizer, documents), dc.max_doc_len
  )
  writer = MetricWriter(paths["logs"])
  saved = run_dir.saved_config(config, "d2l", setup.spec)
  train_lib.run(
    loss_fn=loss_fn,
    optimizer=optimizer,
    init_params=lambda: setup.init_params(tc.seed),
    batches=batches,
    steps=tc.steps,
    directory=paths["checkpoints"],
    config_json=saved,
    resume_keys=RESUME_KEYS,
    free_keys=FREE_KEYS,
    allow_config_change=tc.allow_config_change,
    seed=tc.seed,
    mesh=mesh,
    rules=rules,
    base_params=base_params,
    writer=writer,
    desc="d2l",
    log_every=tc.log_every,
    ckpt_every=tc.ckpt_every,
    keep=tc.keep_checkpoints,
    probe=probe,
    start_params=start_params(setup, saved, tc.init_from) if tc.init_from else None,
  )
  writer.close()
  return config.workdir


class ContextDistillation:
  """The per-document baseline: a LoRA (r, down_proj) trained by gradient descent to make the base
  model without the document answer like the teacher with it, on the document's study questions."""

  def __init__(self, base, config):
    ec = config.eval
    self.base, self.steps, self.rank = base, ec.cd_steps, ec.cd_rank
    self.scale = lora_lib.standard_scale(ec.cd_alpha, ec.cd_rank)
    self.modules = tuple(config.hypernet.modules)
    self.optimizer = train_lib.make_optimizer(
      ec.cd_lr, ec.cd_steps, warmup_frac=0.0, schedule="linear"
    )
    loss_fn = train_lib.lm_loss_fn(
      base.module(),
      train_lib.direct_adapter_fn(self.scale),
      answer_loss=d2l_model.answer_loss(config.train.loss),
    )
    self._step = jax.jit(train_lib.make_train_step(loss_fn, self.optimizer), donate_argnums=0)

  def __call__(self, targets: dict, seed: int = 0) -> lora_lib.LoRA:
    batch = {k: jnp.asarray(v) for k, v in targets.items() if k != "responses"}
    params = lora_lib.init(
      jax.random.key(seed), self.base.config, self.modules, self.rank, self.scale
    ).weights
    state = train_lib.init_state(params, self.optimizer, seed)
    for _ in tqdm(range(self.steps), desc="context distillation", leave=False):
      state, metrics = self._step(state, self.base.params, batch)
    train_lib.check_finite(jax.device_get(metrics), self.steps)
    return lora_lib.LoRA(state.params, self.scale)
