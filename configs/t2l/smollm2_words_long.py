"""The T2L main job trained twice as long: 960 steps of 8, checkpoints every 240 for `t2l curve`.

At 3e-4 the main job's learning curve (480 steps) had not flattened: T2L reads k for held-out
siblings late (docs/t2l.md). This config extends that curve: same suite, prompts, held-out
tasks, batches and the learning rate its figures were measured with.

t2l train --config configs/t2l/smollm2_words_long.py
t2l curve --checkpoint runs/t2l_smollm2_words_long --steps 240,480,720,960 \\
  --out runs/t2l_smollm2_words_long/curve.json
t2l eval --checkpoint runs/t2l_smollm2_words_long --out runs/t2l_smollm2_words_long/eval.json

About 32 minutes of T2L on 2 free CPU cores (2 s a step), as much again for the multi-task LoRA
on the same 960 x 8 examples and 16 for the main job's four oracle LoRAs
(`--config.baselines.multitask=False --config.baselines.oracle_steps=0` skip them when only the
curve is wanted).
"""

import os

from hyperlora.cli_config import load_config_file


def get_config():
  c = load_config_file(os.path.join(os.path.dirname(__file__), "smollm2_words.py"))
  c.workdir = "runs/t2l_smollm2_words_long"
  c.train.update(steps=960, ckpt_every=240, keep_checkpoints=4)
  return c
