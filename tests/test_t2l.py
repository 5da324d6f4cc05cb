"""Text-to-LoRA: hypernetwork shapes and sizes, step-0 behaviour, training, generation, errors."""

import json
import os
import re
import subprocess
import sys

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
from hyperlora import peft_io
from hyperlora.models.config import from_hf_config
from t2l_jax import encoder as encoder_lib
from t2l_jax import tasks as tasks_lib
from t2l_jax.hypernet import HyperSpec, T2LHypernet, count_params, init_params
from tests.conftest import VOCAB, build_tiny_hf_model

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs", "t2l")


@pytest.mark.parametrize("variant,expected", [("L", 55.4e6), ("M", 34.4e6), ("S", 5.0e6)])
def test_parameter_counts_for_mistral_7b_shapes(variant, expected):
  """The reference's sizes: h=128, head_in=512, q/v, r=8, 32 layers, 1024-d task embedding."""
  mistral = from_hf_config(
    transformers.MistralConfig(
      hidden_size=4096,
      intermediate_size=14336,
      num_hidden_layers=32,
      num_attention_heads=32,
      num_key_value_heads=8,
      vocab_size=32000,
    )
  )
  spec = HyperSpec.for_model(mistral, variant, ["q_proj", "v_proj"])
  count = count_params(jax.eval_shape(lambda: init_params(spec, 1024, jax.random.key(0))))
  assert abs(count - expected) / expected < 0.01, count


@pytest.fixture(scope="module")
def tiny_llama(tiny_model):
  path, _ = tiny_model("llama")
  return path, hyperlora.load(path)


@pytest.mark.parametrize("variant", ["L", "M", "S"])
def test_shapes_and_step0(variant, tiny_llama, rng):
  """Shapes for every variant; L starts at the base model (dW = 0), M and S from the reference's
  non-zero B (tests/test_t2l_reference.py checks their values)."""
  path, loaded = tiny_llama
  modules = ["q_proj", "v_proj", "down_proj"]
  spec = HyperSpec.for_model(loaded.config, variant, modules, rank=4, latent=32, head_in=64)
  params = init_params(spec, 16, jax.random.key(0))
  lora = T2LHypernet(spec).apply(
    {"params": params}, jnp.asarray(rng.normal(size=(3, 16)), jnp.float32)
  )
  assert lora.batch_size == 3 and lora.rank == 4
  chex.assert_shape(
    lora.weights["down_proj"]["A"],
    (3, loaded.config.num_layers, 4, loaded.config.intermediate_size),
  )
  chex.assert_shape(
    lora.weights["v_proj"]["B"],
    (3, loaded.config.num_layers, loaded.config.num_kv_heads * loaded.config.head_dim, 4),
  )
  lora_lib.check_compatible(lora, loaded.config)
  for module, dw in lora_lib.delta_weights(lora).items():
    assert (float(jnp.abs(dw).max()) == 0.0) == (variant == "L"), module  # L: dW = B A = 0
    assert float(jnp.abs(lora.weights[module]["A"]).max()) > 0  # A is not: B gets gradients.


def test_generated_suite_is_well_formed():
  tasks = tasks_lib.generated_suite()
  assert len(tasks) >= 60 and len({t.name for t in tasks}) == len(tasks)
  assert all(len(set(t.descriptions)) >= 10 for t in tasks)
  split = tasks_lib.split_suite(tasks, tasks_lib.HELD_OUT, tasks_lib.HELD_OUT_FAMILIES)
  assert [t.name for t in split.siblings] == list(tasks_lib.HELD_OUT)
  trained_families = {t.family for t in split.train}
  # Siblings have a trained family member; held-out families have none; nothing leaks.
  assert all(t.family in trained_families for t in split.siblings)
  assert {t.family for t in split.families} == set(tasks_lib.HELD_OUT_FAMILIES)
  assert not trained_families & set(tasks_lib.HELD_OUT_FAMILIES)
  assert len(split.families) >= 12 and len(split.train) + len(split.held_out) == len(tasks)
  # A sweep's task samples are nested within a seed, and differ between seeds.
  small, large = (tasks_lib.sample_tasks(split.train, n, seed=0) for n in (4, 8))
  assert set(small) < set(large) and small != tasks_lib.sample_tasks(split.train, 4, seed=1)
  by_name = {t.name: t for t in tasks}
  assert by_name["add_7"].examples(5, 0) == by_name["add_7"].examples(5, 0)  # deterministic
  for x, y in by_name["add_7"].examples(5, 0):
    assert int(y) == int(x) + 7
  for x, y in by_name["reverse_words"].examples(5, 1):
    assert y.split() == x.split()[::-1]


