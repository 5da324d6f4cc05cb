"""`hyperlora export-base`: any base model we load, written as a Hugging Face directory that
transformers loads with our logits (the tiny families here; the embedded SmolLM2 GGUF in
test_gguf.py), and a target that is not new is refused with nothing touched."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import hyperlora
from hyperlora.cli import main
from hyperlora.staging import check_new_dir
from tests.conftest import VOCAB


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma2"])
def test_exported_directory_loads_in_transformers_with_our_logits(
  tiny_model, tmp_path, rng, family
):
  path, _ = tiny_model(family)
  out = tmp_path / "hf"
  assert main(["export-base", "--model", path, "--out", str(out)]) == 0
  loaded = hyperlora.load(path)
  theirs = transformers.AutoModelForCausalLM.from_pretrained(
    str(out), attn_implementation="eager"
  ).eval()
  ids = rng.integers(0, VOCAB, (2, 12))
  ours = loaded.module().apply({"params": loaded.params}, jnp.asarray(ids)).logits
  with torch.no_grad():
    expected = theirs(torch.tensor(ids)).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-4, rtol=0)
  # And it loads back into hyperlora as the same model.
  again = hyperlora.load(str(out))
  assert again.config == dataclasses.replace(loaded.config, name=again.config.name)
  assert again.tokenizer("a b c")["input_ids"] == loaded.tokenizer("a b c")["input_ids"]


def test_export_base_never_replaces_a_directory(tiny_model, tmp_path, capsys):
  path, _ = tiny_model("llama")
  precious = tmp_path / "precious"
  precious.mkdir()
  (precious / "notes.txt").write_text("keep me")
  assert main(["export-base", "--model", path, "--out", str(precious)]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: --out") and "nothing was written" in err and "\n" not in err
  assert [p.name for p in precious.iterdir()] == ["notes.txt"]
  assert [p.name for p in tmp_path.iterdir()] == ["precious"]  # no staging left behind
  with pytest.raises(ValueError, match="is a file"):
    check_new_dir(str(precious / "notes.txt"))
