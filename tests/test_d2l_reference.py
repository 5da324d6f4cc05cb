"""Doc-to-LoRA against the reference's formulas: normed context features (transformers as the
reference), document wrapping, the Perceiver's blocks and the ResMLP written out from the
reference's
definitions, initialisation scales, weight-decay exemptions, distillation targets, NEFTune, and the
target settings a run may use."""

import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import hyperlora
from d2l_jax import context, teacher
from d2l_jax.hypernet import NO_DECAY, D2LHypernet, D2LSpec
from d2l_jax.model import spec_from_config
from hyperlora import train as train_lib
from hyperlora.cli_config import load_config_file
from hyperlora.losses import distillation_loss
from hyperlora.models.shapes import named_config
from hyperlora.sharding import RULES

SMALL = dict(latent=32, n_latents=4, num_blocks=2, heads=4, kv_heads=2, head_dim=8)


@pytest.fixture(scope="module")
def loaded(tiny_model):
  path, model = tiny_model("llama")
  return path, model, hyperlora.load(path)


def _rms(x, scale, eps=1e-6):
  return x / jnp.sqrt(jnp.mean(x * x, -1, keepdims=True) + eps) * scale


def _layer_norm(x, p, eps=1e-6):
  mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mu) / jnp.sqrt(var + eps) * p["scale"] + p["bias"]


def _swiglu(p, x):
  return (jax.nn.silu(x @ p["gate"]["kernel"]) * (x @ p["up"]["kernel"])) @ p["down"]["kernel"]


def _attention(p, x, c, spec):
  """Grouped-query cross-attention as the reference's Idefics2PerceiverAttention (keys/values from
  the context), written with explicit head repetition."""
  q = (x @ p["q_proj"]["kernel"]).reshape(x.shape[0], spec.heads, spec.head_dim)
  k = (c @ p["k_proj"]["kernel"]).reshape(c.shape[0], spec.kv_heads, spec.head_dim)
  v = (c @ p["v_proj"]["kernel"]).reshape(c.shape[0], spec.kv_heads, spec.head_dim)
  k, v = (jnp.repeat(t, spec.heads // spec.kv_heads, axis=1) for t in (k, v))
  w = jax.nn.softmax(jnp.einsum("qhd,khd->hqk", q, k) / math.sqrt(spec.head_dim), -1)
  return jnp.einsum("hqk,khd->qhd", w, v).reshape(x.shape[0], -1) @ p["o_proj"]["kernel"]


def _reference_layer(p, latents, context_, spec):
  """Idefics2PerceiverLayer.forward: residual + post-attn norm of attention over (latent-normed
  latents, context-normed context), then residual + post-FF norm of the MLP on pre-FF-normed
  latents."""
  h = _attention(
    p["attn"],
    _rms(latents, p["latent_norm"]["scale"]),
    _rms(context_, p["context_norm"]["scale"]),
    spec,
  )
  latents = latents + _rms(h, p["post_attn_norm"]["scale"])
  h = _swiglu(p["mlp"], _rms(latents, p["pre_mlp_norm"]["scale"]))
  return latents + _rms(h, p["post_mlp_norm"]["scale"])


def test_perceiver_and_resmlp_follow_the_reference(loaded):
  _, _, base = loaded
  spec = D2LSpec.for_model(base.config, ("down_proj",), per_layer_features=False, **SMALL)
  feats = jax.random.normal(jax.random.key(1), (1, 7, base.config.hidden_size))
  params = nn.unbox(D2LHypernet(spec).init(jax.random.key(0), feats)["params"])
  # Perturbed, so that no norm is trivial.
  params = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(2), x.shape), params)
  lora, _ = D2LHypernet(spec).apply({"params": params}, feats)

  p = params["perceiver"]
  z = p["latents"]
  c = _swiglu(p["input_mlp"], feats[0])  # modality projection d -> 4d -> latent
  for i in range(spec.num_blocks):
    z = _reference_layer(p[f"block{i}"], z, c, spec)
  z = _rms(z, p["encoder_norm"]["scale"])
  slots = _rms(_reference_layer(p["decoder"], p["slots"], z, spec), p["decoder_norm"]["scale"])
  L, r = spec.num_layers, spec.rank
  slots = slots.reshape(L, r, spec.latent)
  # ResMLPBlockPerLayer: x + LN(W2_l silu(W1_l LN(x) + b1_l) + b2_l), then L2-normalised.
  x = _layer_norm(slots, params["resmlp_in_norm"])
  x = jax.nn.silu(
    jnp.einsum("lrd,ldh->lrh", x, params["resmlp_w1"]) + params["resmlp_bias1"][:, None]
  )
  x = jnp.einsum("lrh,lhd->lrd", x, params["resmlp_w2"]) + params["resmlp_bias2"][:, None]
  h = slots + _layer_norm(x, params["resmlp_out_norm"])
  h = h / jnp.linalg.norm(h, axis=-1, keepdims=True)
  rows = jnp.einsum("lrd,ldo->lro", h, params["head_down_proj"])
  d_in, _ = spec.dims[0]
  expected_a = rows[..., :d_in] * params["scaler_A_down_proj"][..., None]
  expected_b = jnp.swapaxes(rows[..., d_in:] * params["scaler_B_down_proj"][..., None], -1, -2)
  np.testing.assert_allclose(lora.weights["down_proj"]["A"], expected_a, rtol=2e-4, atol=2e-5)
  np.testing.assert_allclose(lora.weights["down_proj"]["B"], expected_b, rtol=2e-4, atol=2e-5)
  assert p["block0"]["mlp"]["gate"]["kernel"].shape == (spec.latent, 4 * spec.latent)
  assert params["resmlp_w1"].shape == (L, spec.latent, 4 * spec.latent)