@pytest.mark.skipif(
  not os.path.isdir(
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference-data")
  ),
  reason="no ../shared/reference-data",
)
def test_reads_lots_of_loras_metadata():
  root = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "reference-data", "t2l_tasks"
  )
  meta = tasks_lib.load_lol_metadata(os.path.join(root, "lol_022"))
  assert len(meta["descriptions"]) == 200 and "{task_def}" in meta["user_prompt_template"]
  with pytest.raises(FileNotFoundError, match="has no metadata.yaml"):
    tasks_lib.load_lol_metadata(root)


def test_sentence_encoder_scaling_similarity_and_cache(tmp_path):
  encoder = encoder_lib.SentenceEncoder()
  texts = [
    "Add 6 to the number",
    "Increase the number by 6.",
    "Rewrite the sentence in upper case.",
  ]
  emb = encoder_lib.cached_embeddings(encoder, texts, str(tmp_path))
  np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), np.sqrt(emb.shape[-1]), rtol=1e-5)
  cos = emb @ emb.T / emb.shape[-1]
  assert cos[0, 1] > cos[0, 2] + 0.3  # paraphrases are closer than unrelated tasks
  assert len(os.listdir(tmp_path)) == 1
  np.testing.assert_array_equal(encoder_lib.cached_embeddings(encoder, texts, str(tmp_path)), emb)
  with pytest.raises(ValueError, match="empty task description"):
    encoder(["   "])


def test_base_model_encoder(tiny_llama):
  _, loaded = tiny_llama
  emb = encoder_lib.BaseModelEncoder(loaded, "last")(["Count the vowels", "Reverse the words."])
  assert emb.shape == (2, loaded.config.hidden_size)
  np.testing.assert_allclose(
    np.linalg.norm(emb, axis=-1), np.sqrt(loaded.config.hidden_size), rtol=1e-5
  )


def tiny_config(model_dir: str, workdir: str, max_train_tasks: int):
  """configs/t2l/tiny.py pointed at a tiny model, as `t2l train --config` would load it."""
  from hyperlora.cli_config import load_config_file

  config = load_config_file(os.path.join(CONFIGS, "tiny.py"))
  config.base_model, config.workdir = model_dir, workdir
  config.data.max_train_tasks = max_train_tasks
  return config


@pytest.fixture(scope="module")
def trained(tiny_llama, tmp_path_factory):
  """A tiny T2L run (8 training tasks) and its multi-task baseline, trained once for this module."""
  from t2l_jax.train import train

  config = tiny_config(tiny_llama[0], str(tmp_path_factory.mktemp("t2l")), 8)
  config.train.steps = 60
  config.baselines.oracle_steps = 3
  # One sibling and one family held out keep the oracle runs cheap.
  config.data.update(held_out=("add_7",), held_out_families=("double",))
  config.eval.update(examples_per_task=2, max_new_tokens=3, seen_tasks=2, bootstrap=200)
  train(config)
  return config


