"""D2L on a tiny base model, for tests and quick checks: the reference's main setting (the
teacher's own greedy answers, distilled from its top-k) on a few biographies and haystacks.

  d2l train --config configs/d2l/tiny.py --config.base_model=/path/to/tiny_hf_dir
"""

from d2l_jax.config import base_config


def get_config():
  c = base_config()
  c.base_model = ""  # A small HF directory: set on the command line.
  c.workdir = "runs/d2l_tiny"
  c.hypernet.update(latent=32, n_latents=4, num_blocks=1, heads=4, kv_heads=2, head_dim=8)
  c.data.update(
    train_documents=16,
    niah_documents=4,
    niah_max_len=96,
    docs_per_batch=4,
    queries_per_doc=2,
    max_doc_len=320,
    max_len=96,
    max_teacher_len=448,
    max_answer=16,
    responses="teacher",
    teacher_batch=8,
  )
  # No NEFTune: its noise (alpha / sqrt(seq * d)) is as large as a tiny model's embeddings.
  c.train.update(
    steps=30,
    lr=1e-3,
    l1_coef=0.0,
    neftune_alpha=0.0,
    warmup_frac=0.1,
    chunk_counts=(1, 2),
    chunk_probs=(0.5, 0.5),
    log_every=5,
    ckpt_every=15,
  )
  c.eval.update(
    documents=4,
    train_documents=2,
    chunk_len=64,
    niah_multiples=(1, 2),
    niah_depths=2,
    niah_chunk_len=96,
    max_new_tokens=6,
    cd_documents=1,
    cd_steps=10,
  )
  return c
