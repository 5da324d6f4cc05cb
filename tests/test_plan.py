"""`hyperlora plan`: FLOPs against XLA's count, HLO collectives with loop trip counts, named
shapes, and (when libtpu is installed) the real T2L step and D2L programs compiled for a TPU
slice."""

import importlib.util
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from d2l_jax import model as d2l_model
from d2l_jax import plan as d2l_plan
from d2l_jax import train as d2l_train
from hyperlora import chips, flops, hlo_stats, plan
from hyperlora.base_weights import load_config
from hyperlora.cli_config import load_config_file
from hyperlora.models.config import ModelConfig
from hyperlora.models.transformer import Transformer
from t2l_jax import model as t2l_model
from t2l_jax import plan as t2l_plan
from t2l_jax import train as t2l_train

HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None


def run_plan(*args, timeout=900):
  """`hyperlora plan ARGS` in a fresh process, as a user runs it."""
  return subprocess.run(
    [sys.executable, "-m", "hyperlora.cli", "plan", *args],
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def test_forward_flops_match_xla_on_one_layer():
  # With one layer the scan body runs once, so XLA's cost analysis counts every FLOP: the
  # analytic count (matmuls, attention, head) must agree with it up to elementwise work.
  config = ModelConfig(
    family="llama",
    vocab_size=1000,
    hidden_size=256,
    intermediate_size=768,
    num_layers=1,
    num_heads=4,
    num_kv_heads=2,
    head_dim=64,
  )
  model = Transformer(config)
  batch, seq, answers = 2, 128, 8
  tokens = jnp.zeros((batch, seq), jnp.int32)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens))["params"]
  at = jnp.zeros((batch, answers), jnp.int32)
  fn = lambda p, t: model.apply({"params": p}, t, jnp.ones_like(t, bool), logits_at=at).logits
  xla = jax.jit(fn).lower(params, tokens).compile().cost_analysis()["flops"]
  ours = flops.decoder_forward(config, batch, seq, answers)
  assert abs(ours - xla) / xla < 0.05, (ours, xla)


HLO = """HloModule jit_step

%cond (p: (s32[], f32[8])) -> pred[] {
  %c = s32[]{:T(128)} constant(30)
  %p = (s32[]{:T(128)}, f32[8]{0}) parameter(0)
  %i = s32[]{:T(128)} get-tuple-element(%p), index=0
  ROOT %lt = pred[]{:T(512)} compare(%i, %c), direction=LT
}

%body (p: (s32[], f32[8])) -> (s32[], f32[8]) {
  %p = (s32[]{:T(128)}, f32[8]{0}) parameter(0)
  %x = f32[8]{0} get-tuple-element(%p), index=1
  %ag = bf16[1024,256]{1,0} all-gather(%x), channel_id=7, replica_groups=mesh['axis_1'=4] {'axis_1'}
  %g2 = bf16[1024,256]{1,0} all-gather(%x), channel_id=7, replica_groups=mesh['axis_1'=4] {'axis_1'}
  ROOT %t = (s32[]{:T(128)}, f32[8]{0}) tuple(%i, %x)
}

ENTRY %main (a: f32[8]) -> f32[8] {
  %a = f32[8]{0} parameter(0)
  %w = (s32[]{:T(128)}, f32[8]{0}) while(%t0), condition=%cond, body=%body
  %ar = (f32[1000]{0:T(1024)}, /*index=1*/f32[24]{0}) all-reduce(%a, %a), replica_groups=[2,4]<=[8]
  ROOT %rs = f32[250]{0} reduce-scatter(%a), replica_groups={{0,1,2,3},{4,5,6,7}}, dimensions={0}
}
"""


def test_collectives_count_per_layer_with_ring_bytes():
  stats = hlo_stats.summarise(HLO, 8)
  # bf16 result of the gather, over a group of 4 (mesh axis_1); its channel's second instruction
  # (an async collective's continuation) is the same transfer
  gathered = 1024 * 256 * 2
  assert stats["all-gather"] == {"count": 30, "bytes": 30 * gathered * 3 / 4}
  # all-reduce over groups of 4 (iota [2,4]): 2 S (n-1)/n, S = the tuple's 1024 floats
  assert stats["all-reduce"] == {"count": 1, "bytes": 2 * (1000 + 24) * 4 * 3 / 4}
  # reduce-scatter: its result is S/n
  assert stats["reduce-scatter"] == {"count": 1, "bytes": 250 * 4 * 4 * 3 / 4}


def test_named_shapes_build_the_model_without_files():
  config = load_config("shapes:mistral-7b-instruct-v0.2")
  assert (config.family, config.num_layers, config.num_kv_heads) == ("mistral", 32, 8)
  params = sum(
    x.size
    for x in jax.tree.leaves(
      jax.eval_shape(
        lambda: Transformer(config).init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
      )
    )
  )
  assert abs(params - 7.24e9) / 7.24e9 < 0.01  # Mistral-7B's published 7.24B parameters
  with pytest.raises(ValueError, match="known:"):
    load_config("shapes:nope")


