"""T2L meta-training (SFT), plus the multi-task and oracle LoRA baselines, from one config."""

from __future__ import annotations

import copy
import logging
import os

import jax
import numpy as np

from hyperlora import lora as lora_lib
from hyperlora import peft_io, run_dir, sharding
from hyperlora import train as train_lib
from hyperlora.metrics import MetricWriter
from t2l_jax import model as t2l_model
from t2l_jax import reconstruct
from t2l_jax.data import SFTBatches
from t2l_jax.hypernet import count_params, init_params_boxed

log = logging.getLogger(__name__)


# Saved-config fields a resumed run must share with the checkpoint.
RESUME_KEYS = {
  "spec": "hypernetwork / adapter shape",
  "base_model": "base model",
  "embed_dim": "task embedding width",
}
# T2L fields a resumed run may change besides the core's (train_checkpoints.FREE_KEYS): which
# baselines run (they are added to a finished run by rerunning it with them on), and the shard_map
# is a layout.
FREE_KEYS = (
  "baselines.multitask",
  "baselines.multitask_described",
  "baselines.oracle_steps",
  "baselines.oracle_tasks",
  "train.lora_shard_map",
)


def saved_config(config, setup) -> dict:
  return run_dir.saved_config(config, "t2l", setup.spec, embed_dim=setup.embed_dim)


def sft_parts(config, base_model, adapter_fn, aux_loss_fn=None, steps=None, lr=None):
  """(loss_fn, optimizer) of an SFT run (T2L or a baseline LoRA): what training runs and what
  `hyperlora plan` compiles."""
  tc = config.train
  optimizer = train_lib.optimizer_of(tc, steps, lr)
  loss_fn = train_lib.lm_loss_fn(
    base_model,
    adapter_fn,
    aux_loss_fn,
    tc.label_smoothing,
    neftune_alpha=tc.neftune_alpha,
    lora_dropout=tc.lora_dropout,
  )
  return loss_fn, optimizer


def _run(
  setup,
  config,
  *,
  init_params,
  adapter_fn,
  batches,
  steps,
  directory,
  writer,
  desc,
  mesh,
  rules,
  base_params,
  lr=None,
  aux_loss_fn=None,
):
  tc = config.train
  base_model = setup.base.module(
    jax.numpy.dtype(config.dtype), remat=tc.remat, lora_mesh=mesh if tc.lora_shard_map else None
  )
  loss_fn, optimizer = sft_parts(config, base_model, adapter_fn, aux_loss_fn, steps, lr)
  return train_lib.run(
    loss_fn=loss_fn,
    optimizer=optimizer,
    init_params=init_params,
    batches=batches,
    steps=steps,
    directory=directory,
    config_json=saved_config(config, setup),
    resume_keys=RESUME_KEYS,
    free_keys=FREE_KEYS,
    allow_config_change=tc.allow_config_change,
    seed=tc.seed,
    mesh=mesh,
    rules=rules,
    base_params=base_params,
    writer=writer,
    desc=desc,
    log_every=tc.log_every,
    ckpt_every=tc.ckpt_every,
    keep=tc.keep_checkpoints,
  )


def training_batches(setup, config, cache_dir: str | None) -> SFTBatches:
  """The batches `train` steps through (T2L's and the multi-task LoRA's): the training tasks, a
  random one of their descriptions' embeddings per example."""
  tc, dc = config.train, config.data
  embeddings = t2l_model.description_embeddings(
    setup, setup.train_tasks, config, "train", cache_dir
  )
  return SFTBatches(
    setup.train_tasks,
    embeddings,
    setup.base.tokenizer,
    tasks_per_batch=dc.tasks_per_batch,
    examples_per_task=dc.examples_per_task,
    max_len=dc.max_len,
    seed=tc.seed,
    max_answer=dc.max_answer,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )


def train(config) -> str:
  """Meta-trains T2L into config.workdir; returns the workdir."""
  setup = t2l_model.build(config)
  paths = t2l_model.workdir_paths(config.workdir)
  tc, dc = config.train, config.data
  mesh, rules, base_params = sharding.place(setup.base, config.mesh)
  init_hypernet = lambda: init_params_boxed(setup.spec, setup.embed_dim, jax.random.key(tc.seed))
  log.info(
    "T2L-%s hypernetwork: %s parameters; base %s; %d train / %d held-out tasks; mesh %s",
    setup.spec.variant,
    f"{count_params(jax.eval_shape(init_hypernet)):,}",
    setup.base.config.name,
    len(setup.train_tasks),
    len(setup.eval_tasks),
    dict(mesh.shape),
  )
  batches = training_batches(setup, config, paths["cache"])
  writer = MetricWriter(paths["logs"])
  placement = dict(mesh=mesh, rules=rules, base_params=base_params)
  _run(
    setup,
    config,
    init_params=init_hypernet,
    adapter_fn=t2l_model.hypernet_adapter_fn(setup.hypernet),
    batches=batches,
    steps=tc.steps,
    directory=paths["checkpoints"],
    writer=writer,
    desc="t2l",
    aux_loss_fn=t2l_model.l2_penalty(tc.l2_coef),
    **placement,
  )

  baselines = config.baselines
  # The multi-task LoRA on T2L's own batches; with multitask_described, a second one whose prompts
  # also carry each example's description (the text channel's reference point). Same steps.
  multitask = [("multitask", batches)] if baselines.multitask else []
  if baselines.get("multitask_described"):
    multitask.append(
      ("multitask_described", _described(batches, dc.described_max_len or dc.max_len))
    )
  for name, multitask_batches in multitask:
    _run(
      setup,
      config,
      init_params=lambda: t2l_model.init_direct_lora(setup.spec, setup.base.config, tc.seed),
      adapter_fn=train_lib.direct_adapter_fn(setup.spec.scale),
      batches=multitask_batches,
      steps=tc.steps,
      directory=paths[name],
      writer=writer,
      desc=name,
      lr=baselines.lr,
      **placement,
    )
  if baselines.oracle_steps:
    wanted = set(baselines.get("oracle_tasks", ()))
    train_task_loras(
      setup,
      config,
      [t for t in setup.eval_tasks if not wanted or t.name in wanted],
      paths["oracle"],
      baselines.oracle_steps,
      writer,
      placement,
    )
  writer.close()
  return config.workdir


