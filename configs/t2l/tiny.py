"""T2L on a tiny base model, for tests and quick checks (well under a second per step on CPU).

t2l train --config configs/t2l/tiny.py --config.base_model=/path/to/tiny_hf_dir
"""

from t2l_jax.config import base_config


def get_config():
  c = base_config()
  c.base_model = ""  # A small HF directory: set on the command line.
  c.workdir = "runs/t2l_tiny"
  c.hypernet.update(latent=32, head_in=64, dropout=0.0)
  c.data.update(tasks_per_batch=4, examples_per_task=2, max_len=160, max_answer=48)
  # No NEFTune or LoRA dropout: noise of the reference's size swamps a tiny random model's
  # embeddings (std 0.02), and the tests need a few steps to learn.
  c.train.update(steps=40, lr=3e-3, log_every=5, ckpt_every=20, neftune_alpha=0.0, lora_dropout=0.0)
  c.baselines.update(oracle_steps=0)
  c.eval.update(examples_per_task=8, max_new_tokens=6)
  return c
