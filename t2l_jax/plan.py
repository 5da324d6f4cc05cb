"""The T2L program `hyperlora plan` compiles: a config's SFT train step (the one `t2l train` runs:
same loss, optimizer and step), on abstract base weights built from the model's config alone."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp

from hyperlora import flops
from hyperlora import train as train_lib
from hyperlora.base_weights import load_config
from hyperlora.models.transformer import Transformer
from hyperlora.plan import PlanError, Program, train_step_program
from t2l_jax import encoder as encoder_lib
from t2l_jax import model as t2l_model
from t2l_jax.data import batch_spec
from t2l_jax.hypernet import T2LHypernet, count_params, init_params_boxed
from t2l_jax.train import sft_parts


def embed_dim(config, model_config) -> int:
  """The task embedding's width: the base's hidden size, config.encoder.dim when set, else the
  sentence encoder's config.json (no weights read)."""
  enc = config.encoder
  if enc.kind == "base":
    return model_config.hidden_size
  if enc.get("dim"):
    return int(enc.dim)
  try:
    path = encoder_lib.resolve_encoder(enc.path)
  except FileNotFoundError as err:
    raise PlanError(f"{err}; or set --config.encoder.dim=WIDTH to plan without it") from err
  with open(os.path.join(path, "config.json")) as f:
    return int(json.load(f)["hidden_size"])


def sft_program(config) -> Program:
  model_config = load_config(config.base_model)
  dtype = jnp.dtype(config.dtype)
  tc, dc = config.train, config.data
  spec = t2l_model.spec_from_config(config, model_config)
  dim = embed_dim(config, model_config)
  base = Transformer(model_config, dtype=dtype, param_dtype=dtype, remat=tc.remat)
  loss_fn, optimizer = sft_parts(
    config,
    base,
    t2l_model.hypernet_adapter_fn(T2LHypernet(spec)),
    t2l_model.l2_penalty(tc.l2_coef),
  )
  key = jax.random.key(0)
  state = jax.eval_shape(
    lambda: train_lib.init_state(init_params_boxed(spec, dim, key), optimizer, 0)
  )
  tokens = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  base_params = jax.eval_shape(lambda t: base.init(key, t), tokens)["params"]
  n, length, answer = dc.tasks_per_batch * dc.examples_per_task, dc.max_len, dc.max_answer
  batch = batch_spec(n, length, answer, dim)
  base_flops = flops.frozen_decoder_step(model_config, n, length, answer, tc.remat)
  # The hypernetwork runs once an example; the per-example LoRA on every token.
  extra = flops.trained_params_step(count_params(state.params), n)
  extra += flops.lora_step(model_config, spec.modules, spec.rank, n * length)
  return train_step_program(
    f"T2L-{spec.variant} SFT step",
    loss_fn,
    optimizer,
    state,
    base_params,
    batch,
    flops=flops.StepFlops(base_flops.model + extra, base_flops.hardware + extra),
    batch_size=n,
    base_passes=3 if tc.remat else 2,
  )


# What `hyperlora plan --program=NAME` compiles for a T2L config.
PROGRAMS = {"train": sft_program}
