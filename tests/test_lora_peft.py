"""LoRA-patched forward vs PEFT on the same adapter; export/import round trips; LoRA algebra."""

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import peft
import pytest
import torch
import transformers

import hyperlora
from hyperlora import lora as lora_lib
from hyperlora import peft_io, serving
from tests.conftest import VOCAB

TOL = 1e-4
TARGETS = ["q_proj", "v_proj", "down_proj"]


def peft_model(path, use_rslora, seed=0):
  torch.manual_seed(seed)
  base = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
  config = peft.LoraConfig(
    r=8,
    lora_alpha=16,
    target_modules=TARGETS,
    use_rslora=use_rslora,
    lora_dropout=0.0,
    init_lora_weights=False,  # random A and B
  )
  return peft.get_peft_model(base, config).eval()


def lora_from_peft(model, num_layers, use_rslora) -> hyperlora.LoRA:
  state = model.state_dict()
  weights = {}
  for module in TARGETS:
    parent = "mlp" if module == "down_proj" else "self_attn"
    get = lambda which: np.stack(
      [
        state[
          f"base_model.model.model.layers.{i}.{parent}.{module}.lora_{which}.default.weight"
        ].numpy()
        for i in range(num_layers)
      ]
    )
    weights[module] = {"A": jnp.asarray(get("A")), "B": jnp.asarray(get("B"))}
  scale = (lora_lib.rslora_scale if use_rslora else lora_lib.standard_scale)(16, 8)
  return hyperlora.LoRA(weights, scale)


def logits_torch(model, ids):
  with torch.no_grad():
    return model(torch.tensor(ids)).logits.numpy()


@pytest.fixture(scope="module")
def llama(tiny_model):
  path, _ = tiny_model("llama")
  return path, hyperlora.load(path, with_tokenizer=False)


@pytest.mark.parametrize("use_rslora", [False, True])
def test_patched_forward_matches_peft(llama, use_rslora, rng):
  path, loaded = llama
  reference = peft_model(path, use_rslora)
  lora = lora_from_peft(reference, loaded.config.num_layers, use_rslora)
  ids = rng.integers(0, VOCAB, (2, 12))
  ours = loaded.module().apply({"params": loaded.params}, jnp.asarray(ids), lora=lora).logits
  expected = logits_torch(reference, ids)
  np.testing.assert_allclose(np.asarray(ours), expected, atol=TOL, rtol=0)
  base = loaded.module().apply({"params": loaded.params}, jnp.asarray(ids)).logits
  assert float(jnp.abs(base - ours).max()) > 100 * TOL  # The adapter matters.


def test_export_loads_in_peft_with_identical_logits(llama, tmp_path, rng):
  path, loaded = llama
  lora = lora_lib.init(
    jax.random.key(1),
    loaded.config,
    TARGETS,
    rank=8,
    scale=lora_lib.rslora_scale(16, 8),
    b_std=0.05,
  )
  out_dir = peft_io.export(lora, str(tmp_path / "adapter"), base_model=path)
  model = peft.PeftModel.from_pretrained(
    transformers.AutoModelForCausalLM.from_pretrained(path).eval(), out_dir
  ).eval()
  ids = rng.integers(0, VOCAB, (2, 10))
  ours = loaded.module().apply({"params": loaded.params}, jnp.asarray(ids), lora=lora).logits
  np.testing.assert_allclose(np.asarray(ours), logits_torch(model, ids), atol=TOL, rtol=0)


def test_padded_rank_gives_identical_peft_logits(llama, tmp_path, rng):
  """--pad-rank vllm: a D2L-like rank 24 becomes 32 with zero rows, and PEFT computes exactly
  the same logits as from the unpadded export; a rank above the largest allowed is refused in one
  line that says how to reduce it, with nothing written."""
  path, loaded = llama
  lora = lora_lib.init(jax.random.key(3), loaded.config, TARGETS, rank=24, scale=0.5, b_std=0.05)
  plain = peft_io.export(lora, str(tmp_path / "plain"), base_model=path)
  padded = peft_io.export(
    lora, str(tmp_path / "padded"), base_model=path, extra={"n": 1}, ranks=serving.VLLM_RANKS
  )
  assert json.load(open(os.path.join(padded, peft_io.CONFIG_FILE)))["r"] == 32
  assert json.load(open(os.path.join(padded, peft_io.METADATA_FILE))) == {
    "n": 1,
    "rank": 24,
    "peft_rank": 32,
    "scale_folded": 0.5,
  }
  ids = rng.integers(0, VOCAB, (2, 10))
  logits = [
    logits_torch(
      peft.PeftModel.from_pretrained(
        transformers.AutoModelForCausalLM.from_pretrained(path).eval(), d
      ).eval(),
      ids,
    )
    for d in (plain, padded)
  ]
  np.testing.assert_array_equal(logits[0], logits[1])
  with pytest.raises(ValueError, match="more than the largest allowed rank 16; make a smaller"):
    peft_io.export(lora, str(tmp_path / "refused"), ranks=serving.parse_ranks("8,16"))
  assert not (tmp_path / "refused").exists()
  assert serving.parse_ranks("vllm") == serving.VLLM_RANKS
  with pytest.raises(ValueError, match="give 'vllm' or positive ranks"):
    serving.parse_ranks("eight")


