"""Doc-to-LoRA foundations: Perceiver hypernetwork, context features, chunk combination."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import peft
import pytest
import torch
import transformers

import hyperlora
from d2l_jax import chunking, context, diagnostics
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
  feats = context.features(
    loaded.module(), loaded.params, jnp.ones((1, 12), jnp.int32), jnp.ones((1, 12), bool)
  )
  params = nn.unbox(hypernet.init(jax.random.key(0), feats[0])["params"])
  return path, loaded, spec, hypernet, params


def with_open_b(params):
  """Params whose B scalers and bias B are non-zero, so adapters actually change the model."""
  return {
    k: (
      jnp.full_like(v, 0.5)
      if k.startswith("scaler_B")
      else 0.01 * jnp.ones_like(v)
      if k.startswith("bias_B")
      else v
    )
    for k, v in params.items()
  }


def test_features_are_each_layers_input(setup):
  """The first feature map is layer 0's input, the embedding (transformers parity of every map is
  in test_d2l_reference)."""
  _, loaded, *_ = setup
  tokens = jnp.arange(1, 10)[None]
  feats = context.features(loaded.module(), loaded.params, tokens, jnp.ones((1, 9), bool))
  assert feats.shape == (1, loaded.config.num_layers, 9, loaded.config.hidden_size)
  embedding = loaded.params["embed_tokens"]["embedding"][tokens[0]]
  np.testing.assert_allclose(feats[0, 0], embedding, atol=1e-6)


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
    feats = context.features(
      loaded.module(), loaded.params, jnp.asarray(ids)[None], jnp.ones((1, len(ids)), bool)
    )
    chunk_lora, bias = hypernet.apply({"params": params}, feats[0], jnp.ones(len(ids), bool))
    delta = lora_lib.delta_weights(chunk_lora)
    expected = delta if expected is None else jax.tree.map(jnp.add, expected, delta)
  expected = jax.tree.map(jnp.add, expected, lora_lib.delta_weights(bias))
  # alpha = 2 r^1.5 = 45 makes dW large: compare relatively (float32 sums in another order).
  jax.tree.map(
    lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5),
    lora_lib.delta_weights(combined),
    expected,
  )
  assert float(jnp.abs(expected["down_proj"]).max()) > 1e-4


def test_exported_adapter_reproduces_logits_in_peft(setup, tmp_path, rng):
  path, loaded, spec, hypernet, params = setup
  lora = chunking.internalize(loaded, hypernet, with_open_b(params), DOC, chunk_len=16)
  out = peft_io.export(lora, str(tmp_path / "doc_adapter"), base_model=path)
  ids = rng.integers(0, loaded.config.vocab_size, (2, 10))
  ours = loaded.module().apply({"params": loaded.params}, jnp.asarray(ids), lora=lora).logits
  model = peft.PeftModel.from_pretrained(
    transformers.AutoModelForCausalLM.from_pretrained(path), out
  ).eval()
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


MEMORY_PROBE = """
import resource, sys
import jax, jax.numpy as jnp
import hyperlora
from d2l_jax import chunking, context, corpus
from d2l_jax.hypernet import D2LHypernet, D2LSpec
path, multiple, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
loaded = hyperlora.load(path)
spec = D2LSpec.for_model(loaded.config, ("down_proj",), latent=32, n_latents=4, num_blocks=2,
                         heads=4, kv_heads=2, head_dim=8)
