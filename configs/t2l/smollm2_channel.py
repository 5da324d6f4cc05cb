"""Main job: T2L-L for SmolLM2-135M-Instruct on the description-channel suite, CPU.

The prompt never names the task (t2l_jax/channel_suite.py): add_7, add_8 and subtract_7 get the
same prompts, so only the description can tell them apart. Baselines on the same batches and
steps: the multi-task LoRA (same prompts: it cannot know the task) and the multi-task LoRA with
the description in its prompt (the text channel).

t2l train --config configs/t2l/smollm2_channel.py
t2l eval --checkpoint runs/t2l_smollm2_channel --out runs/t2l_smollm2_channel/eval.json
"""

from t2l_jax import channel_suite
from t2l_jax.config import base_config


def get_config():
  c = base_config()
  c.workdir = "runs/t2l_smollm2_channel"
  c.data.update(
    suite="channel",
    held_out=channel_suite.HELD_OUT,
    held_out_families=(),
    extrapolation=channel_suite.EXTRAPOLATION,
    train_descriptions=channel_suite.TRAIN_DESCRIPTIONS,
    max_len=48,
    described_max_len=64,
    max_answer=16,
  )
  # 240 steps of 8 (tasks x 1 example) for T2L and for each multi-task LoRA: what fits about 35
  # minutes of training on 2 CPU cores (about 3 s a step). Checkpoints every 60 steps are kept
  # for a learning curve. Oracles are one more command (--config.baselines.oracle_steps=240 on the
  # same workdir: 240 steps of 8 examples of each task in oracle_tasks, T2L's steps x batch).
  c.train.update(steps=240, ckpt_every=60, keep_checkpoints=5)
  c.baselines.update(
    multitask_described=True,
    oracle_steps=0,
    oracle_tasks=("add_12", "add_19", "subtract_8", "first_3_words"),
  )
  c.eval.update(examples_per_task=32, seen_tasks=8, max_new_tokens=10, rouge=False)
  return c
