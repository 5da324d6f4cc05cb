"""Defaults of every T2L config field; experiment files in configs/t2l/ start from these."""

import ml_collections

from t2l_jax.tasks import HELD_OUT, HELD_OUT_FAMILIES


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = "t2l"  # hyperlora.methods: what the core reads instead of guessing from keys
  c.base_model = "smollm2"  # embedded name, HF directory or .gguf
  c.dtype = "float32"  # compute dtype of the base model ('bfloat16': mixed precision; the
  # hypernetwork and optimizer state stay float32)
  c.workdir = "runs/t2l"

  # Task encoder: 'sentence' (HF encoder dir, or 'minilm' = the embedded all-MiniLM-L6-v2) or
  # 'base' (the base LLM's own hidden state; pooling 'last' or 'mean'). dim: the embedding width
  # for `hyperlora plan` when the encoder is not on this machine (0: read it from the encoder).
  c.encoder = ml_collections.ConfigDict(dict(kind="sentence", path="minilm", pooling="mean", dim=0))
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
  # suite 'generated' (embedded; the task's definition in the prompt), 'channel' (embedded; the
  # prompt does not name the task, t2l_jax/channel_suite.py) or 'lol' (Lots-of-LoRAs format under
  # tasks_dir, see lol_data.py). extrapolation: held-out siblings past the trained range.
  c.data = ml_collections.ConfigDict(
    dict(
      suite="generated",
      tasks_dir="",
      num_tasks=0,
      families=(),  # only these task families of the suite (empty: all)
      max_train_tasks=0,
      held_out=HELD_OUT,  # sibling held-out tasks (t2l_jax/tasks.py)
      held_out_families=HELD_OUT_FAMILIES,  # whole families held out
      extrapolation=(),
      train_descriptions=10,
      tasks_per_batch=8,
      examples_per_task=1,
      max_len=80,
      max_answer=24,
      # Width of the prompts that carry the description as text (baselines.multitask_described);
      # 0: max_len.
      described_max_len=0,
    )
  )
  c.train = ml_collections.ConfigDict(
    dict(
      steps=300,
      lr=3e-4,
      warmup_frac=0.2,
      schedule="linear",  # linear decay after warmup (the reference T2L's)
      weight_decay=0.01,
      clip_norm=1.0,
      label_smoothing=0.1,
      # L2 on the generated factors (the hypernetwork's outputs only; not on baselines' LoRAs).
      l2_coef=1e-3,
      # The reference's regularisers, in every run here (T2L and its baselines): NEFTune noise on
      # the input embeddings and dropout on the adapters' inputs (PEFT's lora_dropout).
      neftune_alpha=5.0,
      lora_dropout=0.05,
      seed=0,
      remat=False,
      grad_accum=1,
      lora_shard_map=False,
      log_every=10,
      ckpt_every=50,
      keep_checkpoints=2,
      # Resume a run whose config differs in fields that change training (e.g. more steps);
      # the change is recorded in logs/events.jsonl. Off: such a resume is refused.
      allow_config_change=False,
    )
  )
  # Device mesh (data, fsdp, tensor); one axis may be -1 (all remaining devices). rules: pairs
  # (logical axis name, mesh axis or None) that override hyperlora.sharding.RULES.
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, rules=()))
  # Baselines trained after T2L. multitask: one LoRA for all training tasks, on T2L's batches for
  # T2L's steps (the same budget, steps x batch, as the reference's equal epochs). oracle_steps > 0:
  # one LoRA per held-out task, each trained on its own task alone for that many steps of
  # tasks_per_batch x examples_per_task examples (the upper bound T2L is compared with).
  # multitask_described: also a multi-task LoRA whose prompts carry the description as text (same
  # batches and steps). oracle_tasks: the held-out tasks that get an oracle (empty: all).
  c.baselines = ml_collections.ConfigDict(
    dict(multitask=True, multitask_described=False, oracle_steps=0, oracle_tasks=(), lr=3e-4)
  )
  # mode 'recon': learn to reproduce a library of per-task LoRAs (PEFT dirs named by task, e.g.
  # from `t2l library`), with L1 on the factors ('factors') or on dW = B A ('delta').
  c.mode = "sft"
  # z_score: predict factors z-scored over the library (the reference's default; factors only).
  c.recon = ml_collections.ConfigDict(dict(library="", loss="factors", z_score=True))
  # Zero-shot evaluation: examples per task, and seen_tasks training tasks sampled for the "seen"
  # split; intervals from `bootstrap` resamples (tasks, then examples).
  # rouge: report ROUGE-L (off where echoing the input would score; the echo rate is always shown).
  c.eval = ml_collections.ConfigDict(
    dict(
      examples_per_task=16, max_new_tokens=12, seed=1234, seen_tasks=12, bootstrap=2000, rouge=True
    )
  )
  return c
