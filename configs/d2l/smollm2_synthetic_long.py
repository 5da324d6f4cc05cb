"""The D2L main job trained longer: 1000 steps on twice the haystacks (about 60 minutes on 2 CPU
cores), to see how document dependence grows with steps. Everything else as the main job.

  d2l train --config configs/d2l/smollm2_synthetic_long.py
  d2l eval --checkpoint runs/d2l_smollm2_synthetic_long --out runs/d2l_smollm2_synthetic_long/eval.json
"""

import os

from hyperlora.cli_config import load_config_file


def get_config():
  c = load_config_file(os.path.join(os.path.dirname(__file__), "smollm2_synthetic.py"))
  c.workdir = "runs/d2l_smollm2_synthetic_long"
  c.data.niah_documents = 400
  c.train.update(steps=1000, ckpt_every=100, keep_checkpoints=10)
  return c
