"""The D2L programs `hyperlora plan` compiles, on abstract base weights built from the model's
config alone: the meta-training step `d2l train` runs (`train`), and internalisation, the forward
that turns a batch of documents into adapters (`internalize`, one eval.chunk_len chunk each: the
program a long document runs once per chunk)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from d2l_jax import context, data
from d2l_jax import model as d2l_model
from d2l_jax.hypernet import D2LHypernet, D2LSpec
from d2l_jax.train import train_parts
from hyperlora import flops
from hyperlora import train as train_lib
from hyperlora.base_weights import load_config, load_tokenizer
from hyperlora.models.transformer import Transformer
from hyperlora.plan import Program, train_step_program

# Tokens of the chat template around a chunk when the base has no tokenizer to measure it with
# (`shapes:NAME`): at least what the supported templates add (Gemma-2's ~10, SmolLM2's ~20).
TEMPLATE_BOUND = 24


def template_tokens(base_model: str) -> int:
  """What training pads a chunk by for its template: measured on the base's tokenizer, so the
  planned batch is the batch training feeds; TEMPLATE_BOUND without one."""
  try:
    return data.template_tokens(load_tokenizer(base_model))
  except FileNotFoundError:
    return TEMPLATE_BOUND


def _perceiver_forward(spec: D2LSpec, tokens: int) -> float:
  """One forward of the hypernetwork over `tokens` context positions of every feature map."""
  s, latent = spec, spec.latent
  kv = 2 * s.kv_heads * s.head_dim
  maps = s.num_layers if s.per_layer_features else 1
  slots = s.num_layers * len(s.modules) * s.rank
  # Per context position and feature map: the input SwiGLU (d -> 4d -> latent) and every block's
  # key/value projections; the latents' own work is negligible beside it.
  per_token = 2 * (2 * s.feature_dim * s.mlp_ratio * s.feature_dim)
  per_token += 2 * s.mlp_ratio * s.feature_dim * latent + s.num_blocks * 2 * latent * kv
  # Per output slot: the decoder block's queries, the ResMLP and the head.
  per_slot = 2 * 2 * latent * s.heads * s.head_dim + 2 * 3 * latent * s.mlp_ratio * latent
  per_slot += 2 * 2 * latent * s.mlp_ratio * latent
  per_slot += 2 * latent * max(d_in + d_out for d_in, d_out in s.dims)
  return float(maps * tokens * per_token + slots * per_slot)


def _context_forward(model_config, which: str, docs: int, width: int) -> float:
  """The frozen base reading the chunks (forward only, no logits)."""
  reader = context.first_layers_config(model_config, context.reader_layers(model_config, which))
  return flops.decoder_forward(reader, docs, width, 0)


def _parts(config):
  model_config = load_config(config.base_model)
  dtype = jnp.dtype(config.dtype)
  spec = d2l_model.spec_from_config(config, model_config)
  hypernet = D2LHypernet(spec, remat=config.train.remat)
  reader = Transformer(model_config, dtype=dtype, param_dtype=dtype)
  adapter_fn = d2l_model.hypernet_adapter_fn(reader, hypernet, config.features)
  key = jax.random.key(0)
  tokens = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  base_params = jax.eval_shape(lambda t: reader.init(key, t), tokens)["params"]
  return model_config, dtype, spec, hypernet, adapter_fn, base_params


def train_program(config) -> Program:
  """The meta-training step at one chunk per document (K = 1, half the reference's batches; K
  chunks split the same tokens, so they cost about the same)."""
  tc, dc = config.train, config.data
  model_config, dtype, spec, hypernet, adapter_fn, base_params = _parts(config)
  student = Transformer(model_config, dtype=dtype, param_dtype=dtype, remat=tc.remat)
  loss_fn, optimizer = train_parts(config, student, adapter_fn)
  state = jax.eval_shape(
    lambda: train_lib.init_state(d2l_model.init_params(hypernet, tc.seed), optimizer, 0)
  )
  batch = data.batch_spec(dc, 1, template_tokens(config.base_model), tc.loss == "distill")
  docs, _, width = batch["chunk_tokens"].shape
  rows, length = batch["tokens"].shape
  answer = dc.max_answer
  student_flops = flops.frozen_decoder_step(model_config, rows, length, answer, tc.remat)
  # The reader runs forward only; the hypernetwork trains (forward + 2x backward); the adapters,
  # rank 2 r (one chunk + the bias), apply to every student token.
  extra = _context_forward(model_config, config.features, docs, width)
  extra += 3 * _perceiver_forward(spec, docs * width)
  extra += flops.lora_step(model_config, spec.modules, 2 * spec.rank, rows * length)
  return train_step_program(
    f"D2L train step ({docs} docs x {dc.queries_per_doc} questions, {width}-token chunks)",
    loss_fn,
    optimizer,
    state,
    base_params,
    batch,
    flops=flops.StepFlops(student_flops.model + extra, student_flops.hardware + extra),
    batch_size=docs,
    base_passes=4 if tc.remat else 3,  # reader, student forward and backward (+ remat)
  )


def internalize_program(config) -> Program:
  """eval.batch documents -> their adapters, one chunk of eval.chunk_len tokens each."""
  ec = config.eval
  model_config, _, spec, hypernet, adapter_fn, base_params = _parts(config)
  params = jax.eval_shape(lambda: d2l_model.init_params(hypernet, 0))
  docs, width = ec.batch, data.chunk_width(ec.chunk_len, 1, template_tokens(config.base_model))
  # One question row per document: the adapter fn then returns one adapter per document.
  batch = {**data.chunk_spec(docs, 1, width), "tokens": jax.ShapeDtypeStruct((docs, 1), jnp.int32)}
  work = _context_forward(model_config, config.features, docs, width)
  work += _perceiver_forward(spec, docs * width)
  return Program(
    name=f"D2L internalisation ({docs} documents x one {width}-token chunk)",
    fn=lambda p, base, b: adapter_fn(p, base, b, None, True),
    args=(params, base_params, batch),
    batch_args=(2,),
    frozen_arg=1,
    donate=(),
    out_shardings=lambda ins, mesh: jax.tree.leaves(ins[2])[0],
    flops=flops.StepFlops(work, work),
    batch_size=docs,
    base_passes=1,
  )


# What `hyperlora plan --program=NAME` compiles for a D2L config.
PROGRAMS = {"train": train_program, "internalize": internalize_program}
