"""Main job: T2L-L for SmolLM2-135M-Instruct on the embedded generated suite, CPU, ~30 minutes.

t2l train --config configs/t2l/smollm2_suite.py [--config.train.steps=300 ...]
"""

from t2l_jax.config import base_config


def get_config():
  c = base_config()
  c.workdir = "runs/t2l_smollm2_suite"
  return c