def _described(batches: SFTBatches, max_len: int) -> SFTBatches:
  """The same draws with each description in its prompt (padded to max_len: longer prompts)."""
  described = copy.copy(batches)
  described.describe, described.max_len = True, max_len
  return described


def train_task_loras(
  setup, config, tasks, out_dir: str, steps: int, writer=None, placement: dict | None = None
) -> list[str]:
  """One LoRA per task, trained on that task alone and exported to out_dir/<task>/ (PEFT).

  These are the oracle baseline for held-out tasks, and the library reconstruction learns from.
  """
  dc, tc = config.data, config.train
  no_embedding = np.zeros((1, setup.embed_dim), np.float32)  # Direct LoRAs ignore the embedding.
  placement = placement or dict(
    zip(("mesh", "rules", "base_params"), sharding.place(setup.base, config.mesh))
  )
  exported = []
  for task in tasks:
    batches = SFTBatches(
      [task],
      {task.name: no_embedding},
      setup.base.tokenizer,
      tasks_per_batch=1,
      examples_per_task=dc.tasks_per_batch * dc.examples_per_task,
      max_len=dc.max_len,
      seed=tc.seed,
      max_answer=dc.max_answer,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
    )
    state = _run(
      setup,
      config,
      init_params=lambda: t2l_model.init_direct_lora(setup.spec, setup.base.config, tc.seed),
      adapter_fn=train_lib.direct_adapter_fn(setup.spec.scale),
      batches=batches,
      steps=steps,
      directory=os.path.join(out_dir, "checkpoints", task.name),
      writer=writer,
      desc=f"lora/{task.name}",
      lr=config.baselines.lr,
      **placement,
    )
    lora = lora_lib.LoRA(jax.device_get(state.params), setup.spec.scale)
    exported.append(
      peft_io.export(
        lora,
        os.path.join(out_dir, task.name),
        setup.base.source,
        extra={"task": task.name, "definition": task.definition},
        overwrite=True,  # A rerun replaces its own adapters (never anything but an adapter).
      )
    )
  return exported


def train_reconstruction(config) -> str:
  """Reconstruction mode: learn to reproduce config.recon.library (one PEFT LoRA per training
  task)."""
  setup = t2l_model.build(config)
  paths = t2l_model.workdir_paths(config.workdir)
  names = [t.name for t in setup.train_tasks]
  library = reconstruct.load_library(config.recon.library, names, setup.base.config)
  stats = None
  if config.recon.z_score:
    stats = reconstruct.target_stats(library)
    os.makedirs(config.workdir, exist_ok=True)
    reconstruct.save_stats(stats, os.path.join(config.workdir, reconstruct.STATS_FILE))
  embeddings = t2l_model.description_embeddings(
    setup, setup.train_tasks, config, "train", paths["cache"]
  )
  init_hypernet = lambda: init_params_boxed(
    setup.spec, setup.embed_dim, jax.random.key(config.train.seed)
  )
  writer = MetricWriter(paths["logs"])
  tc = config.train
  optimizer = train_lib.optimizer_of(tc)
  train_lib.run(
    loss_fn=reconstruct.recon_loss_fn(setup.hypernet, config.recon.loss, stats is not None),
    optimizer=optimizer,
    init_params=init_hypernet,
    batches=reconstruct.ReconBatches(
      sorted(library), embeddings, library, config.data.tasks_per_batch, tc.seed, stats
    ),
    steps=tc.steps,
    directory=paths["checkpoints"],
    config_json=saved_config(config, setup),
    resume_keys=RESUME_KEYS,
    free_keys=FREE_KEYS,
    allow_config_change=tc.allow_config_change,
    seed=tc.seed,
    mesh=sharding.make_mesh(dict(config.mesh)),
    rules=sharding.rules_from_config(config.mesh),
    writer=writer,
    desc="recon",
    log_every=tc.log_every,
    ckpt_every=tc.ckpt_every,
    keep=tc.keep_checkpoints,
  )
  writer.close()
  return config.workdir
