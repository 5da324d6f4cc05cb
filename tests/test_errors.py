"""Bad input fails with an error that names the problem."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import pytest

import hyperlora
from hyperlora import lora as lora_lib
from hyperlora import peft_io, run_dir
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
  from hyperlora import train_checkpoints

  mngr = train_checkpoints.manager(os.path.join(workdir, "checkpoints"))
  train_checkpoints.save(
    mngr, 1, {"w": jnp.zeros(2)}, {"method": method, "base_model": "smollm2"}, force=True
  )
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
  assert f"holds a {run_dir.METHODS[method]} run, not a {run_dir.METHODS[other]} one" in err
  assert len(err.strip().splitlines()) == 1, err  # one line, no traceback


def test_bad_config_override_is_one_line(capsys):
  from t2l_jax import cli as t2l_cli

  status = t2l_cli.main(["train", "--config", "configs/t2l/tiny.py", "--config.train.lr=abc"])
  err = capsys.readouterr().err
  assert status == 2 and "--config.train.lr=abc: could not convert string to float: 'abc'" in err
  assert "Traceback" not in err