def test_initialisation_scales(loaded):
  _, _, base = loaded
  spec = D2LSpec.for_model(base.config, ("down_proj", "q_proj"), **{**SMALL, "latent": 64})
  feats = jnp.zeros((base.config.num_layers, 3, base.config.hidden_size))
  params = nn.unbox(D2LHypernet(spec).init(jax.random.key(0), feats)["params"])
  d_lora = max(a + b for a, b in spec.dims)
  head_std = 0.5 / math.sqrt(spec.latent + d_lora * spec.rank)
  for module, (d_in, _) in zip(spec.modules, spec.dims):
    assert float(jnp.std(params[f"head_{module}"])) == pytest.approx(head_std, rel=0.05)
    assert float(jnp.std(params[f"bias_A_{module}"])) == pytest.approx(
      0.2 / math.sqrt(d_in * spec.rank), rel=0.1
    )
    assert float(jnp.abs(params[f"bias_B_{module}"]).max()) == 0.0
    np.testing.assert_array_equal(params[f"scaler_A_{module}"], 1.0)
    np.testing.assert_array_equal(params[f"scaler_B_{module}"], 0.0)


def test_weight_decay_spares_scalers_biases_norms_and_latents():
  params = {
    "perceiver": {
      "latents": jnp.ones(3),
      "slots": jnp.ones(3),
      "block0": {"post_attn_norm": {"scale": jnp.ones(3)}, "mlp": {"up": {"kernel": jnp.ones(3)}}},
    },
    "scaler_B_down_proj": jnp.ones(3),
    "bias_A_down_proj": jnp.ones(3),
    "resmlp_bias1": jnp.ones(3),
    "resmlp_in_norm": {"scale": jnp.ones(3)},
    "head_down_proj": jnp.ones(3),
    "resmlp_w1": jnp.ones(3),
  }
  opt = train_lib.make_optimizer(
    0.1, 10, warmup_frac=0.0, weight_decay=0.5, no_decay=NO_DECAY, schedule="cosine"
  )
  state, new = opt.init(params), params
  for _ in range(2):  # the schedule starts at 0
    updates, state = opt.update(jax.tree.map(jnp.zeros_like, new), state, new)
    new = jax.tree.map(jnp.add, new, updates)
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), new, params)
  assert (
    moved["head_down_proj"]
    and moved["resmlp_w1"]
    and moved["perceiver"]["block0"]["mlp"]["up"]["kernel"]
  )
  exempt = [moved["perceiver"][k] for k in ("latents", "slots")] + [
    moved["perceiver"]["block0"]["post_attn_norm"]["scale"],
    moved["scaler_B_down_proj"],
    moved["bias_A_down_proj"],
    moved["resmlp_bias1"],
    moved["resmlp_in_norm"]["scale"],
  ]
  assert not any(exempt)
  # Without exemptions (T2L) the optimizer state has the same structure, so checkpoints restore.
  plain = train_lib.make_optimizer(0.1, 10)
  assert jax.tree.structure(plain.init(params)) == jax.tree.structure(opt.init(params))