def test_candidate_meshes_divide_devices_and_batch():
  meshes = plan.candidate_meshes(16, batch_size=8)
  assert {"data": 1, "fsdp": 16, "tensor": 1} not in meshes  # 16 does not divide a batch of 8
  assert {"data": 2, "fsdp": 4, "tensor": 2} in meshes
  assert all(m["data"] * m["fsdp"] * m["tensor"] == 16 for m in meshes)
  with pytest.raises(ValueError, match="known"):
    chips.chip_for("v9z:2x2")


def test_plan_cli_errors_are_one_line():
  missing = run_plan("--config=configs/t2l/tiny.py")
  assert missing.returncode == 2 and "--target is required" in missing.stderr
  bad = run_plan("--config=configs/t2l/tiny.py", "--target=v5e:2x2", "--mesh=2,2")
  assert bad.returncode == 2 and "three sizes" in bad.stderr
  assert "roofline" in run_plan("--help").stdout


@pytest.mark.skipif(not HAS_LIBTPU, reason='libtpu not installed (pip install -e ".[tpu]")')
def test_t2l_step_compiles_for_a_tpu_slice(tmp_path, tiny_model):
  path, _ = tiny_model("llama")
  out = tmp_path / "plan.json"
  result = run_plan(
    "--config=configs/t2l/tiny.py",
    f"--config.base_model={path}",
    "--config.encoder.dim=32",
    "--target=v5e:2x2",
    "--mesh=1,4,1",
    f"--out={out}",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  (row,) = json.loads(out.read_text())["plans"]
  assert row["fits"] and 0 < row["peak_gb"] < 16
  # fsdp over 4 chips: each layer's weights are gathered, once per layer per pass
  layers = load_config(path).num_layers
  assert row["collectives"]["all-gather"]["count"] >= layers
  assert 0 < row["mfu"] < 1
  assert "T2L-L SFT step" in (tmp_path / "plan.md").read_text()


@pytest.mark.skipif(not HAS_LIBTPU, reason='libtpu not installed (pip install -e ".[tpu]")')
@pytest.mark.parametrize("program", ["train", "internalize"])
def test_d2l_programs_compile_for_a_tpu_slice(tmp_path, tiny_model, program):
  path, _ = tiny_model("llama")
  out = tmp_path / "plan.json"
  result = run_plan(
    "--config=configs/d2l/tiny.py",
    f"--config.base_model={path}",
    "--config.eval.chunk_len=256",
    "--target=v5e:2x2",
    "--mesh=1,4,1",
    f"--program={program}",
    f"--out={out}",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  (row,) = json.loads(out.read_text())["plans"]
  assert row["fits"] and 0 < row["peak_gb"] < 16 and 0 < row["mfu"] < 1
  # fsdp over 4 chips gathers the base's layers, at least once per layer of the reader
  assert row["collectives"]["all-gather"]["count"] >= load_config(path).num_layers - 1
  name = {"train": "D2L train step", "internalize": "D2L internalisation"}[program]
  assert name in (tmp_path / "plan.md").read_text()


def test_plan_refuses_a_program_the_method_lacks():
  result = run_plan("--config=configs/t2l/tiny.py", "--target=v5e:2x2", "--program=internalize")
  assert result.returncode == 2 and "has programs train" in result.stderr, result.stderr[-2000:]


def test_planned_batches_are_the_batches_training_feeds(tiny_model):
  """`hyperlora plan` compiles the step for the batch that training feeds: the planner's abstract
  batch equals jax.eval_shape of a real training batch (keys, shapes, dtypes), for T2L and for D2L
  (whose chunk width counts the tokenizer's chat template around each chunk)."""
  path, _ = tiny_model("llama")
  t2l = load_config_file("configs/t2l/tiny.py")
  t2l.base_model = path
  real = t2l_train.training_batches(t2l_model.build(t2l), t2l, None)(0)
  assert jax.eval_shape(lambda b: b, real) == t2l_plan.sft_program(t2l).args[2]

  d2l = load_config_file("configs/d2l/tiny.py")
  d2l.base_model = path
  d2l.data.update(train_documents=4, niah_documents=0)
  batches = d2l_train.training_batches(d2l_model.build(d2l), d2l, None)
  # The planner compiles the step at one chunk per document; the config draws K in (1, 2).
  real = next(b for b in map(batches, range(20)) if b["chunk_tokens"].shape[1] == 1)
  planned = d2l_plan.train_program(d2l).args[2]
  assert set(planned) >= {"chunk_tokens", "teacher_logprobs"}
  assert jax.eval_shape(lambda b: b, real) == planned