hypernet = D2LHypernet(spec)
ones = jnp.ones((1, 8), jnp.int32)
feats = context.features(loaded.module(), loaded.params, ones, ones > 0)
params = hypernet.init(jax.random.key(0), feats[0])["params"]
doc = corpus.niah_document(loaded.tokenizer, multiple * chunk - 40, 0.5, seed=0).text
lora = chunking.internalize(loaded, hypernet, params, doc, chunk)
print(lora.rank // spec.rank - 1, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_chunked_memory_is_bounded_by_the_chunk(setup):
  """A document 8x the chunk length is internalised with peak memory (RSS of a fresh process)
  within 1.5x of a one-chunk document's. Encoding it whole would need ~64x the attention memory
  of a chunk (over 1 GB here), so an unbounded implementation fails this."""
  import subprocess
  import sys

  path = setup[0]
  peaks = {}
  for multiple in (1, 8):
    result = subprocess.run(
      [sys.executable, "-c", MEMORY_PROBE, path, str(multiple), "1024"],
      capture_output=True,
      text=True,
      timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    chunks, peak_kb = map(int, result.stdout.split()[-2:])
    assert chunks == multiple
    peaks[multiple] = peak_kb
  assert peaks[8] <= 1.5 * peaks[1], peaks


def test_dedup_counts_repeated_chunks_once(setup):
  """'dedup': the chunks' Gram matrix from r x r products equals the dense one; chunks a, a, a, b
  (b below the cosine threshold from a) get weights 1/3, 1/3, 1/3, 1, so their adapter is that of
  a, b; a one-chunk document keeps the reference's adapter exactly."""
  _, loaded, spec, hypernet, params = setup
  params = with_open_b(params)
  tok, r = loaded.tokenizer, spec.rank
  parts = [tok.decode(p) for p in chunking.split(context.content_tokens(tok, DOC), 16)]
  one_chunk = lambda text, scaling: chunking.internalize(
    loaded, hypernet, params, text, 10**6, chunk_scaling=scaling
  )
  np.testing.assert_array_equal(
    one_chunk(parts[0], "dedup").weights["q_proj"]["B"],
    one_chunk(parts[0], "none").weights["q_proj"]["B"],
  )
  chunk_of = lambda lora: lora.replace(
    weights={m: {"A": w["A"][:, :r], "B": w["B"][..., :r]} for m, w in lora.weights.items()}
  )
  bias_of = lambda lora: lora.replace(
    weights={m: {"A": w["A"][:, r:], "B": w["B"][..., r:]} for m, w in lora.weights.items()}
  )
  a, b = (chunk_of(one_chunk(p, "none")) for p in parts[:2])
  bias = bias_of(one_chunk(parts[0], "none"))
  dense = np.stack(
    [
      np.concatenate(
        [
          np.asarray(c.scale * jnp.einsum("lor,lri->loi", w["B"], w["A"])).ravel()
          for w in c.weights.values()
        ]
      )
      for c in (a, a, a, b)
    ]
  )
  stacked = lora_lib.stack([a, a, a, b])
  np.testing.assert_allclose(chunking.chunk_gram(stacked), dense @ dense.T, rtol=1e-4, atol=1e-9)
  cosine = float(dense[0] @ dense[3] / np.linalg.norm(dense[0]) / np.linalg.norm(dense[3]))
  # A random hypernetwork's chunks are closer than a trained one's: the threshold sits between.
  threshold = (1.0 + cosine) / 2
  assert cosine < threshold < 1.0 - 1e-3, cosine
  weights = chunking.dedup_weights(stacked, threshold)
  np.testing.assert_allclose(weights, [1 / 3, 1 / 3, 1 / 3, 1.0], rtol=1e-5)
  deduped = chunking.combine(stacked, bias, weights)
  reference = chunking.combine(lora_lib.stack([a, b]), bias)
  assert float(diagnostics.relative_difference(deduped, reference)) < 1e-5
  # Every combination is offered by the CLI (which lists them without importing JAX).
  from d2l_jax import cli as d2l_cli

  eval_parser = d2l_cli._parser()._subparsers._group_actions[0].choices["eval"]
  offered = next(a.choices for a in eval_parser._actions if a.dest == "chunk_scaling")
  assert tuple(offered) == tuple(chunking.CHUNK_SCALINGS)


def test_mean_chunk_scaling_and_per_layer_perceivers(setup):
  _, loaded, spec, hypernet, params = setup
  params = with_open_b(params)
  summed = chunking.internalize(loaded, hypernet, params, DOC, chunk_len=16)
  mean = chunking.internalize(loaded, hypernet, params, DOC, chunk_len=16, chunk_scaling="mean")
  k = summed.rank // spec.rank - 1
  r = spec.rank
  for m in summed.weights:  # chunk factors of B scaled by 1 / K, the bias adapter untouched
    np.testing.assert_allclose(
      mean.weights[m]["B"][..., : k * r], summed.weights[m]["B"][..., : k * r] / k, rtol=1e-6
    )
    np.testing.assert_array_equal(
      mean.weights[m]["B"][..., k * r :], summed.weights[m]["B"][..., k * r :]
    )
  with pytest.raises(ValueError, match="chunk scaling must be one of"):
    chunking.internalize(loaded, hypernet, params, DOC, chunk_len=16, chunk_scaling="max")
  separate = D2LSpec(**{**spec.__dict__, "shared_perceiver": False})
  feats = jnp.zeros((loaded.config.num_layers, 5, loaded.config.hidden_size))
  per_layer = nn.unbox(D2LHypernet(separate).init(jax.random.key(0), feats)["params"])["perceiver"][
    "latents"
  ]
  assert per_layer.shape == (loaded.config.num_layers,) + params["perceiver"]["latents"].shape


def test_probe_norms_equal_the_materialised_deltas():
  """dw_norm (from r x r Gram matrices) and difference (rank concatenation) give |dW| and
  |dW_x - dW_y| of the materialised scale * B @ A."""
  from d2l_jax.diagnostics import difference, dw_norm

  keys = jax.random.split(jax.random.key(0), 4)
  make = lambda ka, kb: lora_lib.LoRA(
    {"down_proj": {"A": jax.random.normal(ka, (3, 2, 5)), "B": jax.random.normal(kb, (3, 4, 2))}},
    7.0,
  )
  x, y = make(*keys[:2]), make(*keys[2:])
  dw = lambda l: (
    l.scale * jnp.einsum("lor,lri->loi", l.weights["down_proj"]["B"], l.weights["down_proj"]["A"])
  )
  np.testing.assert_allclose(dw_norm(x), jnp.linalg.norm(dw(x)), rtol=1e-5)
  np.testing.assert_allclose(dw_norm(difference(x, y)), jnp.linalg.norm(dw(x) - dw(y)), rtol=1e-5)


@pytest.mark.parametrize("shared", [True, False])
def test_each_layer_reads_only_its_own_features_and_remat_changes_nothing(shared):
  """The Perceiver runs over the feature maps one layer at a time (nn.scan): layer l's adapter
  depends on features[l] alone, and recomputing it in the backward pass (remat) gives the same
  adapter and gradients."""
  spec = D2LSpec(
    modules=("down_proj",),
    dims=((12, 8),),
    num_layers=3,
    feature_dim=8,
    shared_perceiver=shared,
    **SMALL,
  )
  feats = jax.random.normal(jax.random.key(1), (3, 5, 8))
  params = with_open_b(nn.unbox(D2LHypernet(spec).init(jax.random.key(0), feats)["params"]))
  a_of = lambda p, f, remat=False: (
    D2LHypernet(spec, remat).apply({"params": p}, f)[0].weights["down_proj"]["A"]
  )  # [layers, r, d_in]
  moved = a_of(params, feats.at[1].add(1.0)) - a_of(params, feats)
  assert float(jnp.abs(moved[1]).max()) > 1e-3
  np.testing.assert_array_equal(moved[0], 0.0)
  np.testing.assert_array_equal(moved[2], 0.0)
  loss = lambda p, remat: jnp.sum(a_of(p, feats, remat) ** 2)
  grads, remat_grads = jax.grad(loss)(params, False), jax.grad(loss)(params, True)
  jax.tree.map(
    lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7), grads, remat_grads
  )
