"""T2L by reconstruction: learn to reproduce a library of per-task LoRAs (PEFT directories).

Loss: L1 on the factors A and B, or on dW = scale * B A (config.recon.loss = 'factors' | 'delta').
The reference found this does not generalise zero-shot (the target LoRAs are not clustered by
task), but it compresses a library into one network. The library itself can come from
`train_task_loras`, which trains and exports one LoRA per task (the oracle baseline).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from hyperlora import lora as lora_lib
from hyperlora import peft_io
from hyperlora.losses import lora_l1


def load_library(library_dir: str, task_names: list[str], model_config) -> dict[str, lora_lib.LoRA]:
  """task name -> its LoRA (scale folded into B) from library_dir/<task name>/ (PEFT format)."""
  library = {}
  for name in task_names:
    path = os.path.join(library_dir, name)
    if not os.path.isdir(path):
      raise FileNotFoundError(f"the LoRA library {library_dir!r} has no adapter for task {name!r}")
    library[name] = lora_lib.fold_scale(peft_io.load(path, model_config))
  return library


def delta_l1(lora: lora_lib.LoRA, target: lora_lib.LoRA) -> jax.Array:
  ours, theirs = lora_lib.delta_weights(lora), lora_lib.delta_weights(target)
  return sum(jnp.mean(jnp.abs(ours[m] - theirs[m])) for m in ours) / len(ours)


def recon_loss_fn(hypernet, kind: str):
  if kind not in ("factors", "delta"):
    raise ValueError(f"recon.loss must be 'factors' or 'delta', not {kind!r}")
  distance = lora_l1 if kind == "factors" else delta_l1

  def loss_fn(params, base_params, batch, rng, deterministic):
    lora = hypernet.apply(
      {"params": params},
      batch["task_emb"],
      deterministic,
      rngs=None if deterministic else {"dropout": rng},
    )
    # Compare in the folded form (scale 1), like the library's adapters.
    loss = distance(lora_lib.fold_scale(lora), lora_lib.LoRA(batch["target"], 1.0))
    return loss, {"loss": loss}

  return loss_fn


class ReconBatches:
  """n tasks per batch, each with a random one of its description embeddings and its target LoRA."""

  def __init__(self, task_names, embeddings: dict, library: dict, tasks_per_batch: int, seed: int):
    self.names, self.embeddings, self.seed = list(task_names), embeddings, seed
    self.tasks_per_batch = min(tasks_per_batch, len(self.names))
    self.targets = {n: jax.device_get(library[n].weights) for n in self.names}

  def __call__(self, step: int) -> dict:
    """This process's rows of the global batch of `step`."""
    rng = np.random.default_rng([self.seed, step])
    names = [
      self.names[i] for i in rng.choice(len(self.names), self.tasks_per_batch, replace=False)
    ]
    emb = np.stack([self.embeddings[n][rng.integers(len(self.embeddings[n]))] for n in names])
    per_process = len(names) // jax.process_count()  # Every process draws the whole batch above.
    own = slice(jax.process_index() * per_process, (jax.process_index() + 1) * per_process)
    names, emb = names[own], emb[own]
    target = jax.tree.map(lambda *xs: np.stack(xs), *[self.targets[n] for n in names])
    return {"task_emb": emb.astype(np.float32), "target": target}
