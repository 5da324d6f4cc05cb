"""Main job: T2L-L for SmolLM2-135M-Instruct on the word-count families of the description-channel
suite (first_k_words, last_k_words, k = 1..8), CPU.

Every task takes the same inputs (10-12-word sentences) under the same prompt, so only the
description says which k and which end: first_3_words, first_4_words and last_3_words get the same
prompts. Held out in range: first 3 and 6, last 4 and 7 words. Baseline on the same batches and
steps: the multi-task LoRA (same prompts: it cannot know the task); an oracle LoRA per held-out
task; the multi-task LoRA with the description in its prompt (the text channel) is a flag, below.

t2l train --config configs/t2l/smollm2_words.py
t2l eval --checkpoint runs/t2l_smollm2_words --out runs/t2l_smollm2_words/eval.json
"""

import os

from hyperlora.cli_config import load_config_file


def get_config():
  c = load_config_file(os.path.join(os.path.dirname(__file__), "smollm2_channel.py"))
  c.workdir = "runs/t2l_smollm2_words"
  c.data.update(
    families=("first_k_words", "last_k_words"), extrapolation=(), max_len=56, described_max_len=72
  )
  # 480 steps of 8 (tasks x 1 example), T2L and the multi-task LoRA each (about 2 s a step on 2
  # free CPU cores: 16 minutes each): T2L fits its training tasks well before it reaches held-out k
  # (docs/t2l.md, "T2L main job", the learning curve). Checkpoints every 120 steps for `t2l curve`.
  # The described multi-task LoRA (the text channel) is one flag,
  # --config.baselines.multitask_described=True: about 16 more minutes.
  c.train.update(steps=480, ckpt_every=120, keep_checkpoints=4)
  # Oracle LoRAs of the four held-out tasks, 120 steps of 8 examples of one task each: 960
  # examples of it, three times what T2L saw of each training task (480 x 8 / 12 = 320).
  c.baselines.update(
    multitask_described=False,
    oracle_steps=120,
    oracle_tasks=("first_3_words", "first_6_words", "last_4_words", "last_7_words"),
  )
  c.eval.update(seen_tasks=6)
  return c
