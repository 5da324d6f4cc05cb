"""T2L by reconstruction: learn to reproduce a library of per-task LoRAs (PEFT directories).

Loss: L1 on the factors A and B, or on dW = scale * B A (config.recon.loss = 'factors' | 'delta').
With recon.z_score (the reference's default, factors only) the hypernetwork predicts each factor
element z-scored over the library's tasks, (x - mean) / (std + 1e-10), and its adapters are mapped
back with the library's mean and std (saved in the run directory) when generated.
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


EPS = 1e-10  # as the reference
STATS_FILE = "recon_target_stats.npz"


def target_stats(library: dict[str, lora_lib.LoRA]) -> dict:
  """{'mean' | 'std': {module: {'A' | 'B': array}}}: per element over the library's tasks (std
  unbiased, as torch.std), of the folded factors."""
  if len(library) < 2:
    raise ValueError("recon.z_score needs a library of at least 2 adapters (it divides by a std)")
  stacked = jax.tree.map(
    lambda *xs: np.stack(xs).astype(np.float64),
    *[jax.device_get(l.weights) for l in library.values()],
  )
  return {
    "mean": jax.tree.map(lambda x: x.mean(0).astype(np.float32), stacked),
    "std": jax.tree.map(lambda x: x.std(0, ddof=1).astype(np.float32), stacked),
  }


def z_score(weights: dict, stats: dict) -> dict:
  return jax.tree.map(lambda w, m, s: (w - m) / (s + EPS), weights, stats["mean"], stats["std"])


def unnormalise(lora: lora_lib.LoRA, stats: dict) -> lora_lib.LoRA:
  """The hypernetwork's z-scored factors (raw outputs, its scale ignored) -> a folded adapter."""
  weights = jax.tree.map(
    lambda z, m, s: z * (s + EPS) + m, lora.weights, stats["mean"], stats["std"]
  )
  return lora_lib.LoRA(weights, 1.0)


def save_stats(stats: dict, path: str) -> None:
  flat = {
    f"{k}/{m}/{f}": v for k, tree in stats.items() for m, w in tree.items() for f, v in w.items()
  }
  np.savez(path, **flat)


def load_stats(path: str) -> dict:
  stats = {}
  with np.load(path) as saved:
    for key in saved.files:
      kind, module, factor = key.split("/")
      stats.setdefault(kind, {}).setdefault(module, {})[factor] = jnp.asarray(saved[key])
  return stats


def delta_l1(lora: lora_lib.LoRA, target: lora_lib.LoRA) -> jax.Array:
  ours, theirs = lora_lib.delta_weights(lora), lora_lib.delta_weights(target)
  return sum(jnp.mean(jnp.abs(ours[m] - theirs[m])) for m in ours) / len(ours)


def recon_loss_fn(hypernet, kind: str, z_scored: bool = False):
  """L1 to the batch's target factors; z_scored: the targets are z-scores and the hypernetwork's
  raw outputs are compared with them as they are."""
  if kind not in ("factors", "delta"):
    raise ValueError(f"recon.loss must be 'factors' or 'delta', not {kind!r}")
  if z_scored and kind != "factors":
    raise ValueError("recon.z_score needs recon.loss='factors' (the reference z-scores factors)")
  distance = lora_l1 if kind == "factors" else delta_l1

  def loss_fn(params, base_params, batch, rng, deterministic):
    lora = hypernet.apply(
      {"params": params},
      batch["task_emb"],
      deterministic,
      rngs=None if deterministic else {"dropout": rng},
    )
    # Compare in the folded form (scale 1), like the library's adapters, or as z-scores.
    ours = lora_lib.LoRA(lora.weights, 1.0) if z_scored else lora_lib.fold_scale(lora)
    loss = distance(ours, lora_lib.LoRA(batch["target"], 1.0))
    return loss, {"loss": loss}

  return loss_fn


class ReconBatches:
  """n tasks per batch, each with a random one of its description embeddings and its target LoRA."""

  def __init__(
    self,
    task_names,
    embeddings: dict,
    library: dict,
    tasks_per_batch: int,
    seed: int,
    stats: dict | None = None,
  ):
    """stats: the library's target_stats, to train on z-scored targets."""
    self.names, self.embeddings, self.seed = list(task_names), embeddings, seed
    self.tasks_per_batch = min(tasks_per_batch, len(self.names))
    targets = {n: jax.device_get(library[n].weights) for n in self.names}
    self.targets = {n: z_score(t, stats) if stats else t for n, t in targets.items()}

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
