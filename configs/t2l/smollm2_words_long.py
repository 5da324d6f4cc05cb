"""The T2L main job trained twice as long: 960 steps of 8, checkpoints every 240 for `t2l curve`.

The main job (smollm2_words.py, 480 steps) meets the in-range target T2L minus sibling control
>= 0.15 but not 0.3, and its learning curve had not flattened at 480 steps; this config extends
the curve. Same suite, prompts, held-out tasks, batches and learning rate.

t2l train --config configs/t2l/smollm2_words_long.py
t2l curve --checkpoint runs/t2l_smollm2_words_long --steps 240,480,720,960 \\
  --out runs/t2l_smollm2_words_long/curve.json
t2l eval --checkpoint runs/t2l_smollm2_words_long --out runs/t2l_smollm2_words_long/eval.json

About 50 minutes of T2L on 2 CPU cores, and as much again for the multi-task LoRA on the same
960 x 8 examples (`--config.baselines.multitask=False` skips it when only the curve is wanted).
"""

import os

from hyperlora.cli_config import load_config_file


def get_config():
  c = load_config_file(os.path.join(os.path.dirname(__file__), "smollm2_words.py"))
  c.workdir = "runs/t2l_smollm2_words_long"
  c.train.update(steps=960, ckpt_every=240, keep_checkpoints=4)
  return c
