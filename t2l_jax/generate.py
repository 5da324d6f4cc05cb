"""A trained T2L run -> LoRA adapters for new descriptions (in JAX, or as PEFT directories)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

import hyperlora
from hyperlora import base_weights, peft_io, run_dir
from t2l_jax import encoder as encoder_lib
from t2l_jax import reconstruct
from t2l_jax.hypernet import HyperSpec, T2LHypernet, init_params


class Generator:
  """Loads a T2L run's latest checkpoint (or that of `step`); call it with descriptions to get
  adapters. `encoder`: the run's task encoder when the caller has already built it (`t2l eval`
  has, with the base model), so it is not loaded twice."""

  def __init__(
    self,
    workdir: str,
    base_model: str | None = None,
    step: int | None = None,
    encoder=None,
  ):
    self.run = run_dir.open_run(workdir, "t2l")
    self.workdir, self.config = workdir, self.run.config
    self.base_model = base_model or self.config.base_model
    self.spec = self.run.spec(HyperSpec, base_weights.load_config(self.base_model))
    self.embed_dim = self.run.saved["embed_dim"]
    self.params = self.run.restore_params(
      jax.eval_shape(lambda: init_params(self.spec, self.embed_dim, jax.random.key(0))), step
    )
    self.hypernet = T2LHypernet(self.spec)
    self.encoder = encoder or self._encoder()
    # A reconstruction run on z-scored targets maps its outputs back with the library's statistics.
    stats_file = self.run.path(reconstruct.STATS_FILE)
    stats = reconstruct.load_stats(stats_file) if os.path.isfile(stats_file) else None
    adapters = lambda p, e: self.hypernet.apply({"params": p}, e)
    if stats is not None:
      adapters = lambda p, e: reconstruct.unnormalise(self.hypernet.apply({"params": p}, e), stats)
    self.apply = jax.jit(adapters)

  def _encoder(self):
    enc = self.config.encoder
    # The base-model encoder embeds with the base itself; the others load their own weights.
    base = hyperlora.load(self.base_model) if enc.kind == "base" else None
    return encoder_lib.make_encoder(enc.kind, base, enc.path, enc.pooling)

  def __call__(self, descriptions: list[str]):
    """Batched LoRA, one adapter per description."""
    embeddings = self.encoder(list(descriptions))  # Raises on an empty description.
    return self.apply(self.params, jnp.asarray(embeddings))

  def metadata(self, description: str) -> dict:
    """What hyperlora.json records beside a generated adapter."""
    return {
      "description": description,
      "t2l_checkpoint": os.path.abspath(self.run.path("checkpoints")),
    }

  def export(
    self, description: str, out_dir: str, overwrite: bool = False, ranks: tuple | None = None
  ) -> str:
    """The description's adapter as a PEFT directory (zero-padded to one of `ranks` if given)."""
    lora = self([description]).example(0)
    return peft_io.export(
      lora, out_dir, self.base_model, self.metadata(description), overwrite, ranks
    )

  def export_many(
    self,
    descriptions: dict[str, str],
    out_dir: str,
    overwrite: bool = False,
    ranks: tuple | None = None,
    group: int = 32,
  ) -> list[str]:
    """{name: description} -> one PEFT directory out_dir/name each, `group` adapters generated at
    a time (memory stays that of one group whatever the suite's size). Every target is checked
    before the first is written."""
    names = list(descriptions)
    dirs = [os.path.join(out_dir, n) for n in names]
    for d in dirs:
      peft_io.check_out_dir(d, overwrite)
    written = []
    for start in tqdm(range(0, len(names), group), desc="adapters", disable=len(names) <= group):
      part = names[start : start + group]
      written += peft_io.export_batch(
        self([descriptions[n] for n in part]),
        dirs[start : start + group],
        self.base_model,
        [self.metadata(descriptions[n]) for n in part],
        overwrite,
        ranks,
      )
    return written