def test_distillation_uses_the_teachers_probabilities_as_they_are():
  """-sum_{j in top-k} p_T(j) log q(j) with p_T = exp(teacher log-prob): a top-k holding 60% of the
  teacher's mass weighs the loss by 0.6, it is not renormalised to 1."""
  logits = jnp.log(jnp.asarray([[[0.5, 0.3, 0.1, 0.1]]]))
  ids = jnp.asarray([[[0, 2]]])
  teacher_logprobs = jnp.log(jnp.asarray([[[0.4, 0.2]]]))
  loss = distillation_loss(logits, ids, teacher_logprobs, jnp.ones((1, 1)))
  expected = -(0.4 * math.log(0.5) + 0.2 * math.log(0.1))
  assert float(loss[0]) == pytest.approx(expected, rel=1e-5)


def test_neftune_noise_matches_its_formula(loaded):
  _, _, base = loaded
  noise = train_lib.neftune_noise(jax.random.key(0), (2, 50, 64), alpha=5.0)
  bound = 5.0 / math.sqrt(50 * 64)
  assert float(jnp.abs(noise).max()) <= bound and float(jnp.abs(noise).max()) > 0.9 * bound
  assert abs(float(noise.mean())) < 0.05 * bound
  batch = {
    "tokens": jnp.ones((2, 6), jnp.int32),
    "attention_mask": jnp.ones((2, 6), bool),
    "target_index": jnp.full((2, 1), 4),
    "target_ids": jnp.ones((2, 1), jnp.int32),
    "target_mask": jnp.ones((2, 1)),
  }
  loss_fn = train_lib.lm_loss_fn(base.module(), lambda *a: None, neftune_alpha=5.0)
  eval_loss = loss_fn(None, base.params, batch, jax.random.key(0), True)[0]
  plain = train_lib.lm_loss_fn(base.module(), lambda *a: None)(
    None, base.params, batch, None, True
  )[0]
  assert float(eval_loss) == float(plain)  # no noise when deterministic
  assert float(loss_fn(None, base.params, batch, jax.random.key(0), False)[0]) != float(plain)


