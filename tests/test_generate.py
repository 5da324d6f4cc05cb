"""KV-cache generation equals recomputing the whole sequence at every step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hyperlora
from hyperlora import generate
from hyperlora import lora as lora_lib
from tests.conftest import VOCAB


def greedy_by_recompute(model, params, tokens, steps, lora=None):
  forward = jax.jit(lambda p, t, l: model.apply({"params": p}, t, lora=l).logits)
  for _ in range(steps):
    logits = forward(params, tokens, lora)
    tokens = jnp.concatenate([tokens, jnp.argmax(logits[:, -1:], axis=-1)], axis=1)
  return tokens[:, -steps:]


@pytest.mark.parametrize("family", ["llama", "gemma2"])  # gemma2: window crossed while decoding
def test_cached_greedy_equals_recompute(family, tiny_model, rng):
  path, _ = tiny_model(family)
  loaded = hyperlora.load(path, with_tokenizer=False)
  model = loaded.module()
  lora = lora_lib.init(jax.random.key(0), loaded.config, ["q_proj", "v_proj"], 8, 2.0, b_std=0.05)
  prompt = jnp.asarray(rng.integers(0, VOCAB, (2, 6)))
  cached = generate.generate(model, loaded.params, prompt, jnp.ones_like(prompt, bool), 12, lora)
  np.testing.assert_array_equal(cached, greedy_by_recompute(model, loaded.params, prompt, 12, lora))


def test_left_padded_batch_generates_like_single_prompts(tiny_model, rng):
  path, _ = tiny_model("qwen3")
  loaded = hyperlora.load(path, with_tokenizer=False)
  model = loaded.module()
  rows = [rng.integers(0, VOCAB, 4).tolist(), rng.integers(0, VOCAB, 7).tolist()]
  tokens, mask = generate.left_pad(rows)
  batched = generate.generate(model, loaded.params, jnp.asarray(tokens), jnp.asarray(mask), 8)
  for i, row in enumerate(rows):
    single = generate.generate(
      model, loaded.params, jnp.asarray([row]), jnp.ones((1, len(row)), bool), 8
    )
    np.testing.assert_array_equal(batched[i], single[0])


def test_chat_stops_at_end_of_turn(tiny_model):
  path, _ = tiny_model("llama")
  loaded = hyperlora.load(path)
  eos = generate.eos_ids_of(loaded.tokenizer, loaded.config)
  assert loaded.tokenizer.convert_tokens_to_ids("<|im_end|>") in eos
  tokens, _ = generate.encode_chat(loaded.tokenizer, ["Count the vowels."])
  text = loaded.tokenizer.decode(tokens[0])
  assert text.startswith("<|im_start|>user\nCount the vowels.<|im_end|>") and text.endswith(
    "assistant\n"
  )
  row = [5, 6, eos[0], 7]
  assert generate.decode(loaded.tokenizer, np.asarray([row]), eos) == [
    loaded.tokenizer.decode([5, 6])
  ]
