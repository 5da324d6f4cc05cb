"""Defaults of every T2L config field; experiment files in configs/t2l/ start from these."""

import ml_collections

from t2l_jax.tasks import HELD_OUT


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.base_model = "smollm2"  # embedded name, HF directory or .gguf
  c.dtype = "float32"  # compute dtype of the base model ('bfloat16': mixed precision; the
  # hypernetwork and optimizer state stay float32)
  c.workdir = "runs/t2l"

  # Task encoder: 'sentence' (HF encoder dir, or 'minilm' = the embedded all-MiniLM-L6-v2) or
  # 'base' (the base LLM's own hidden state; pooling 'last' or 'mean').
  c.encoder = ml_collections.ConfigDict(dict(kind="sentence", path="minilm", pooling="mean"))
  c.hypernet = ml_collections.ConfigDict(
    dict(
      variant="L",
      modules=("q_proj", "v_proj"),
      rank=8,
      lora_alpha=16.0,
      latent=128,
      head_in=512,
      dropout=0.05,
    )
  )
  # suite 'generated' (embedded) or 'lol' (Lots-of-LoRAs format under tasks_dir, see lol_data.py).
  c.data = ml_collections.ConfigDict(
    dict(
      suite="generated",
      tasks_dir="",
      num_tasks=0,
      max_train_tasks=0,
      held_out=HELD_OUT,
      train_descriptions=10,
      tasks_per_batch=8,
      examples_per_task=1,
      max_len=80,
      max_answer=24,
    )
  )
  c.train = ml_collections.ConfigDict(
    dict(
      steps=300,
      lr=3e-4,
      warmup_frac=0.2,
      weight_decay=0.01,
      clip_norm=1.0,
      label_smoothing=0.1,
      l2_coef=1e-3,
      seed=0,
      remat=False,
      grad_accum=1,
      lora_shard_map=False,
      log_every=10,
      ckpt_every=50,
      keep_checkpoints=2,
    )
  )
  # Device mesh (data, fsdp, tensor); one axis may be -1 (all remaining devices). rules: pairs
  # (logical axis name, mesh axis or None) that override hyperlora.sharding.RULES.
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, rules=()))
  # Baselines trained after T2L, on the same batches: one LoRA for all training tasks, and one LoRA
  # per held-out task trained on that task (the upper bound T2L is compared with).
  c.baselines = ml_collections.ConfigDict(dict(multitask_steps=100, oracle_steps=0, lr=3e-4))
  # mode 'recon': learn to reproduce a library of per-task LoRAs (PEFT dirs named by task, e.g.
  # from `t2l library`), with L1 on the factors ('factors') or on dW = B A ('delta').
  c.mode = "sft"
  c.recon = ml_collections.ConfigDict(dict(library="", loss="factors"))
  c.eval = ml_collections.ConfigDict(
    dict(examples_per_task=16, max_new_tokens=12, seed=1234, seen_tasks=4)
  )
  return c
