"""Doc-to-LoRA foundations: Perceiver hypernetwork, context features, chunk combination."""

import jax
import jax.numpy as jnp
import numpy as np
import peft
import pytest
import torch
import transformers

import hyperlora
from d2l_jax import chunking, context
from d2l_jax.hypernet import D2LHypernet, D2LSpec
from hyperlora import lora as lora_lib
from hyperlora import peft_io
from tests.conftest import CORPUS

SMALL = dict(latent=32, n_latents=4, num_blocks=2, heads=4, kv_heads=2, head_dim=8)
DOC = " ".join(CORPUS[:8])


@pytest.fixture(scope="module")
def setup(tiny_model):
  path, _ = tiny_model("llama")
  loaded = hyperlora.load(path)
  spec = D2LSpec.for_model(loaded.config, ("down_proj", "q_proj"), **SMALL)
  hypernet = D2LHypernet(spec)
  feats = context.features(loaded.module(), loaded.params, jnp.ones(12, jnp.int32), jnp.ones(12, bool))
  params = hypernet.init(jax.random.key(0), feats)["params"]
  return path, loaded, spec, hypernet, params


def with_open_b(params):
  """Params whose B scalers and bias B are non-zero, so adapters actually change the model."""
  return {k: (jnp.full_like(v, 0.5) if k.startswith("scaler_B") else
              0.01 * jnp.ones_like(v) if k.startswith("bias_B") else v) for k, v in params.items()}


def test_features_are_each_layers_input(setup):
  _, loaded, *_ = setup
  tokens = jnp.arange(1, 10)
  feats = context.features(loaded.module(), loaded.params, tokens, jnp.ones(9, bool))
  assert feats.shape == (loaded.config.num_layers, 9, loaded.config.hidden_size)
  embedding = loaded.params["embed_tokens"]["embedding"][tokens]
  np.testing.assert_allclose(feats[0], embedding, atol=1e-6)  # layer 0's input is the embedding
  quarter = context.features(loaded.module(), loaded.params, tokens, jnp.ones(9, bool), "quarter")
  assert quarter.shape == (1, 9, loaded.config.hidden_size)


def test_step0_adapter_is_a_zero_delta(setup):
  _, loaded, spec, hypernet, params = setup
  lora = chunking.internalize(loaded, hypernet, params, DOC, chunk_len=16)
  assert lora.rank > 2 * spec.rank  # several chunks + bias
  for module, dw in lora_lib.delta_weights(lora).items():
    assert float(jnp.abs(dw).max()) == 0.0, module


def test_chunk_concatenation_equals_sum_of_deltas(setup):
  _, loaded, spec, hypernet, params = setup
  params = with_open_b(params)
  tok = loaded.tokenizer
  chunks = chunking.split(tok(DOC, add_special_tokens=False)["input_ids"], 16)
  assert len(chunks) >= 3 and max(map(len, chunks)) - min(map(len, chunks)) <= 1
  combined = chunking.internalize(loaded, hypernet, params, DOC, chunk_len=16)
  assert combined.rank == (len(chunks) + 1) * spec.rank
  expected = None
  for chunk in chunks:
    ids = context.document_tokens(tok, tok.decode(chunk))
    feats = context.features(loaded.module(), loaded.params, jnp.asarray(ids), jnp.ones(len(ids), bool))
    chunk_lora, bias = hypernet.apply({"params": params}, feats, jnp.ones(len(ids), bool))
    delta = lora_lib.delta_weights(chunk_lora)
    expected = delta if expected is None else jax.tree.map(jnp.add, expected, delta)
  expected = jax.tree.map(jnp.add, expected, lora_lib.delta_weights(bias))
  # alpha = 2 r^1.5 = 45 makes dW large: compare relatively (float32 sums in another order).
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5),
               lora_lib.delta_weights(combined), expected)
  assert float(jnp.abs(expected["down_proj"]).max()) > 1e-4


def test_exported_adapter_reproduces_logits_in_peft(setup, tmp_path, rng):
  path, loaded, spec, hypernet, params = setup
  lora = chunking.internalize(loaded, hypernet, with_open_b(params), DOC, chunk_len=16)
  out = peft_io.export(lora, str(tmp_path / "doc_adapter"), base_model=path)
  ids = rng.integers(0, loaded.config.vocab_size, (2, 10))
  ours = loaded.module().apply({"params": loaded.params}, jnp.asarray(ids), lora=lora).logits
  model = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(path), out).eval()
  with torch.no_grad():
    theirs = model(torch.tensor(ids)).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4, rtol=0)
  base = loaded.module().apply({"params": loaded.params}, jnp.asarray(ids)).logits
  assert float(jnp.abs(base - ours).max()) > 1e-3


def test_bad_documents(setup, tmp_path):
  _, loaded, *_ = setup
  tok = loaded.tokenizer
  with pytest.raises(ValueError, match="the document is empty"):
    context.document_tokens(tok, "  \n ")
  with pytest.raises(ValueError, match="only special tokens"):
    context.document_tokens(tok, "<|im_end|><|pad|>")
  binary = tmp_path / "doc.bin"
  binary.write_bytes(b"\x00\x01\x02 not text")
  with pytest.raises(ValueError, match="looks binary"):
    context.read_document(str(binary))
  latin = tmp_path / "doc.txt"
  latin.write_bytes("caf\xe9".encode("latin-1"))
  with pytest.raises(ValueError, match="is not UTF-8 text"):
    context.read_document(str(latin))
