"""Everything a D2L run needs from its config: base model, hypernetwork spec, the batched adapter
fn."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

import hyperlora
from d2l_jax import chunking, context
from d2l_jax.hypernet import NO_DECAY, D2LHypernet, D2LSpec
from hyperlora import lora as lora_lib
from hyperlora import train as train_lib
from hyperlora.losses import distillation_loss, lora_l1


def spec_from_config(config, model_config) -> D2LSpec:
  h = config.hypernet
  if config.features not in context.FEATURE_LAYERS:
    raise ValueError(
      f"config.features must be one of {context.FEATURE_LAYERS}, not {config.features!r}"
    )
  for module in h.modules:
    model_config.projection_dims(module)  # Raises on an unknown target module.
  return D2LSpec.for_model(
    model_config,
    tuple(h.modules),
    per_layer_features=config.features == "all_but_last",
    shared_perceiver=h.shared_perceiver,
    rank=h.rank,
    latent=h.latent,
    n_latents=h.n_latents,
    num_blocks=h.num_blocks,
    heads=h.heads,
    kv_heads=h.kv_heads,
    head_dim=h.head_dim,
  )


def init_params(hypernet: D2LHypernet, seed: int) -> dict:
  """Fresh hypernetwork params, boxed with their logical axis names."""
  spec = hypernet.spec
  n_layers = spec.num_layers if spec.per_layer_features else 1
  feats = jnp.zeros((n_layers, 4, spec.feature_dim))
  return hypernet.init(jax.random.key(seed), feats, jnp.ones(4, bool))["params"]


@dataclasses.dataclass
class Setup:
  base: hyperlora.LoadedModel
  spec: D2LSpec
  hypernet: D2LHypernet
  features: str  # context.FEATURE_LAYERS

  def init_params(self, seed: int) -> dict:
    return init_params(self.hypernet, seed)

  def restore(self, run, step: int | None = None) -> dict:
    """The trained params of a D2L run (`run_dir.Run`): its latest checkpoint, or `step`'s."""
    return run.restore_params(jax.eval_shape(lambda: nn.unbox(self.init_params(0))), step)

  def adapter_fn(self, dtype=jnp.float32):
    """The training adapter fn (hypernet_adapter_fn) reading with this setup's loaded base."""
    return hypernet_adapter_fn(self.base.module(dtype), self.hypernet, self.features)

  def internalize(
    self, params, document: str, chunk_len: int, chunk_scaling: str = "none"
  ) -> lora_lib.LoRA:
    return chunking.internalize(
      self.base, self.hypernet, params, document, chunk_len, self.features, chunk_scaling
    )


def build(config, base=None) -> Setup:
  base = base or hyperlora.load(config.base_model, dtype=jnp.dtype(config.dtype))
  spec = spec_from_config(config, base.config)
  return Setup(base, spec, D2LHypernet(spec, remat=config.train.remat), config.features)


def hypernet_adapter_fn(context_model, hypernet: D2LHypernet, which: str):
  """Batch of documents in K chunks -> one adapter per question row (rank (K + 1) r).

  context_model: the frozen base module that reads the chunks (features `which`, see context.py).
  batch["chunk_tokens"] / ["chunk_mask"] [docs, K, width]; question rows are grouped by document
  (queries_per_doc = rows // docs). The base model runs without gradient (features are stopped).
  """
  encode = jax.vmap(lambda p, feats, mask: hypernet.apply({"params": p}, feats, mask), (None, 0, 0))

  def adapter_fn(params, base_params, batch, rng, deterministic):
    docs, k, width = batch["chunk_tokens"].shape
    tokens = batch["chunk_tokens"].reshape(docs * k, width)
    mask = batch["chunk_mask"].reshape(docs * k, width)
    # [docs K, layers, width, d]
    feats = context.features(context_model, base_params, tokens, mask, which)
    chunk_lora, bias = encode(params, feats, mask)
    chunk_lora = jax.tree.map(lambda x: x.reshape(docs, k, *x.shape[1:]), chunk_lora)
    bias = jax.tree.map(lambda x: x[0], bias)  # context-free: the same for every chunk
    lora = chunking.combine(chunk_lora, bias)  # A [docs, L, (K + 1) r, d_in]
    per_doc = batch["tokens"].shape[0] // docs
    return jax.tree.map(lambda x: jnp.repeat(x, per_doc, axis=0), lora)

  return adapter_fn


def optimizer(tc):
  """The reference's AdamW (no weight decay on scalers, biases, norms and latent queries)."""
  return train_lib.optimizer_of(tc, no_decay=NO_DECAY)


def l1_penalty(coef: float):
  return lambda lora, batch: coef * lora_l1(lora)


def answer_loss(loss: str):
  """train.loss -> the loss on answer tokens for hyperlora.train.lm_loss_fn: 'distill' scores the
  student against the teacher's cached top-k (batch teacher_ids / teacher_logprobs), 'ce' is the
  default cross-entropy on the answers (None)."""
  if loss != "distill":
    return None
  return lambda logits, batch: distillation_loss(
    logits, batch["teacher_ids"], batch["teacher_logprobs"], batch["target_mask"]
  )
