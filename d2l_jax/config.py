"""Defaults of every D2L config field (the reference's sizes); experiment files in configs/d2l/
start from these."""

import ml_collections

from d2l_jax.corpus import NIAH_DEPTHS
from d2l_jax.data import REFERENCE_CHUNK_COUNTS, REFERENCE_CHUNK_PROBS


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = "d2l"  # hyperlora.methods: what the core reads instead of guessing from keys
  c.base_model = "smollm2"  # embedded name, HF directory or .gguf
  c.dtype = "float32"  # compute dtype of the base model ('bfloat16': mixed precision)
  c.workdir = "runs/d2l"
  # Context features: 'all_but_last' (every layer's input, the reference's main setting) or
  # 'quarter' (the state after the first L // 4 layers, its NIAH setting).
  c.features = "all_but_last"
  c.hypernet = ml_collections.ConfigDict(
    dict(
      modules=("down_proj",),
      rank=8,
      shared_perceiver=True,
      latent=512,
      n_latents=8,
      num_blocks=9,
      heads=16,
      kv_heads=4,
      head_dim=128,
    )
  )
  # corpus 'synthetic' (the embedded invented biographies) or 'squad' (SQuAD-format JSON in
  # squad_file, split by article: the last squad_held_out_articles held out); niah_documents
  # adds needle-in-a-haystack documents of niah_min_len..niah_max_len tokens with the needle at
  # one of niah_train_depths.
  # responses: 'teacher' (the base model's greedy answer with the document in context, the
  # reference) or 'gold' (the dataset's answer), scored by the teacher's top_k log-probs.
  c.data = ml_collections.ConfigDict(
    dict(
      corpus="synthetic",
      squad_file="",
      squad_held_out_articles=8,  # the last articles by title, held out whole (squad.py)
      train_documents=400,
      niah_documents=0,
      niah_min_len=32,
      niah_max_len=256,
      niah_train_depths=NIAH_DEPTHS,
      docs_per_batch=4,
      queries_per_doc=2,
      max_doc_len=512,
      max_len=64,
      max_teacher_len=640,
      max_answer=16,
      responses="teacher",
      top_k=16,
      teacher_batch=16,
    )
  )
  # loss 'distill' (teacher top-k) or 'ce' (cross-entropy on the responses; the reference's NIAH).
  # init_from: a D2L workdir whose trained hypernetwork this run starts from (a warm start; the
  # optimizer and step start afresh), instead of a fresh initialisation.
  c.train = ml_collections.ConfigDict(
    dict(
      steps=2000,
      lr=4e-5,
      warmup_frac=0.05,
      schedule="cosine",
      weight_decay=0.01,
      clip_norm=1.0,
      loss="distill",
      l1_coef=0.1,
      neftune_alpha=5.0,
      chunk_counts=REFERENCE_CHUNK_COUNTS,
      chunk_probs=REFERENCE_CHUNK_PROBS,
      min_chunk_len=25,
      seed=0,
      init_from="",
      remat=False,
      grad_accum=1,
      log_every=10,
      ckpt_every=100,
      keep_checkpoints=2,
      # Resume a run whose config differs in fields that change training (e.g. more steps);
      # the change is recorded in logs/events.jsonl. Off: such a resume is refused.
      allow_config_change=False,
    )
  )
  # Device mesh and rules overrides, as T2L's (t2l_jax/config.py).
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, rules=()))
  # Evaluation on held-out documents (test phrasings), and NIAH at multiples of niah_max_len,
  # internalised in chunks of chunk_len (chunk_scaling 'none' sums the chunks' deltas as the
  # reference; 'mean' weighs each by 1 / K; 'dedup' counts chunks that are near-copies of one
  # another once: d2l_jax/chunking.py). Context distillation (the per-document LoRA baseline,
  # reference settings: r=8 on down_proj, AdamW 1e-4, 300 steps) runs on the first cd_documents.
  c.eval = ml_collections.ConfigDict(
    dict(
      documents=24,
      train_documents=8,
      chunk_len=8192,
      chunk_scaling="none",
      niah_multiples=(1, 2, 4, 8),
      niah_depths=10,
      niah_chunk_len=256,
      max_new_tokens=32,
      batch=8,
      # Ask these held-out documents instead of the run's own: a SQuAD-format file's paragraphs
      # (all held out), or the synthetic biographies (e.g. what a SQuAD run kept of them).
      squad_file="",
      synthetic=False,
      cd_documents=4,
      cd_steps=300,
      cd_lr=1e-4,
      cd_rank=8,
      cd_alpha=16.0,
      seed=10**6,
    )
  )
  return c
