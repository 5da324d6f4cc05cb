"""Biographies: D2L trained on the embedded invented biographies alone, warm-started from the
hypernetwork that learnt to read haystacks (configs/d2l/smollm2_niah_long.py), on 2 CPU cores.

Why a warm start: trained from scratch, a batch of biographies beside haystacks learnt neither in
650 steps (docs/d2l.md, "Why D2L ignored documents"); the NIAH run needed 1,000 steps before its
adapters carried a 4-digit number at all. Starting from that hypernetwork, whose document path
already writes what it reads into the adapter, this run only has to learn which facts a biography's
questions ask for. Each of 8,000 distinct biographies is seen about once (8 a step, 2 of their 7
study questions each), so memorising them cannot lower the loss and only reading can.

  d2l train --config configs/d2l/smollm2_niah_long.py        # the starting point (if not done)
  d2l train --config configs/d2l/smollm2_bios.py
  d2l eval --checkpoint runs/d2l_smollm2_bios --out runs/d2l_smollm2_bios/eval.json
"""

import os

from hyperlora.cli_config import load_config_file


def get_config():
  c = load_config_file(os.path.join(os.path.dirname(__file__), "smollm2_synthetic.py"))
  c.workdir = "runs/d2l_smollm2_bios"
  c.data.update(train_documents=8000, niah_documents=0, queries_per_doc=2)
  c.train.update(
    steps=1000,
    init_from="runs/d2l_smollm2_niah_long",
    chunk_counts=(1, 2),
    chunk_probs=(0.8, 0.2),
    ckpt_every=250,
    keep_checkpoints=4,
  )
  c.eval.update(documents=24)
  return c
