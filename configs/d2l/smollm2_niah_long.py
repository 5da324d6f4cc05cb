"""The main job's recipe, longer and trained on several chunks: what it takes on 2 CPU cores for
the needle-in-a-haystack targets. Measured on a 2-core machine shared with another job: training
77 minutes, evaluation 17.5. Held-out haystacks (10 per length): D2L 1.0 / 0.8 / 0.9 at 1x / 2x /
4x the training length, its control (another haystack's adapter) 0.0 at every length (docs/d2l.md).

Changes from configs/d2l/smollm2_synthetic.py, and why:
- 1,500 steps over 12,000 distinct haystacks (each still seen about once): the main job's training
  loss was still falling at its last step.
- 1 to 4 chunks per haystack, and haystacks of 64..128 tokens with chunks of at least 16 tokens.
  In the main job a batch's chunk count is capped by its shortest haystack (32 tokens and 25-token
  chunks), so nearly every batch had one chunk, and an adapter made of 4 chunks (the 4x
  evaluation) was never trained for.
- 10 held-out haystacks per length in the evaluation, for tighter intervals.

  d2l train --config configs/d2l/smollm2_niah_long.py
  d2l eval --checkpoint runs/d2l_smollm2_niah_long --out runs/d2l_smollm2_niah_long/eval.json
"""

import os

from hyperlora.cli_config import load_config_file


def get_config():
  c = load_config_file(os.path.join(os.path.dirname(__file__), "smollm2_synthetic.py"))
  c.workdir = "runs/d2l_smollm2_niah_long"
  c.data.update(niah_documents=12000, niah_min_len=64, niah_max_len=128)
  c.train.update(
    steps=1500,
    chunk_counts=(1, 2, 3, 4),
    chunk_probs=(0.4, 0.2, 0.2, 0.2),
    min_chunk_len=16,
    ckpt_every=250,
    keep_checkpoints=7,
  )
  c.eval.update(niah_depths=10)
  return c
