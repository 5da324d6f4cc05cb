"""D2L training and its harness on a tiny model: distillation lowers the loss, the generated adapter
beats the base model on held-out documents, the training path equals chunked internalisation, the
CLIs and the evaluation harness work end to end."""

import hashlib
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import peft
import pytest
import torch
import transformers

from d2l_jax import chunking, corpus, diagnostics, teacher
from d2l_jax import model as d2l_model
from d2l_jax.internalize import Internalizer
from d2l_jax.train import question_pairs
from hyperlora import generate, peft_io, serving
from hyperlora import lora as lora_lib
from hyperlora import train as train_lib
from hyperlora.cli_config import load_config_file
from tests.conftest import squad_articles

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs", "d2l")


def tiny_config(model_dir: str, workdir: str):
  """configs/d2l/tiny.py pointed at a tiny model, as `d2l train --config` would load it."""
  config = load_config_file(os.path.join(CONFIGS, "tiny.py"))
  config.base_model, config.workdir = model_dir, workdir
  return config


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
  from d2l_jax.train import train

  path, _ = tiny_model("llama")
  config = tiny_config(path, str(tmp_path_factory.mktemp("d2l")))
  config.train.update(steps=100, lr=3e-3)  # a faster start than the config's, for the margins
  train(config)
  return path, config


def batch_losses(setup, config, params_list, steps=range(4)) -> list[float]:
  """Mean distillation loss of each params on the training batches of `steps`."""
  from d2l_jax.train import training_batches

  batches = training_batches(setup, config, os.path.join(config.workdir, "cache"))
  loss_fn = jax.jit(
    train_lib.lm_loss_fn(
      setup.base.module(),
      setup.adapter_fn(),
      answer_loss=d2l_model.answer_loss("distill"),
    )
  )
  losses = [
    float(np.mean([loss_fn(params, setup.base.params, batches(s), None, True)[0] for s in steps]))
    for params in params_list
  ]
  return losses


def held_out_losses(internalizer, config, n_docs: int = 6) -> dict:
  """Distillation loss to the teacher on held-out documents' test questions, with each document's
  D2L adapter and without any (the base model without the document)."""
  base = internalizer.base
  docs = corpus.synthetic_corpus(n_docs, seed=config.eval.seed)
  pairs, pair_doc = question_pairs(docs, "test")
  targets = teacher.prepare(base, pairs, config.data, None)
  loss_fn = jax.jit(
    train_lib.lm_loss_fn(
      base.module(), lambda p, bp, batch, rng, det: p, answer_loss=d2l_model.answer_loss("distill")
    )
  )
  out = {"adapter": [], "none": []}
  for i, doc in enumerate(docs):
    batch = {k: jnp.asarray(v[pair_doc == i]) for k, v in targets.items() if k != "responses"}
    out["adapter"].append(float(loss_fn(internalizer(doc.text), base.params, batch, None, True)[0]))
    out["none"].append(float(loss_fn(None, base.params, batch, None, True)[0]))
  return {k: float(np.mean(v)) for k, v in out.items()}


def test_distillation_lowers_loss_and_adapter_beats_base(trained):
  """A random tiny teacher gives little to learn, so the margins are small but must be real;
  the SmolLM2 main job (README) shows the effect at scale."""
  path, config = trained
  internalizer = Internalizer(config.workdir)
  setup = internalizer.setup
  before, after = batch_losses(
    setup, config, [setup.init_params(config.train.seed), internalizer.params]
  )
  # Relative margins: the teacher's top-k probabilities are used unnormalised (as the reference),
  # so the loss's scale is the top-k's share of the teacher's mass.
  assert after < 0.95 * before, (before, after)
  result = held_out_losses(internalizer, config)
  assert result["adapter"] < 0.985 * result["none"], result


