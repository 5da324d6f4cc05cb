"""Main job: T2L-L for SmolLM2-135M-Instruct on the description-channel suite, CPU.

The prompt never names the task (t2l_jax/channel_suite.py): add_7, add_8 and subtract_7 get the
same prompts, so only the description can tell them apart. Baselines on the same batches and
steps: the multi-task LoRA (same prompts: it cannot know the task) and the multi-task LoRA with
the description in its prompt (the text channel); oracle LoRAs for four held-out tasks.

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
    max_len=64,
    max_answer=16,
  )
  c.baselines.update(
    multitask_described=True,
    oracle_steps=0,
    oracle_tasks=("add_12", "add_19", "subtract_8", "first_3_words"),
  )
  c.eval.update(examples_per_task=32, seen_tasks=8, max_new_tokens=10, rouge=False)
  return c