def test_eval_tables_have_every_row_split_and_interval(trained):
  import json

  from t2l_jax.evaluate import evaluate

  out = os.path.join(trained.workdir, "eval.json")
  tables = evaluate(trained.workdir, out)
  saved = json.load(open(out))
  assert list(tables) == ["sibling held-out", "family held-out", "seen"]
  for split, rows in tables.items():
    # The sibling control covers a split only when every task has one ('double' and the
    # suite's other families of one have none).
    sibling = all(t in saved["controls"]["sibling"] for t in saved["tasks"][split])
    if split != "seen":
      assert sibling == (split == "sibling held-out")
    expected = [
      "base model",
      "multi-task LoRA",
      *(["oracle LoRA (trained on the task)"] if split != "seen" else []),  # held-out only
      "T2L, task descriptions",
      "T2L, training phrasings in other frames",
      *(["T2L, a sibling task's description (control)"] if sibling else []),
      "T2L, another family's description (control)",
      "T2L, random descriptions (control)",
      *(["T2L, task descriptions minus T2L, a sibling task's description (control)"] * sibling),
      "T2L, task descriptions minus T2L, another family's description (control)",
      "T2L, task descriptions minus T2L, random descriptions (control)",
      "T2L, task descriptions minus multi-task LoRA",
    ]
    assert [r["adapter"] for r in rows] == expected
    for row in rows:
      if " minus " not in row["adapter"]:
        for metric in ("exact match", "echo rate", "ROUGE-L"):
          mean, low, high = (float(x) for x in re.findall(r"-?\d+\.\d+", row[metric]))
          assert 0 <= low <= mean <= high <= 1
  assert saved["tasks"]["sibling held-out"] == ["add_7"]
  assert saved["tasks"]["family held-out"] == ["double"] and len(saved["tasks"]["seen"]) == 2
  assert saved["controls"]["sibling"]["add_7"] == "add_8"
  assert saved["controls"]["family"]["add_7"] == "subtract_1"
  per_example = saved["scores"]["family held-out"]["t2l"]["double"]
  assert len(per_example["exact_match"]) == len(per_example["loss"]) == 2
  md = open(os.path.join(trained.workdir, "eval.md")).read()
  assert "family held-out:" in md and "| T2L, random descriptions (control) |" in md


def test_multitask_baseline_has_t2l_budget_and_no_l2(trained):
  """Same steps (and batches) as T2L; the L2 term is on the hypernetwork's outputs only."""
  import json

  log = [json.loads(l) for l in open(os.path.join(trained.workdir, "logs", "metrics.jsonl"))]
  steps = {p: max(r["step"] for r in log if r["prefix"] == p) for p in ("t2l", "multitask")}
  assert steps["t2l"] == steps["multitask"] == trained.train.steps
  assert all("aux_loss" in r for r in log if r["prefix"] == "t2l")
  assert not any("aux_loss" in r for r in log if r["prefix"] == "multitask")


def test_main_job_is_deterministic(trained, tmp_path):
  """Training the same config again, in another directory, gives the same tables."""
  from t2l_jax.evaluate import evaluate
  from t2l_jax.train import train

  again = trained.copy_and_resolve_references()
  again.workdir = str(tmp_path / "again")
  again.baselines.update(multitask=False, oracle_steps=0)
  train(again)
  variants = ("base", "t2l", "t2l_random")
  evaluate(trained.workdir, str(tmp_path / "first.json"), variants)
  evaluate(again.workdir, str(tmp_path / "second.json"), variants)
  first, second = (open(tmp_path / f"{n}.md").read() for n in ("first", "second"))
  assert first == second and "T2L, random descriptions" in first


def test_training_loss_falls_and_t2l_beats_base_on_held_out_task(trained, tiny_llama):
  import json

  from t2l_jax.evaluate import TaskEval
  from t2l_jax.generate import Generator

  log = [json.loads(l) for l in open(os.path.join(trained.workdir, "logs", "metrics.jsonl"))]
  t2l_losses = [r["lm_loss"] for r in log if r["prefix"] == "t2l"]
  assert np.mean(t2l_losses[-3:]) < t2l_losses[0] - 0.3
  _, loaded = tiny_llama
  generator = Generator(trained.workdir)
  task = next(t for t in tasks_lib.generated_suite() if t.name == "add_7")  # held out
  task_eval = TaskEval(loaded, generator.config)
  n = trained.eval.examples_per_task
  loss = lambda lora: np.mean(task_eval(task, lora)["loss"])
  base, adapted = loss(None), loss(generator([task.descriptions[0]] * n))
  assert adapted < base - 0.1, (adapted, base)


