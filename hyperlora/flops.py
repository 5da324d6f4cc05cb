"""FLOPs of a training step on a frozen decoder, counted from the shapes (a multiply-add is 2).

Counted analytically because XLA's cost analysis counts a scanned layer's body once. The base is
frozen, so its backward pass computes input gradients only: one matmul per weight matmul, two per
attention matmul (both operands are activations). Rematerialisation recomputes the forward; it is
hardware work, not model work, so MFU leaves it out.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class StepFlops:
  model: float  # forward + backward, what MFU divides by
  hardware: float  # model + rematerialised forward


def decoder_matmul_params(model_config) -> int:
  """Weights of one layer's q, k, v, o and gated MLP projections."""
  c = model_config
  q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
  return c.hidden_size * (2 * q + 2 * kv) + 3 * c.hidden_size * c.intermediate_size


def _decoder_terms(model_config, batch: int, seq: int, logit_positions: int):
  c = model_config
  tokens = batch * seq
  matmul = 2 * decoder_matmul_params(c) * c.num_layers * tokens
  # QK^T and AV over the full [seq, seq] (the causal mask does not skip work).
  attention = 4 * seq * c.num_heads * c.head_dim * c.num_layers * tokens
  head = 2 * c.hidden_size * c.vocab_size * batch * logit_positions
  return matmul, attention, head


def decoder_forward(model_config, batch: int, seq: int, logit_positions: int) -> float:
  """One forward pass on [batch, seq] tokens, logits at `logit_positions` positions an example."""
  return float(sum(_decoder_terms(model_config, batch, seq, logit_positions)))


def frozen_decoder_step(
  model_config, batch: int, seq: int, logit_positions: int, remat: bool
) -> StepFlops:
  """A frozen decoder's forward and input-gradient backward (the answer tokens' logits only)."""
  matmul, attention, head = _decoder_terms(model_config, batch, seq, logit_positions)
  forward = matmul + attention + head
  backward = matmul + 2 * attention + head
  model = float(forward + backward)
  return StepFlops(model, model + (matmul + attention if remat else 0))


def trained_params_step(params: int, examples: int) -> float:
  """Forward + backward with weight gradients (6 FLOPs a parameter an example): a hypernetwork
  applied once per example."""
  return 6.0 * params * examples


def lora_step(model_config, modules, rank: int, tokens: int) -> float:
  """Applying per-example LoRA factors to `tokens` tokens: forward, input and factor gradients."""
  per_token = sum(rank * sum(model_config.projection_dims(m)) for m in modules)
  return 6.0 * per_token * model_config.num_layers * tokens
