"""Logit parity of our Flax models against transformers (PyTorch, CPU) on the same weights.

Tolerance: 1e-4 max abs on float32 logits (observed ~5e-7; the budget covers reduction-order
differences between XLA and PyTorch kernels).
"""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import hyperlora
from tests.conftest import FAMILY_CONFIGS, VOCAB

TOL = 1e-4


def hf_logits(model, ids, mask=None):
  with torch.no_grad():
    kwargs = {} if mask is None else {"attention_mask": torch.tensor(mask, dtype=torch.long)}
    return model(torch.tensor(ids), **kwargs).logits.numpy()


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_logits_match_transformers(family, tiny_model, rng):
  path, reference = tiny_model(family)
  loaded = hyperlora.load(path)
  # 20 tokens: longer than the 8-token sliding window of the Mistral and Gemma-2 configs.
  ids = rng.integers(0, VOCAB, (2, 20))
  ours = loaded.module().apply({"params": loaded.params}, jnp.asarray(ids)).logits
  np.testing.assert_allclose(np.asarray(ours), hf_logits(reference, ids), atol=TOL, rtol=0)


@pytest.mark.parametrize("family", ["mistral", "gemma2"])
def test_sliding_window_is_in_effect(family, tiny_model, rng):
  """Past the window the logits depend on it: dropping it must change them (so the test above
  really checked the windowed attention)."""
  path, _ = tiny_model(family)
  loaded = hyperlora.load(path, with_tokenizer=False)
  ids = jnp.asarray(rng.integers(0, VOCAB, (1, 20)))
  windowed = loaded.module().apply({"params": loaded.params}, ids).logits
  unwindowed_config = dataclasses.replace(loaded.config, sliding_window=None)
  full = hyperlora.Transformer(unwindowed_config).apply({"params": loaded.params}, ids).logits
  np.testing.assert_allclose(windowed[:, :8], full[:, :8], atol=TOL)  # Inside the window: same.
  assert float(jnp.abs(windowed[:, 8:] - full[:, 8:]).max()) > 100 * TOL


def test_left_padding_matches_unpadded_rows(tiny_model, rng):
  path, _ = tiny_model("llama")
  loaded = hyperlora.load(path, with_tokenizer=False)
  model = loaded.module()
  short, long = rng.integers(0, VOCAB, 5), rng.integers(0, VOCAB, 9)
  ids = np.zeros((2, 9), np.int32)
  ids[0, 4:], ids[1] = short, long
  mask = ids * 0 + 1
  mask[0, :4] = 0
  batched = model.apply({"params": loaded.params}, jnp.asarray(ids), jnp.asarray(mask)).logits
  alone = model.apply({"params": loaded.params}, jnp.asarray(short[None])).logits
  np.testing.assert_allclose(batched[0, 4:], alone[0], atol=TOL)


def test_sharded_safetensors_and_bfloat16(tmp_path, rng):
  """A checkpoint split over several files (index.json) loads; bf16 params run close to fp32."""
  from tests.conftest import build_tiny_hf_model

  reference = build_tiny_hf_model("llama", str(tmp_path), seed=1)
  reference.save_pretrained(str(tmp_path), max_shard_size="40KB")
  assert (tmp_path / "model.safetensors.index.json").exists()
  ids = rng.integers(0, VOCAB, (1, 12))
  loaded = hyperlora.load(str(tmp_path), with_tokenizer=False)
  ours = loaded.module().apply({"params": loaded.params}, jnp.asarray(ids)).logits
  np.testing.assert_allclose(np.asarray(ours), hf_logits(reference, ids), atol=TOL, rtol=0)

  half = hyperlora.load(str(tmp_path), dtype=jnp.bfloat16, with_tokenizer=False)
  assert half.params_dtype == jnp.bfloat16
  low = half.module(jnp.bfloat16).apply({"params": half.params}, jnp.asarray(ids)).logits
  np.testing.assert_allclose(np.asarray(low), np.asarray(ours), atol=0.1)


def test_hidden_states_match_transformers(tiny_model, rng):
  path, reference = tiny_model("qwen2")
  loaded = hyperlora.load(path, with_tokenizer=False)
  ids = rng.integers(0, VOCAB, (1, 7))
  out = loaded.module().apply(
    {"params": loaded.params}, jnp.asarray(ids), return_hidden_states=True
  )
  with torch.no_grad():
    hf = reference(torch.tensor(ids), output_hidden_states=True).hidden_states
  assert out.hidden_states.shape == (4, 1, 7, 64)
  # Embeddings, then each layer's output; transformers norms its last entry, we do not.
  for i in range(3):
    np.testing.assert_allclose(out.hidden_states[i], hf[i].numpy(), atol=TOL)
