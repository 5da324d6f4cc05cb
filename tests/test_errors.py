"""Bad input fails with an error that names the problem."""

import json
import shutil

import jax
import pytest

import hyperlora
from hyperlora import lora as lora_lib
from hyperlora import peft_io
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
  with pytest.raises(ValueError, match=r"layers/mlp/gate_proj/kernel has shape \(3, 64, 96\), "
                                       r"the config needs \(3, 64, 128\)"):
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
  adapter = peft_io.export(lora_lib.init(jax.random.key(0), wide.config, ["q_proj"], 4),
                           str(tmp_path / "adapter"))
  with pytest.raises(ValueError, match=r"does not fit base model .*q_proj has A \(3, 4, 32\)"):
    peft_io.load(adapter, loaded.config)


def test_unknown_target_module(tiny_model):
  path, _ = tiny_model("llama")
  loaded = hyperlora.load(path, with_tokenizer=False)
  with pytest.raises(ValueError, match="unknown LoRA target module 'qkv_proj'"):
    lora_lib.init(jax.random.key(0), loaded.config, ["qkv_proj"], 4)


def test_not_an_adapter_directory(tmp_path):
  with pytest.raises(FileNotFoundError, match="not a PEFT adapter directory: missing adapter_config.json"):
    peft_io.load(str(tmp_path))
