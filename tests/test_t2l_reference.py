"""Text-to-LoRA against the reference's formulas (SakanaAI/text-to-lora, hyper_modulator.py and
sft_trainer.py), written out here from its definitions: the M and S trunks, the heads' bias
hyper-init, the L2 term on generated factors, LoRA input dropout, and the defaults a run uses."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from hyperlora.lora import LoRA
from hyperlora.losses import lora_l2
from hyperlora.models.layers import LoRADense
from t2l_jax import reconstruct
from t2l_jax.config import base_config
from t2l_jax.hypernet import HyperSpec, T2LHypernet, init_params

DIMS = {"q_proj": (24, 24), "v_proj": (24, 8)}  # (d_in, d_out); v narrower, as with GQA


def _spec(variant, rank=4):
  return HyperSpec(
    variant=variant,
    modules=tuple(DIMS),
    dims=tuple(DIMS.values()),
    num_layers=3,
    rank=rank,
    latent=16,
    head_in=12,
  )


def _ln(x, p, eps=1e-6):
  mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _silu(x):
  return x / (1 + np.exp(-x))


def _ff(p, x, pre_norm):
  """[LN], Linear(h, 4h), SiLU, Linear(4h, out), SiLU (dropout off)."""
  if pre_norm:
    x = _ln(x, p["LayerNorm_0"])
  x = _silu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
  return _silu(x @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"])


def _reference_adapter(p, e, spec):
  """HyperModulator._hypernet_forward with shared_AB_head (M), plus autoreg_gen with a learnable
  position embedding (S), for one task embedding e [d_emb]: {module: (A [L, r, d_in], B [L, d_out,
  r])}."""
  p = jax.tree.map(np.asarray, p)
  h, r = spec.latent, spec.rank
  task = _ln(e @ p["task_proj"]["kernel"] + p["task_proj"]["bias"], p["LayerNorm_0"])
  depth = _ln(p["depth_emb"]["embedding"], p["LayerNorm_1"])
  module = _ln(p["module_emb"]["embedding"], p["LayerNorm_2"])
  mlp2 = lambda x: x + _ff(p["mlp2"], x, True)  # MLPResidualBlock: x + mlp(x)
  out = {}
  for m, (name, (d_in, d_out)) in enumerate(DIMS.items()):
    z = np.concatenate(
      [
        np.broadcast_to(task, (spec.num_layers, h // 2)),
        depth,
        np.broadcast_to(module[m], (spec.num_layers, h // 4)),
      ],
      -1,
    )
    z = _ff(p["mixer"], z, False)
    z = z + _ff(p["mlp1"], z, True)
    ab_emb = _ln(p["ab_emb"][m], p["LayerNorm_3"])  # [2, h]
    factors = []
    for which, d in ((0, d_in), (1, d_out)):
      head_in = mlp2(z + ab_emb[which])  # [L, h]
      if spec.variant == "S":
        pos = mlp2(_ln(p["rank_emb"]["embedding"], p["LayerNorm_4"]))  # [r, h]
        head_in = head_in[:, None] + pos[None]  # [L, r, h]
      head = p[f"head_{name}"]
      y = _ff(p["mlp3"], head_in, True) @ head["kernel"] + head["bias"]
      factors.append(y.reshape(spec.num_layers, r, -1)[..., :d])  # [L, r, d]
    out[name] = (factors[0], np.swapaxes(factors[1], -1, -2))
  return out


@pytest.mark.parametrize("variant", ["M", "S"])
def test_shared_head_trunk_matches_the_reference(variant):
  spec = _spec(variant)
  params = init_params(spec, 10, jax.random.key(0))
  # Non-zero head kernels, so the trunk's output reaches the adapter.
  keys = iter(jax.random.split(jax.random.key(1), 8))
  params = {
    k: (
      {**v, "kernel": 0.3 * jax.random.normal(next(keys), v["kernel"].shape)}
      if k.startswith("head_")
      else v
    )
    for k, v in params.items()
  }
  emb = np.random.default_rng(0).normal(size=(2, 10)).astype(np.float32)
  lora = T2LHypernet(spec).apply({"params": params}, jnp.asarray(emb))
  for t in range(2):
    for name, (a, b) in _reference_adapter(params, emb[t], spec).items():
      np.testing.assert_allclose(lora.weights[name]["A"][t], a, atol=2e-5, rtol=1e-4)
      np.testing.assert_allclose(lora.weights[name]["B"][t], b, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", ["L", "M", "S"])
def test_heads_start_from_the_reference_bias_init(variant):
  """Head weights zero; the bias is PEFT's default A (kaiming-uniform, bound 1/sqrt(d_in)) and,
  for L, a zero B. M's shared bias is that A / sqrt(2) and S's its first row / sqrt(2) / sqrt(r),
  so B starts non-zero there, sliced from the same bias."""
  spec = _spec(variant, rank=8)
  params = init_params(spec, 10, jax.random.key(0))
  lora = T2LHypernet(spec).apply({"params": params}, jnp.ones((1, 10)))
  r = spec.rank
  for name, (d_in, d_out) in DIMS.items():
    bias = np.asarray(params[f"head_{name}"]["bias"])
    assert not np.asarray(params[f"head_{name}"]["kernel"]).any()
    shrink = {"L": 1.0, "M": 1 / math.sqrt(2), "S": 1 / math.sqrt(2) / math.sqrt(r)}[variant]
    bound = shrink / math.sqrt(d_in)
    a, b = np.asarray(lora.weights[name]["A"][0]), np.asarray(lora.weights[name]["B"][0])
    if variant == "L":
      np.testing.assert_array_equal(a[0], bias[: r * d_in].reshape(r, d_in))
      assert not b.any()
      values = bias[: r * d_in]
    else:
      rows = bias.reshape(-1, max(d_in, d_out))  # M: [r, width]; S: [1, width] for every rank
      np.testing.assert_array_equal(a[0], np.broadcast_to(rows[:, :d_in], (r, d_in)))
      np.testing.assert_array_equal(b[0], np.broadcast_to(rows[:, :d_out], (r, d_out)).T)
      values = bias
    assert np.abs(values).max() <= bound and np.abs(values).max() > 0.8 * bound


def test_l2_is_summed_over_modules():
  rng = np.random.default_rng(0)
  weights = {
    m: {"A": rng.normal(size=(3, 4, d_in)), "B": rng.normal(size=(3, d_out, 4))}
    for m, (d_in, d_out) in DIMS.items()
  }
  expected = sum((w["A"] ** 2).mean() + (w["B"] ** 2).mean() for w in weights.values())
  np.testing.assert_allclose(
    float(lora_l2(LoRA(jax.tree.map(jnp.asarray, weights), 2.0))), expected, rtol=1e-6
  )


def test_lora_input_dropout_drops_only_the_adapters_input():
  """PEFT: y = x W + scale * B A dropout(x). With A = B = identity the adapter's output is the
  dropped input itself: each entry 0 or x / (1 - p), about p of them 0; the frozen path whole."""
  d, p, scale = 16, 0.25, 2.0
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 32, d)), jnp.float32)
  lora = {"A": jnp.eye(d), "B": jnp.eye(d)}
  dense = LoRADense(d, ("embed", "mlp"), lora_dropout=p)
  params = nn.unbox(
    dense.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, lora)
  )
  frozen = x @ params["params"]["kernel"]
  adapter = (
    dense.apply(params, x, lora, scale, rngs={"dropout": jax.random.key(2)}) - frozen
  ) / scale
  kept = np.isclose(adapter, x / (1 - p), atol=1e-5)
  dropped = np.isclose(adapter, 0.0, atol=1e-5)
  assert (kept | dropped).all()
  assert abs(dropped.mean() - p) < 0.05
  no_dropout = LoRADense(d, ("embed", "mlp")).apply(params, x, lora, scale)
  np.testing.assert_allclose(no_dropout, frozen + scale * x, atol=1e-5)


def test_defaults_are_the_references():
  """NEFTune alpha 5 on the input embeddings, LoRA input dropout .05, L2 1e-3, smoothing .1."""
  tc = base_config().train
  assert (tc.neftune_alpha, tc.lora_dropout, tc.l2_coef, tc.label_smoothing) == (
    5.0,
    0.05,
    1e-3,
    0.1,
  )


def test_reconstruction_targets_are_z_scored_as_the_reference():
  """recon_trainer.py: target = (x - mean) / (std + 1e-10), mean and torch.std over the library's
  tasks per element; convert_to_raw_scale maps a prediction back, x = z * (std + 1e-10) + mean."""
  rng = np.random.default_rng(0)
  library = {
    f"task{i}": LoRA(
      {
        m: {"A": rng.normal(size=(3, 4, d_in)), "B": rng.normal(size=(3, d_out, 4))}
        for m, (d_in, d_out) in DIMS.items()
      },
      1.0,
    )
    for i in range(3)
  }
  stats = reconstruct.target_stats(library)
  embeddings = {name: np.zeros((1, 2), np.float32) for name in library}
  batches = reconstruct.ReconBatches(sorted(library), embeddings, library, 3, 0, stats)
  for module in DIMS:
    for factor in ("A", "B"):
      stacked = torch.tensor(np.stack([l.weights[module][factor] for l in library.values()]))
      mean, std = stacked.mean(0).numpy(), torch.std(stacked, dim=0).numpy()
      for name, lora in library.items():
        want = (lora.weights[module][factor] - mean) / (std + 1e-10)
        np.testing.assert_allclose(
          batches.targets[name][module][factor], want, rtol=1e-4, atol=1e-5
        )
  # Generation maps z-scores back to the adapter (folded: the hypernetwork's scale is unused).
  back = reconstruct.unnormalise(LoRA(batches.targets["task1"], 5.657), stats)
  assert back.scale == 1.0
  for module in DIMS:
    np.testing.assert_allclose(
      back.weights[module]["B"], library["task1"].weights[module]["B"], rtol=1e-4, atol=1e-5
    )
  with pytest.raises(ValueError, match="needs recon.loss='factors'"):
    reconstruct.recon_loss_fn(None, "delta", z_scored=True)