def test_training_adapters_equal_chunked_internalization(trained):
  """The batched training path (K chunks per document, padded) makes the same adapter as
  `internalize` encoding the chunks one by one."""
  path, config = trained
  internalizer = Internalizer(config.workdir)
  setup, tok = internalizer.setup, internalizer.base.tokenizer
  doc = corpus.synthetic_document(5)
  n = len(tok(doc.text, add_special_tokens=False)["input_ids"])
  tokens, mask = chunking.chunk_tokens(tok, doc.text, 0, num_chunks=3, width=n)
  # Two question rows share the document's adapter.
  batch = {
    "chunk_tokens": jnp.asarray(tokens)[None],
    "chunk_mask": jnp.asarray(mask)[None],
    "tokens": jnp.zeros((2, 4), jnp.int32),
  }
  trained_path = setup.adapter_fn()(internalizer.params, setup.base.params, batch, None, True)
  one_by_one = internalizer(doc.text, chunk_len=-(-n // 3))
  assert trained_path.rank == one_by_one.rank == 4 * setup.spec.rank
  for m, w in one_by_one.weights.items():
    for which in ("A", "B"):
      np.testing.assert_allclose(trained_path.weights[m][which][1], w[which], atol=2e-5, rtol=1e-4)


def test_warm_start_begins_from_the_trained_run(trained, tmp_path):
  from d2l_jax.train import train

  path, config = trained
  warm = tiny_config(path, str(tmp_path / "warm"))
  # One step: its learning rate is 0 (linear warmup from 0), so the params are the start's.
  warm.train.update(steps=1, init_from=config.workdir)
  train(warm)
  source, started = Internalizer(config.workdir), Internalizer(warm.workdir)
  jax.tree.map(np.testing.assert_array_equal, started.params, source.params)
  # ... which are not what a fresh start of the same seed would hold.
  fresh = nn.unbox(started.setup.init_params(warm.train.seed))
  assert not np.allclose(fresh["perceiver"]["latents"], started.params["perceiver"]["latents"])
  other = tiny_config(path, str(tmp_path / "other"))
  other.hypernet.update(latent=16)
  other.train.update(steps=1, init_from=config.workdir)
  with pytest.raises(ValueError, match="another hypernetwork"):
    train(other)


def test_cli_internalize_and_ask(trained, tmp_path, rng, capsys):
  from d2l_jax.cli import main

  def run_cli(*args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err

  path, config = trained
  doc = tmp_path / "doc.txt"
  doc.write_text(corpus.synthetic_document(11).text)
  out = tmp_path / "adapter"
  code, _, err = run_cli(
    "internalize", "--checkpoint", config.workdir, doc, "--out", out, "--chunk-len", 40
  )
  assert code == 0, err[-2000:]
  internalizer = Internalizer(config.workdir)
  lora = internalizer(doc.read_text(), chunk_len=40)
  assert (
    json.loads((out / "adapter_config.json").read_text())["r"]
    == lora.rank
    > 2 * internalizer.setup.spec.rank
  )
  ids = rng.integers(0, internalizer.base.config.vocab_size, (2, 12))
  ours = (
    internalizer.base.module()
    .apply({"params": internalizer.base.params}, jnp.asarray(ids), lora=lora)
    .logits
  )
  model = peft.PeftModel.from_pretrained(
    transformers.AutoModelForCausalLM.from_pretrained(path), str(out)
  ).eval()
  with torch.no_grad():
    theirs = model(torch.tensor(ids)).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4, rtol=0)
  assert json.loads((out / "hyperlora.json").read_text())["chunk_scaling"] == "none"

  # --chunk-scaling dedup: the chunks weighed as chunking.dedup_weights says, and recorded.
  deduped = tmp_path / "deduped"
  code, _, err = run_cli(
    "internalize",
    "--checkpoint",
    config.workdir,
    doc,
    "--out",
    deduped,
    "--chunk-len",
    40,
    "--chunk-scaling",
    "dedup",
  )
  assert code == 0, err[-2000:]
  assert json.loads((deduped / "hyperlora.json").read_text())["chunk_scaling"] == "dedup"
  expected = Internalizer(config.workdir, chunk_scaling="dedup")(doc.read_text(), chunk_len=40)
  written = peft_io.load(str(deduped), internalizer.base.config)
  assert float(diagnostics.relative_difference(written, expected)) < 1e-5

  code, out, err = run_cli(
    "ask",
    "--checkpoint",
    config.workdir,
    doc,
    "Who was her sister?",
    "--compare",
    "--max-new-tokens",
    4,
  )
  assert code == 0, err[-2000:]
  for method in ("D2L adapter", "document in context", "base model alone"):
    assert method in out

  # A benchmark's documents in one command, padded to ranks vLLM serves: one directory each,
  # named by file, with the document's hash; the delta is the document's own.
  docs = [tmp_path / "a.txt", tmp_path / "b.txt"]
  for i, d in enumerate(docs):
    d.write_text(corpus.synthetic_document(20 + i).text)
  many = tmp_path / "adapters"
  code, _, err = run_cli(
    "internalize", "--checkpoint", config.workdir, *docs, "--out-dir", many, "--pad-rank", "vllm"
  )
  assert code == 0, err[-2000:]
  assert sorted(os.listdir(many)) == ["a", "b"]
  for d in docs:
    meta = json.loads((many / d.stem / "hyperlora.json").read_text())
    lora = internalizer(d.read_text())
    assert meta["document_sha256"] == hashlib.sha256(d.read_text().encode()).hexdigest()
    assert meta["rank"] == lora.rank and meta["peft_rank"] in serving.VLLM_RANKS
    got = lora_lib.delta_weights(peft_io.load(str(many / d.stem), internalizer.base.config))
    for module, want in lora_lib.delta_weights(lora).items():
      np.testing.assert_allclose(got[module], want, atol=1e-6)
  code, _, err = run_cli("internalize", "--checkpoint", config.workdir, *docs, "--out", out)
  assert code == 2 and "give one document with --out DIR" in err

  binary = tmp_path / "doc.bin"
  binary.write_bytes(b"\x00\x01binary")
  code, _, err = run_cli(
    "internalize", "--checkpoint", config.workdir, binary, "--out", tmp_path / "x"
  )
  assert code == 2 and "looks binary" in err
  empty = tmp_path / "empty.txt"
  empty.write_text("   \n")
  code, _, err = run_cli("ask", "--checkpoint", config.workdir, empty, "Anything?")
  assert code == 2 and "the document is empty" in err
  code, _, err = run_cli("ask", "--checkpoint", tmp_path / "nowhere", doc, "Anything?")
  assert code == 2 and "is not a run directory" in err


def test_eval_tables_have_every_method_and_the_control(trained, tmp_path):
  from d2l_jax.evaluate import evaluate

  path, config = trained
  result = evaluate(config.workdir, str(tmp_path / "eval.json"), overrides={"documents": 2})
  methods = [row["method"] for row in result["qa"]]
  assert methods == [
    "base model, no document",
    "document in context (ICL)",
    "context distillation LoRA",
    "D2L adapter",
    "D2L, another document's adapter (control)",
    "D2L minus control",
  ]
  by_method = {row["method"]: row for row in result["qa"]}
  # D2L and its control on held-out and training documents, in both phrasings; the rest held-out
  # only.
  for name in ("D2L adapter", "D2L, another document's adapter (control)", "D2L minus control"):
    assert all(by_method[name][c] != "-" for c in by_method[name] if c != "method")
  assert by_method["base model, no document"]["training test F1"] == "-"
  per_doc = result["per_document"]
  assert (
    len(per_doc["d2l/held-out/test"]["f1"]) == 2
    and len(per_doc["control/training/study"]["f1"]) == 2
  )
  assert len(per_doc["cd/held-out/test"]["f1"]) == config.eval.cd_documents
  mean, low, high = (
    float(x)
    for x in by_method["D2L adapter"]["held-out test F1"]
    .replace("[", "")
    .replace("]", "")
    .replace(",", "")
    .split()
  )
  assert low <= mean <= high and 0.0 <= low and high <= 1.0
  cost = {row["method"]: row for row in result["cost"]}
  assert cost["base model, no document"]["context state MB"] == 0.0
  assert (
    cost["D2L adapter"]["context state MB"] > 0
    and cost["document in context (ICL)"]["context state MB"] > 0
  )
  assert all(row["answer s/doc"] > 0 and row["peak program MB"] > 0 for row in result["cost"])
  assert [r["method"] for r in result["niah"]] == [
    "base model, no document",
    "document in context (ICL)",
    "D2L adapter",
    "D2L, another document's adapter (control)",
    "D2L minus control",
  ]
  assert list(result["niah"][0])[1:] == ["1x (96 tok)", "2x (192 tok)"]
  assert json.loads((tmp_path / "eval.json").read_text())["qa"] == result["qa"]
  markdown = (tmp_path / "eval.md").read_text()
  assert "| D2L minus control |" in markdown and "Needle in a haystack" in markdown


def test_eval_asks_a_squad_file_of_any_run(trained, tmp_path, capsys):
  """`d2l eval --squad-file` asks a user's own SQuAD-format paragraphs of a run trained on
  biographies, spread over the file's articles, with the same tables (ICL too, for a paragraph
  longer than the teacher's training width); a missing file or two document sources is one line
  before any model loads."""
  from d2l_jax.cli import main

  _, config = trained
  path = tmp_path / "mine.json"
  data = squad_articles(["Orbit", "Harbor"], 3)
  long = " ".join(["filler"] * config.data.max_teacher_len)
  data["data"][0]["paragraphs"][0]["context"] += long
  path.write_text(json.dumps(data))
  out = tmp_path / "squad_eval.json"
  args = ["eval", "--checkpoint", config.workdir, "--squad-file", path, "--documents", 4]
  code = main([str(a) for a in [*args, "--methods", "base,icl,d2l", "--no-niah", "--out", out]])
  _, err = capsys.readouterr()
  assert code == 0, err[-2000:]
  result = json.loads(out.read_text())
  assert len(result["per_document"]["d2l/held-out/test"]["f1"]) == 4 and "niah" not in result
  rows = {r["method"]: r for r in result["qa"]}
  assert rows["D2L minus control"]["held-out test F1"] != "-"
  assert rows["document in context (ICL)"]["held-out test F1"] != "-"
  code = main([str(a) for a in [*args[:3], "--squad-file", tmp_path / "missing.json"]])
  err = capsys.readouterr().err
  assert code == 2 and "no SQuAD-format file" in err and "Traceback" not in err
  with pytest.raises(SystemExit) as exit_info:  # argparse: one source of documents
    main([str(a) for a in [*args, "--synthetic"]])
  assert exit_info.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_d2l_reads_the_document(tiny_model, tmp_path):
  """The test that would have caught D2L ignoring documents: eight haystacks of one length with the
  needle at one depth, so they differ only in the number and share the question. Trained with the
  tiny config (gold numbers, cross-entropy: the reference's NIAH setting), each haystack's own
  adapter must give its number (>= 0.9), while the control, the adapter of another haystack,
  gives the other number (at chance: each haystack's number differs). On the code before this test
  (lr 1e-2, gold answers scored by the teacher's top-k) both were at chance."""
  from d2l_jax.train import train, training_documents

  path, _ = tiny_model("llama")
  config = tiny_config(path, str(tmp_path / "niah"))
  config.data.update(
    train_documents=0,
    niah_documents=8,
    niah_min_len=64,
    niah_max_len=64,
    niah_train_depths=(0.5,),
    queries_per_doc=1,
    max_doc_len=96,
    responses="gold",
  )
  config.train.update(
    loss="ce", steps=600, chunk_counts=(1,), chunk_probs=(1.0,), log_every=100, ckpt_every=600
  )
  train(config)
  internalizer = Internalizer(config.workdir)
  docs = training_documents(internalizer.setup, config, None)
  numbers = [d.test[0].answers[0] for d in docs]
  assert len(set(numbers)) == len(docs) and len({len(d.text) for d in docs}) == 1
  adapters = [internalizer(d.text, chunk_len=4096) for d in docs]
  question = docs[0].test[0].question
  answer = lambda lora: generate.chat(internalizer.base, [question], 8, lora)[0]
  own = np.mean([n in answer(adapters[i]) for i, n in enumerate(numbers)])
  control = np.mean([n in answer(adapters[(i + 1) % len(docs)]) for i, n in enumerate(numbers)])
  assert own >= 0.9 and control <= 0.125, (own, control)
  logged = [
    json.loads(line) for line in open(os.path.join(config.workdir, "logs", "metrics.jsonl"))
  ]
  # The training probe sees it too.
  assert logged[-1]["probe_rel_diff"] > 0.05 and logged[-1]["doc_share"] > 0.05


def test_learning_curve_over_checkpoints(trained, tmp_path):
  from d2l_jax.evaluate import learning_curve

  path, config = trained
  rows = learning_curve(config.workdir, [90, 100], str(tmp_path / "curve.json"), {"documents": 2})
  assert [r["step"] for r in rows] == [90, 100]
  for row in rows:
    assert row["probe_rel_diff"] >= 0 and "held-out test F1: D2L minus control" in row
    assert {"NIAH 1x D2L", "NIAH 1x control", "NIAH 2x D2L"} <= set(row)
  assert (tmp_path / "curve.md").read_text().startswith("| step |")
  with pytest.raises(FileNotFoundError, match="no checkpoint of step 7"):
    learning_curve(config.workdir, [7])


def test_harness_bundle_answers_like_d2l_eval(trained, tmp_path):
  """`d2l eval --export-harness-tasks DIR` then `hyperlora harness DIR`: lm-evaluation-harness on
  the exported base and per-document D2L adapters gives our answers to every question, without
  the document, with it in context (ICL), with its own adapter and with another document's (the
  control), and on the haystacks; the scores agree where the answers do. Asking for a single
  document (no control) or an existing directory is refused with nothing written."""
  pytest.importorskip("lm_eval")
  from d2l_jax.cli import main
  from hyperlora.cli import main as hyperlora_main

  _, config = trained
  bundle = tmp_path / "bundle"
  argv = ["eval", "--checkpoint", config.workdir, "--export-harness-tasks", str(bundle)]
  assert main([*argv, "--documents", "1"]) == 2 and not bundle.exists()
  assert main([*argv, "--documents", "2", "--niah-depths", "2"]) == 0
  assert sorted(os.listdir(bundle / "adapters" / "d2l")) == ["niah000", "niah001", "qa000", "qa001"]
  manifest = json.loads((bundle / "ours.json").read_text())
  assert manifest["match"]["qa000"] == "squad" and manifest["match"]["niah001_icl"] == "digits"
  assert hyperlora_main(["harness", str(bundle)]) == 0
  rows = json.loads((bundle / "harness.json").read_text())["rows"]
  assert sorted({r["adapter"] for r in rows}) == ["base", "control", "d2l", "icl"]
  assert len(rows) == 4 * 4  # (base, ICL, D2L, control) x (2 documents + 2 haystacks)
  ours = {(e["variant"], e["task"]): e for e in manifest["entries"]}
  for row in rows:
    assert row["examples"] == len(ours[row["adapter"], row["task"]]["answers"]) > 0
    assert row["answers differ"] == 0, row
    if row["task"].startswith("qa"):  # the same answers, SQuAD-normalised both ways
      assert row["harness exact match"] == row["d2l eval exact match"]
  before = sorted(os.listdir(bundle))
  assert main([*argv, "--documents", "2"]) == 2
  assert sorted(os.listdir(bundle)) == before


def test_niah_lengths_from_the_command_line_past_the_serving_rank(trained, tmp_path, capsys):
  """`d2l eval --niah-multiples/--niah-depths` choose the haystacks; the evaluation internalises a
  haystack of more chunks than a served adapter may hold (its rank stays in JAX); a bad list is
  one line before anything loads."""
  from d2l_jax.cli import main
  from d2l_jax.evaluate import evaluate

  _, config = trained
  served = Internalizer(config.workdir).default_max_chunks
  multiple = served * 8 // config.data.niah_max_len + 1  # chunks of 8 tokens: more than served
  result = evaluate(
    config.workdir,
    methods=("d2l",),
    overrides={
      "documents": 2,
      "train_documents": 0,
      "niah_multiples": (multiple,),
      "niah_depths": 2,
      "niah_chunk_len": 8,
    },
  )
  row = {r["method"]: r for r in result["niah"]}["D2L adapter"]
  assert list(row) == ["method", f"{multiple}x ({multiple * config.data.niah_max_len} tok)"]
  (norms,) = result["niah_norms"]  # the chunks' deltas beside the needle's
  assert norms["chunks"] > served and norms["needle chunk dW norm"] > 0
  assert norms["whole adapter dW norm"] > norms["other chunk dW norm"] > 0
  argv = ["eval", "--checkpoint", config.workdir, "--methods", "d2l", "--documents", "2"]
  out = tmp_path / "eval.json"
  assert main([*argv, "--niah-multiples", "1", "--niah-depths", "3", "--out", str(out)]) == 0
  assert list(json.loads(out.read_text())["niah"][0])[1:] == ["1x (96 tok)"]
  with pytest.raises(SystemExit) as exit_info:
    main([*argv, "--niah-multiples", "1,0"])
  assert exit_info.value.code == 2 and "above 0" in capsys.readouterr().err