def test_features_match_transformers(loaded):
  """Features are what the reference's context encoders return with transformers: all but the
  last layer's hidden states (output_hidden_states of the model cut to L - 1 layers, whose last
  entry is final-normed), or the final-normed state after the first L // 4 layers (early exit)."""
  path, model, base = loaded
  tokens = np.arange(3, 14)[None]
  mask = np.ones_like(tokens, bool)
  layers = model.model.layers
  for which, keep in (("all_but_last", len(layers) - 1), ("quarter", len(layers) // 4)):
    model.model.layers = layers[:keep]
    try:
      with torch.no_grad():
        out = model.model(torch.tensor(tokens), output_hidden_states=True)
    finally:
      model.model.layers = layers
    expected = (
      torch.stack(out.hidden_states, 1)
      if which == "all_but_last"
      else out.last_hidden_state[:, None]
    ).numpy()
    ours = context.features(
      base.module(), base.params, jnp.asarray(tokens), jnp.asarray(mask), which
    )
    assert ours.shape == expected.shape
    np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-4)
  # the last entry is normed: its per-token RMS is the norm weight's scale, not the residual's
  feats = context.features(
    base.module(), base.params, jnp.asarray(tokens), jnp.asarray(mask), "all_but_last"
  )
  rms = jnp.sqrt(jnp.mean(feats[0, -1] ** 2, -1) / jnp.mean(base.params["norm"]["scale"] ** 2))
  np.testing.assert_allclose(rms, 1.0, rtol=0.3)


def test_document_wrapping(loaded):
  """An empty system turn (no default system prompt), the document as the user turn, the generation
  prompt; a template that refuses a system turn gets the user turn alone."""
  _, _, base = loaded
  tok = base.tokenizer
  text = context.wrap_document(tok, "  The sky is blue.\n")
  assert (
    text == "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nThe sky is blue.<|im_end|>\n"
    "<|im_start|>assistant\n"
  )
  refusing = tok.chat_template.replace(
    "{% for m in messages %}",
    "{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}",
  )
  original, tok.chat_template = tok.chat_template, refusing
  try:
    assert context.wrap_document(tok, "The sky is blue.") == (
      "<|im_start|>user\nThe sky is blue.<|im_end|>\n<|im_start|>assistant\n"
    )
  finally:
    tok.chat_template = original


def test_target_settings(loaded, tmp_path, monkeypatch):
  """gold + distillation is refused with the reason; cross-entropy never runs the teacher's
  top-k."""
  from d2l_jax.config import base_config
  from d2l_jax.corpus import synthetic_corpus
  from d2l_jax.train import check_targets, question_pairs

  config = base_config()
  config.data.responses, config.train.loss = "gold", "distill"
  with pytest.raises(ValueError, match="rarely ranks a gold token first"):
    check_targets(config)
  config.train.loss = "ce"
  check_targets(config)
  _, _, base = loaded
  monkeypatch.setattr(teacher, "_teacher_top_k", lambda *a: pytest.fail("top-k computed under CE"))
  pairs, _ = question_pairs(synthetic_corpus(2, seed=0))
  config.data.update(max_len=96, max_teacher_len=448)
  out = teacher.prepare(base, pairs, config.data, str(tmp_path), with_top_k=False)
  assert "teacher_ids" not in out and out["tokens"].shape[0] == len(pairs)


def test_reference_size_perceiver_is_sharded_by_fsdp():
  """At the reference's sizes (Gemma-2-2b shapes, latent 512, 9 blocks) the hypernetwork's
  parameters map a dimension to the fsdp mesh axis through the rules table: what stays replicated
  (the bias adapter, norms, scalers) is under 2% of them."""
  config = load_config_file(
    os.path.join(os.path.dirname(__file__), "..", "configs", "d2l", "gemma2_2b.py")
  )
  model_config = named_config("shapes:gemma-2-2b-it")
  spec = spec_from_config(config, model_config)
  feats = jax.ShapeDtypeStruct((spec.num_layers, 16, spec.feature_dim), jnp.float32)
  abstract = jax.eval_shape(lambda f: D2LHypernet(spec).init(jax.random.key(0), f), feats)["params"]
  specs = nn.get_partition_spec(abstract)
  shapes = nn.unbox(abstract)
  n_params = sum(x.size for x in jax.tree.leaves(shapes))
  assert n_params > 100e6  # the reference's hypernetwork is hundreds of millions of parameters
  replicated = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(shapes):
    logical = specs
    for key in path:
      logical = logical[key.key]
    if "fsdp" not in jax.tree.leaves(tuple(nn.logical_to_mesh_axes(logical, RULES))):
      replicated[jax.tree_util.keystr(path)] = leaf.size
  assert sum(replicated.values()) < 0.02 * n_params, sorted(
    replicated.items(), key=lambda kv: -kv[1]
  )[:5]
