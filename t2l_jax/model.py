"""Everything a T2L run needs, built from its config: base model, hypernetwork, tasks,
embeddings."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import hyperlora
from hyperlora import lora as lora_lib
from hyperlora import run_dir
from hyperlora.losses import lora_l2
from t2l_jax import channel_suite
from t2l_jax import encoder as encoder_lib
from t2l_jax import tasks as tasks_lib
from t2l_jax.hypernet import HyperSpec, T2LHypernet

# Controls from the reference's evaluation: descriptions unrelated to any task.
RANDOM_DESCRIPTIONS = (
  "dogs;cats;bananas;",
  "7@9.qwepra#/.sd,s'2OC^039u#rdagjbL",
  "ggggggggggggggggggggg",
)


def spec_from_config(config, model_config) -> HyperSpec:
  h = config.hypernet
  return HyperSpec.for_model(
    model_config,
    h.variant,
    tuple(h.modules),
    rank=h.rank,
    lora_alpha=h.lora_alpha,
    latent=h.latent,
    head_in=h.head_in,
    dropout=h.dropout,
  )


@dataclasses.dataclass
class Setup:
  base: hyperlora.LoadedModel
  spec: HyperSpec
  hypernet: T2LHypernet
  train_tasks: list
  split: tasks_lib.Split  # its train list holds every training task, before max_train_tasks
  encoder: object
  embed_dim: int

  @property
  def eval_tasks(self) -> list:
    return self.split.held_out

  def embed(self, texts, cache_dir=None) -> np.ndarray:
    return encoder_lib.cached_embeddings(self.encoder, list(texts), cache_dir)


def build(config) -> Setup:
  dtype = jnp.dtype(config.dtype)
  base = hyperlora.load(config.base_model, dtype=dtype)
  spec = spec_from_config(config, base.config)
  partners = {}
  if config.data.suite == "generated":
    suite = tasks_lib.generated_suite()
  elif config.data.suite == "channel":
    suite, partners = channel_suite.channel_suite(), channel_suite.PARTNERS
  elif config.data.suite == "lol":
    from t2l_jax import lol_data  # tensorflow_datasets loads only for the Lots-of-LoRAs suite

    suite = lol_data.load_tasks(config.data.tasks_dir, workdir_paths(config.workdir)["cache"])
  else:
    raise ValueError(
      f"unknown task suite {config.data.suite!r}; choose 'generated', 'channel' or 'lol' "
      f"(Lots-of-LoRAs format in config.data.tasks_dir)"
    )
  families = config.data.families
  if families:
    present = {t.family for t in suite}
    unknown = sorted(set(families) - present)
    if unknown:
      raise ValueError(
        f"data.families names {unknown}, not families of the {config.data.suite!r} suite; "
        f"choose from {sorted(present)}"
      )
    suite = [t for t in suite if t.family in families]
  suite = suite[: config.data.num_tasks or None]
  names = {s.name for s in suite}
  split = tasks_lib.split_suite(
    suite,
    [t for t in config.data.held_out if t in names],
    [f for f in config.data.held_out_families if f in {s.family for s in suite}],
    [t for t in config.data.extrapolation if t in names],
  )
  split.partners = partners
  # A task-count sweep trains on a seeded sample of the training tasks.
  train_tasks = tasks_lib.sample_tasks(split.train, config.data.max_train_tasks, config.train.seed)
  enc = encoder_lib.make_encoder(
    config.encoder.kind, base, config.encoder.path, config.encoder.pooling
  )
  return Setup(base, spec, T2LHypernet(spec), train_tasks, split, enc, enc.dim)


def description_embeddings(setup: Setup, tasks, config, which: str, cache_dir=None) -> dict:
  """task name -> [n, d] embeddings of its 'train' descriptions (the first n_train) or
  'held_out'."""
  n_train = config.data.train_descriptions
  pick = (
    (lambda t: t.descriptions[:n_train])
    if which == "train"
    else (lambda t: t.descriptions[n_train:])
  )
  texts = [d for t in tasks for d in pick(t)]
  flat = setup.embed(texts, cache_dir)
  out, start = {}, 0
  for t in tasks:
    n = len(pick(t))
    out[t.name] = flat[start : start + n]
    start += n
  return out


def hypernet_adapter_fn(hypernet: T2LHypernet):
  def adapter_fn(params, base_params, batch, rng, deterministic):
    return hypernet.apply(
      {"params": params},
      batch["task_emb"],
      deterministic,
      rngs=None if deterministic else {"dropout": rng},
    )

  return adapter_fn


def l2_penalty(coef: float):
  return lambda lora, batch: coef * lora_l2(lora)


def init_direct_lora(spec: HyperSpec, model_config, seed: int) -> dict:
  return lora_lib.init(
    jax.random.key(seed), model_config, spec.modules, spec.rank, spec.scale
  ).weights


def workdir_paths(workdir: str) -> dict:
  """A T2L run directory: the common layout (hyperlora.run_dir) plus the baselines' checkpoints."""
  return run_dir.paths(workdir, ("multitask", "multitask_described", "oracle"))
