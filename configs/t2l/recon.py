"""T2L by reconstruction of a LoRA library (one PEFT adapter per training task) for SmolLM2.

t2l library --config configs/t2l/smollm2_suite.py --config.baselines.oracle_steps=60 --out runs/lib
t2l train --config configs/t2l/recon.py --config.recon.library=runs/lib
"""

from t2l_jax.config import base_config


def get_config():
  c = base_config()
  c.mode = "recon"
  c.workdir = "runs/t2l_smollm2_recon"
  c.recon.loss = "factors"
  c.train.update(steps=1000, lr=1e-3, log_every=50, ckpt_every=250)
  c.baselines.update(multitask=False)
  return c