def test_generate_cli_output_loads_in_peft_with_same_logits(trained, tiny_llama, tmp_path, rng):
  from t2l_jax.generate import Generator

  path, loaded = tiny_llama
  out = tmp_path / "adapter"
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "t2l_jax.cli",
      "generate",
      "--checkpoint",
      trained.workdir,
      "Add 7 to the number.",
      "--out",
      str(out),
    ],
    capture_output=True,
    text=True,
  )
  assert result.returncode == 0, result.stderr
  ours = Generator(trained.workdir)(["Add 7 to the number."]).example(0)
  ids = rng.integers(0, VOCAB, (2, 10))
  expected = loaded.module().apply({"params": loaded.params}, jnp.asarray(ids), lora=ours).logits
  model = peft.PeftModel.from_pretrained(
    transformers.AutoModelForCausalLM.from_pretrained(path), str(out)
  ).eval()
  with torch.no_grad():
    theirs = model(torch.tensor(ids)).logits.numpy()
  np.testing.assert_allclose(np.asarray(expected), theirs, atol=1e-4, rtol=0)


def test_generate_writes_a_benchmarks_adapters_in_one_command(trained, tmp_path):
  """`t2l generate --descriptions FILE.jsonl --out-dir DIR --pad-rank 16`: one PEFT directory per
  line, each the adapter of its description (padded from rank 8 to 16, the same delta), with its
  metadata; a second run without --overwrite refuses before writing anything."""
  from t2l_jax.cli import main
  from t2l_jax.generate import Generator

  lines = [{"name": "add7", "description": "Add 7 to the number."}]
  lines.append({"name": "rev", "description": "Reverse the words."})
  jsonl = tmp_path / "tasks.jsonl"
  jsonl.write_text("".join(json.dumps(line) + "\n" for line in lines))
  out = tmp_path / "adapters"
  argv = ["generate", "--checkpoint", trained.workdir, "--descriptions", str(jsonl)]
  assert main([*argv, "--out-dir", str(out), "--pad-rank", "16"]) == 0
  assert sorted(os.listdir(out)) == ["add7", "rev"]
  generator = Generator(trained.workdir)
  loaded_config = hyperlora.base_weights.load_config(trained.base_model)
  for line in lines:
    meta = json.load(open(out / line["name"] / peft_io.METADATA_FILE))
    assert meta["description"] == line["description"] and (meta["rank"], meta["peft_rank"]) == (
      8,
      16,
    )
    back = peft_io.load(str(out / line["name"]), loaded_config)
    want = lora_lib.delta_weights(generator([line["description"]]).example(0))
    got = lora_lib.delta_weights(back)
    for module in want:
      np.testing.assert_allclose(got[module], want[module], atol=1e-6)
  before = {n: os.listdir(out / n) for n in os.listdir(out)}
  assert main([*argv, "--out-dir", str(out)]) == 2
  assert {n: os.listdir(out / n) for n in os.listdir(out)} == before


def test_harness_bundle_scores_like_t2l_eval(trained, tmp_path):
  """`t2l eval --export-harness-tasks DIR` then `hyperlora harness DIR`: lm-evaluation-harness
  on the exported base, multi-task LoRA and T2L adapter gives our answers on every held-out
  example; a directory that is not new is refused with nothing touched."""
  pytest.importorskip("lm_eval")
  from hyperlora.cli import main as hyperlora_main
  from t2l_jax.cli import main

  bundle = tmp_path / "bundle"
  argv = ["eval", "--checkpoint", trained.workdir, "--export-harness-tasks", str(bundle)]
  assert main(argv) == 0
  assert sorted(os.listdir(bundle)) == ["adapters", "base", "ours.json", "tasks"]
  assert sorted(os.listdir(bundle / "adapters" / "t2l")) == ["add_7"]
  assert hyperlora_main(["harness", str(bundle)]) == 0
  rows = json.load(open(bundle / "harness.json"))["rows"]
  assert [r["adapter"] for r in rows] == ["base", "multitask", "t2l"]
  for row in rows:
    assert row["answers differ"] == 0 and row["examples"] == trained.eval.examples_per_task
    assert row["harness exact match"] == row["t2l eval exact match"]
  before = sorted(os.listdir(bundle))
  assert main(argv) == 2
  assert sorted(os.listdir(bundle)) == before


