"""T2L-L for Mistral-7B-Instruct-v0.2 at the reference's settings, for TPU pods and GPU clusters.

The reference's SFT: q_proj and v_proj at r = 8 (alpha 16, rsLoRA), trunk h = 128 and head_in = 512
(55.4M parameters), 8 tasks x 1 example a step from the Lots-of-LoRAs (Super-NI) training tasks,
gte-large-en-v1.5 task embeddings (1024), AdamW 2.5e-5 with 20% warmup and linear decay, bf16.
Prompts are cut at 512 tokens; the base is rematerialised per layer.

Plan it from any machine (abstract weights from the model's published config.json fields):
  hyperlora plan --config=configs/t2l/mistral7b.py --target=v5e:4x4 --mesh=auto --out=plan.json
On v5e-16 that plan (docs/scale_out.md) fits every mesh whose data x fsdp divides the batch of 8
and picks data 4 x tensor 4 (the mesh below): peak 4.2 GB of 16 per chip, estimated 56 ms a step,
compute bound, MFU 67% (an upper estimate: peak FLOP/s and perfect overlap; not measured on a TPU).
Train it (a local checkpoint directory, the Lots-of-LoRAs tasks, the encoder):
  t2l train --config configs/t2l/mistral7b.py --config.base_model=/ckpt/Mistral-7B-Instruct-v0.2 \\
      --config.data.tasks_dir=/data/lol --config.encoder.path=/ckpt/gte-large-en-v1.5
"""

from t2l_jax.config import base_config


def get_config():
  c = base_config()
  c.base_model = "shapes:mistral-7b-instruct-v0.2"  # a local HF directory to train
  c.workdir = "runs/t2l_mistral7b"
  c.dtype = "bfloat16"
  c.encoder.update(kind="sentence", path="", pooling="cls", dim=1024)
  c.data.update(suite="lol", tasks_per_batch=8, examples_per_task=1, max_len=512, max_answer=64)
  c.train.update(steps=20000, lr=2.5e-5, remat=True, log_every=50, ckpt_every=1000)
  c.baselines.update(lr=2.5e-5)
  c.mesh.update(data=4, fsdp=1, tensor=4)  # `hyperlora plan --mesh=auto`'s pick on v5e-16
  return c