def test_import_export_round_trip(llama, tmp_path):
  _, loaded = llama
  lora = lora_lib.init(
    jax.random.key(2), loaded.config, ["k_proj", "o_proj", "up_proj"], rank=4, scale=2.5, b_std=0.1
  )
  back = peft_io.load(peft_io.export(lora, str(tmp_path / "a")), loaded.config)
  folded = lora_lib.fold_scale(lora)
  assert back.scale == 1.0 and back.modules == folded.modules
  chex.assert_trees_all_equal(back.weights, folded.weights)
  # Folding keeps the adapter's effect: same dW.
  jax.tree.map(
    lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6),
    lora_lib.delta_weights(lora),
    lora_lib.delta_weights(back),
  )


def test_per_example_adapters_equal_single_runs(llama, rng):
  _, loaded = llama
  model = loaded.module()
  singles = [
    lora_lib.init(jax.random.key(10 + i), loaded.config, TARGETS, 8, 2.0, b_std=0.05)
    for i in range(3)
  ]
  batched = lora_lib.stack(singles)
  ids = jnp.asarray(rng.integers(0, VOCAB, (3, 11)))
  together = model.apply({"params": loaded.params}, ids, lora=batched).logits
  for i, single in enumerate(singles):
    alone = model.apply({"params": loaded.params}, ids[i : i + 1], lora=single).logits
    np.testing.assert_allclose(together[i], alone[0], atol=TOL)
  assert float(jnp.abs(together[0] - together[1]).max()) > 100 * TOL


def test_export_batch_writes_one_directory_per_example(llama, tmp_path):
  _, loaded = llama
  batched = lora_lib.init(jax.random.key(3), loaded.config, ["q_proj"], 2, batch=2, b_std=0.1)
  dirs = peft_io.export_batch(
    batched,
    [str(tmp_path / "x"), str(tmp_path / "y")],
    extras=[{"description": "first"}, {"description": "second"}],
  )
  for i, d in enumerate(dirs):
    back = peft_io.load(d, loaded.config)
    np.testing.assert_array_equal(back.weights["q_proj"]["B"], batched.weights["q_proj"]["B"][i])


def test_zero_b_adapter_is_the_base_model(llama, rng):
  _, loaded = llama
  lora = lora_lib.init(jax.random.key(4), loaded.config, TARGETS, 8, 5.0)  # PEFT default: B = 0
  ids = jnp.asarray(rng.integers(0, VOCAB, (1, 9)))
  with_lora = loaded.module().apply({"params": loaded.params}, ids, lora=lora).logits
  without = loaded.module().apply({"params": loaded.params}, ids).logits
  np.testing.assert_array_equal(with_lora, without)


def test_merge_and_rank_concat_match_patched_forward(llama, rng):
  _, loaded = llama
  model = loaded.module()
  first = lora_lib.init(jax.random.key(5), loaded.config, TARGETS, 4, 3.0, b_std=0.05)
  second = lora_lib.init(jax.random.key(6), loaded.config, TARGETS, 4, 0.5, b_std=0.05)
  combined = lora_lib.concat_rank([first, second])
  assert combined.rank == 8
  summed = jax.tree.map(jnp.add, lora_lib.delta_weights(first), lora_lib.delta_weights(second))
  jax.tree.map(
    lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6),
    lora_lib.delta_weights(combined),
    summed,
  )
  ids = jnp.asarray(rng.integers(0, VOCAB, (1, 9)))
  patched = model.apply({"params": loaded.params}, ids, lora=combined).logits
  merged = model.apply({"params": lora_lib.merge(loaded.params, combined)}, ids).logits
  np.testing.assert_allclose(patched, merged, atol=TOL)
