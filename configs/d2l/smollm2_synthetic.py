"""Main job: D2L for SmolLM2-135M-Instruct on the embedded synthetic biographies (+ NIAH), CPU,
about 30 minutes. To fit two CPU cores (a step near 3 s): features from the state after the first
L // 4 layers (the reference's NIAH setting; only those layers run), a narrower Perceiver than the
reference's (latent 128, 2 blocks), chunk counts {1, 2, 4}, and gold answers scored by the teacher
(SmolLM2-135M's own greedy answers are often wrong, which distillation would copy).

  d2l train --config configs/d2l/smollm2_synthetic.py [--config.train.steps=300 ...]
"""

from d2l_jax.config import base_config


def get_config():
  c = base_config()
  c.workdir = "runs/d2l_smollm2_synthetic"
  c.features = "quarter"
  c.hypernet.update(latent=128, n_latents=16, num_blocks=2, heads=4, kv_heads=2, head_dim=32)
  c.data.update(train_documents=120, niah_documents=40, niah_max_len=160, docs_per_batch=4,
                queries_per_doc=2, max_doc_len=192, max_teacher_len=224, responses="gold")
  c.train.update(steps=250, lr=1e-3, warmup_frac=0.05, chunk_counts=(1, 2, 4),
                 chunk_probs=(0.5, 0.25, 0.25), ckpt_every=50)
  c.eval.update(documents=16, chunk_len=192, niah_chunk_len=160, niah_depths=5, cd_documents=1)
  return c