def test_bad_input_errors(trained, tmp_path):
  from t2l_jax.generate import Generator

  with pytest.raises(ValueError, match="empty task description"):
    Generator(trained.workdir)([""])
  other = tmp_path / "other"
  build_tiny_hf_model("qwen2", str(other), hidden_size=32)
  with pytest.raises(ValueError, match="was trained for another base model"):
    Generator(trained.workdir, base_model=str(other))
  loaded_config = hyperlora.base_weights.load_config(trained.base_model)
  with pytest.raises(ValueError, match="unknown LoRA target module 'attn_proj'"):
    HyperSpec.for_model(loaded_config, "L", ["attn_proj"])
  with pytest.raises(FileNotFoundError, match="is not a run directory"):
    Generator(str(tmp_path / "missing"))


def test_reconstruction_learns_a_library(tiny_llama, tmp_path):
  """L1 falls and the reconstructed adapters move toward their targets (random library of 4)."""
  from t2l_jax import model as t2l_model
  from t2l_jax.generate import Generator
  from t2l_jax.train import train_reconstruction

  path, loaded = tiny_llama
  config = tiny_config(path, str(tmp_path / "run"), 4)
  config.mode = "recon"
  config.train.update(steps=150, lr=3e-3, log_every=10, ckpt_every=150)
  names = [t.name for t in t2l_model.build(config).train_tasks]
  targets = {}
  for i, name in enumerate(names):
    target = lora_lib.init(
      jax.random.key(i), loaded.config, ["q_proj", "v_proj"], 8, 1.0, b_std=0.05
    )
    peft_io.export(target, str(tmp_path / "library" / name))
    targets[name] = target
  config.recon.library = str(tmp_path / "library")
  train_reconstruction(config)

  log = [json.loads(l) for l in open(os.path.join(config.workdir, "logs", "metrics.jsonl"))]
  assert log[-1]["loss"] < 0.5 * log[0]["loss"]
  tasks = {t.name: t for t in tasks_lib.generated_suite()}
  moved = str(tmp_path / "moved")  # a run directory loads from wherever it is now
  os.rename(config.workdir, moved)
  generator = Generator(moved)
  assert generator.config.workdir == moved
  exported = json.load(
    open(os.path.join(generator.export("Add 7.", str(tmp_path / "a")), "hyperlora.json"))
  )
  assert exported["t2l_checkpoint"].startswith(moved)
  generated = generator([tasks[n].descriptions[0] for n in names])
  for i, name in enumerate(names):
    dw = lora_lib.delta_weights(lora_lib.fold_scale(generated.example(i)))["q_proj"]
    want = lora_lib.delta_weights(targets[name])["q_proj"]
    relative = float(jnp.linalg.norm(dw - want) / jnp.linalg.norm(want))
    assert relative < 0.9, (name, relative)  # step 0 (dW = 0) is exactly 1.0


def test_learning_curve_reads_each_checkpoint(trained, tmp_path):
  """`t2l curve`: T2L and its sibling control at two kept checkpoints; a later checkpoint is not
  the earlier one (its T2L loss table differs), and the Markdown is what the rows hold."""
  from t2l_jax.evaluate import evaluate, learning_curve

  rows = learning_curve(trained.workdir, [40, 60], str(tmp_path / "curve.json"))
  assert [(r["step"], r["split"]) for r in rows] == [
    (step, split) for step in (40, 60) for split in ("sibling held-out", "family held-out", "seen")
  ]
  sibling = [r for r in rows if r["split"] == "sibling held-out"]
  assert all("T2L, a sibling task's description (control): exact match" in r for r in sibling)
  early, late = (evaluate(trained.workdir, variants=("t2l",), step=s)["seen"] for s in (40, 60))
  assert early[0]["loss"] != late[0]["loss"]
  md = (tmp_path / "curve.md").read_text()
  assert md.count("| 40 |") == 3 and md.count("| 60 |") == 3
