"""NIAH far past the training length (issue 20, item 5): the NIAH run continued on haystacks cut
into up to 8 chunks, so that an adapter made of many chunks is what training sees.

configs/d2l/smollm2_niah_long.py trains on 1 to 4 chunks of 64..128-token haystacks. At 32 chunks
its held-out accuracy falls to 0.1: each haystack chunk adds a delta of about the same direction
(norm 3 each, the whole adapter's norm grows linearly with K) and the needle's chunk (norm 10) is
drowned (docs/d2l.md). A hypernetwork only learns to give chunks without the needle a small delta
if it is trained on adapters where most chunks are such chunks. Changes from smollm2_niah_long.py:
- warm start from its run (train.init_from), 400 more steps over 3,200 new haystacks;
- haystacks of 128..256 tokens cut into 1, 2, 4 or 8 chunks (8 most often) of at least 32 tokens
  (shorter chunks would often cut the needle's sentence in two);
- evaluation lengths in tokens: --niah-multiples 1,2,4,16 of 256 tokens are 256 .. 4,096 tokens,
  16 .. 32 chunks of 128 (the 1x .. 32x of smollm2_niah_long.py).

  d2l train --config configs/d2l/smollm2_niah_chunks.py
  d2l eval --checkpoint runs/d2l_smollm2_niah_chunks --methods base,d2l --documents 2 \\
    --train-documents 0 --niah-multiples 1,2,4,16 --out runs/d2l_smollm2_niah_chunks/niah_far.json
"""

import os

from hyperlora.cli_config import load_config_file


def get_config():
  c = load_config_file(os.path.join(os.path.dirname(__file__), "smollm2_niah_long.py"))
  c.workdir = "runs/d2l_smollm2_niah_chunks"
  c.data.update(niah_documents=3200, niah_min_len=128, niah_max_len=256, max_doc_len=288)
  c.train.update(
    steps=400,
    init_from="runs/d2l_smollm2_niah_long",
    chunk_counts=(1, 2, 4, 8),
    chunk_probs=(0.1, 0.2, 0.3, 0.4),
    min_chunk_len=32,
    ckpt_every=100,
    keep_checkpoints=4,
  )
  c.eval.update(niah_multiples=(1, 2, 4, 16))
  return c
