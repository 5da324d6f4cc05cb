"""The smallest D2L experiment that isolates reading, at SmolLM2 scale: 8 haystacks of one length
(64 tokens) with the needle at one depth, so they differ only in the 4-digit number and share the
question. A hypernetwork that reads memorises all 8 (loss -> 0, probe_rel_diff well above 0); one
whose document path is dead cannot get below the digit prior. Everything else as the main job, one
question per haystack, one chunk; about 3 minutes for 150 steps on 2 CPU cores.

  d2l train --config configs/d2l/smollm2_niah_overfit.py                    # lr 1e-4: reads
  d2l train --config configs/d2l/smollm2_niah_overfit.py --config.train.lr=1e-3 \\
      --config.workdir=runs/d2l_smollm2_niah_overfit_lr1e-3                  # the old lr: collapses
"""

import os

from hyperlora.cli_config import load_config_file


def get_config():
  c = load_config_file(os.path.join(os.path.dirname(__file__), "smollm2_synthetic.py"))
  c.workdir = "runs/d2l_smollm2_niah_overfit"
  c.data.update(
    train_documents=0,
    niah_documents=8,
    niah_min_len=64,
    niah_max_len=64,
    niah_train_depths=(0.5,),
    queries_per_doc=1,
    max_doc_len=96,
  )
  c.train.update(steps=150, chunk_counts=(1,), chunk_probs=(1.0,), log_every=10, ckpt_every=150)
  return c
