"""Orbax checkpoints of a training run: the train state plus the config that made it.

Resuming never silently starts over. A checkpoint counts as damaged only on Orbax's own signals: the
step is not finalized, or its step metadata or its state's tree metadata is missing or unparseable.
A damaged newest checkpoint is set aside (renamed `<step>.damaged`) and the one before it is used.
Any
other failure to read (a storage hiccup, an unknown error) stops with `CheckpointReadError` and
leaves every checkpoint as it was: rerunning later resumes from them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)

STEP_METADATA = "_CHECKPOINT_METADATA"  # Orbax's per-step metadata file


class CheckpointReadError(RuntimeError):
  """A checkpoint could not be read for a reason other than damage; nothing was changed on disk."""


class CheckpointWriteError(RuntimeError):
  """A checkpoint could not be written (read-only or full storage, ...). Orbax's writer threads
  may be left blocked after such a failure, so a command that gets one must exit at once
  (cli_config.guarded does) rather than wait for them."""


@contextlib.contextmanager
def _writing(mngr: ocp.CheckpointManager, what: str):
  try:
    yield
  except Exception as err:
    raise CheckpointWriteError(
      f"could not write {what} in {mngr.directory} ({type(err).__name__}: {err}); the "
      f"checkpoints already there are as they were: fix the storage (space, permissions), then "
      f"run the same command to resume from the last one"
    ) from err


def manager(directory: str, keep: int = 3, save_every: int = 1) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
    max_to_keep=keep, save_interval_steps=save_every, create=True, enable_async_checkpointing=True
  )
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(mngr: ocp.CheckpointManager, step: int, state, config: dict, force: bool = False) -> bool:
  """Starts writing checkpoint `step` in the background; CheckpointWriteError if this or the
  previous background write failed."""
  with _writing(mngr, f"checkpoint step {step}"):
    return mngr.save(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config)),
      force=force,
    )


def wait(mngr: ocp.CheckpointManager) -> None:
  """Blocks until the background write is done; CheckpointWriteError if it failed."""
  with _writing(mngr, "a checkpoint"):
    mngr.wait_until_finished()


def check_background_write(mngr: ocp.CheckpointManager) -> None:
  """Raises CheckpointWriteError as soon as a finished background write has failed (called every
  step, so a failure stops training within a step, not at the next checkpoint). Without a write
  in progress, waiting returns at once with its outcome. One process alone: in a multi-host run
  the processes would not agree on when to wait, so the failure surfaces at the next save."""
  if jax.process_count() == 1 and not mngr.is_saving_in_progress():
    wait(mngr)


def config_json(config) -> dict:
  """An ml_collections ConfigDict (or dict) as plain JSON data."""
  return json.loads(config.to_json() if hasattr(config, "to_json") else json.dumps(config))


def read_config(directory: str) -> dict:
  """The config saved with the latest checkpoint, without restoring arrays."""
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no checkpoint directory {directory!r}")
  with ocp.CheckpointManager(os.path.abspath(directory)) as mngr:
    step = mngr.latest_step()
    if step is None:
      raise FileNotFoundError(f"{directory!r} holds no finished checkpoint")
    return _saved_config(mngr, step)


def _saved_config(mngr: ocp.CheckpointManager, step: int) -> dict:
  try:
    return dict(
      mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    )
  except Exception as err:
    raise CheckpointReadError(
      f"could not read the config saved with checkpoint step {step} in "
      f"{mngr.directory} ({type(err).__name__}: {err}); every checkpoint was "
      f"left as it was"
    ) from err


def _state_metadata(step_dir: epath.Path):
  """Orbax's metadata of a step's train state (tree, shapes, dtypes), read synchronously."""
  return ocp.Checkpointer(ocp.StandardCheckpointHandler()).metadata(step_dir / "state")


def damage(step_dir: str) -> str | None:
  """Why Orbax's own metadata says the checkpoint in `step_dir` is damaged, or None when intact.

  Raises CheckpointReadError when the metadata cannot be read for another reason (e.g. storage).
  """
  path = epath.Path(step_dir)
  try:
    if not ocp.step.is_checkpoint_finalized(path):
      return "it was never finalized"
    json.loads((path / STEP_METADATA).read_text())
    if _state_metadata(path).item_metadata is None:
      return "Orbax finds no tree metadata for its state"
  except FileNotFoundError as err:
    return f"its metadata is missing ({err})"
  except json.JSONDecodeError as err:  # What Orbax's metadata readers raise on a truncated file.
    return f"its metadata is incomplete ({err})"
  except Exception as err:
    raise CheckpointReadError(
      f"could not read the metadata of checkpoint {step_dir} ({err}); every "
      f"checkpoint was left as it was: rerun once the storage is readable"
    ) from err
  return None


def _leaf_shapes(tree) -> list:
  return sorted((tuple(x.shape), np.dtype(x.dtype).name) for x in jax.tree.leaves(tree))


def _check_matches(step_dir: str, target) -> None:
  """Refuses a checkpoint whose arrays (shapes, dtypes; from its tree metadata) differ from what
  this config builds: a config problem, not damage."""
  saved = _state_metadata(epath.Path(step_dir)).item_metadata.tree
  have, want = _leaf_shapes(saved), _leaf_shapes(target)
  if have != want:
    missing = sorted(set(want) - set(have))[:3]
    raise ValueError(
      f"checkpoint {step_dir} does not match this config's model (different variant, "
      f"modules, rank or base model?): {len(have)} arrays saved, {len(want)} expected; "
      f"e.g. no saved array of (shape, dtype) {missing}"
    )


def set_aside_damaged(mngr: ocp.CheckpointManager) -> None:
  """Moves damaged checkpoints (see `damage`), newest first, aside to `<step>.damaged` with a
  warning, until the newest one is intact (or none is left)."""
  steps = sorted(mngr.all_steps(), reverse=True)
  for step in steps:
    step_dir = os.path.join(str(mngr.directory), str(step))
    reason = damage(step_dir)
    if reason is None:
      return
    log.warning(
      "checkpoint step %d in %s is damaged: %s; moved aside to %s.damaged, trying an older one",
      step,
      mngr.directory,
      reason,
      step_dir,
    )
    if jax.process_index() == 0:
      os.replace(step_dir, f"{step_dir}.damaged")
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("damaged checkpoint set aside")
    mngr.reload()
  if steps:  # Every one was damaged: starting over must be the user's decision.
    raise CheckpointReadError(
      f"every checkpoint in {mngr.directory} is damaged (moved aside as "
      f"*.damaged); delete them to start from scratch"
    )


def restore(mngr: ocp.CheckpointManager, like_state, step: int | None = None):
  """The newest intact checkpoint (or the one of `step`), laid out like `like_state` (same shapes,
  dtypes and shardings: restoring onto a different mesh works). None when there is none yet.

  Damaged checkpoints newer than the one restored are set aside (`set_aside_damaged`); a failed
  read of an intact one raises CheckpointReadError and changes nothing.
  """
  if step is None:
    set_aside_damaged(mngr)
    step = mngr.latest_step()
    if step is None:
      return None
  elif step not in mngr.all_steps():
    raise FileNotFoundError(
      f"no checkpoint of step {step} in {mngr.directory}; it holds steps {sorted(mngr.all_steps())}"
    )
  step_dir = os.path.join(str(mngr.directory), str(step))
  reason = damage(step_dir)
  if reason is not None:
    raise ValueError(f"checkpoint {step_dir} is damaged: {reason}")
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
  _check_matches(step_dir, target)
  try:
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
  except Exception as err:
    raise CheckpointReadError(
      f"could not read checkpoint step {step} in {mngr.directory} ({type(err).__name__}: {err}); "
      f"every checkpoint was left as it was: rerun to resume once it is readable, or move "
      f"{step_dir} aside if it is damaged"
    ) from err
  return restored["state"]


def config_difference(old: dict, new: dict, keys: dict[str, str]) -> str | None:
  """What differs between two saved configs in `keys` (config key -> what it means), e.g.
  'base model differs: a vs b', or None when they agree."""
  as_json = lambda value: json.loads(json.dumps(value))  # tuples and lists compare equal
  for key, describe in keys.items():
    if as_json(old.get(key)) != as_json(new.get(key)):
      return f"{describe} differs: {old.get(key)} vs {new.get(key)}"
  return None


# Saved-config fields that never change what training computes (where logs and checkpoints go
# and how often, how the step is laid out or recomputed, evaluation): a resumed run may change
# them freely. A method adds its own (run(..., free_keys=...)).
FREE_KEYS = (
  "workdir",
  "mesh",
  "eval",
  "train.log_every",
  "train.ckpt_every",
  "train.keep_checkpoints",
  "train.remat",
  "train.allow_config_change",
)


def _flatten(tree, prefix: str = "") -> dict:
  if not isinstance(tree, dict):
    return {prefix: json.loads(json.dumps(tree))}  # tuples and lists compare equal
  out = {}
  for key, value in tree.items():
    out.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
  return out


def config_changes(old: dict, new: dict, free_keys=FREE_KEYS) -> list[str]:
  """'train.lr 0.0003 -> 0.001' for every saved-config field (dotted) whose value differs, except
  `free_keys` (fields or whole sections). Fields only one side has are not compared: a field added
  to the code since (or removed) keeps its default's meaning."""
  free = lambda key: any(key == f or key.startswith(f + ".") for f in free_keys)
  before, after = _flatten(old), _flatten(new)
  return [
    f"{key} {before[key]} -> {after[key]}"
    for key in sorted(before.keys() & after.keys())
    if not free(key) and before[key] != after[key]
  ]


def check_resumable(
  mngr: ocp.CheckpointManager,
  saved: dict,
  keys: dict[str, str],
  free_keys=FREE_KEYS,
  allow_change: bool = False,
) -> list[str]:
  """Refuses to resume a checkpoint written by a config that differs in `keys` (config key ->
  what it means; e.g. one that makes adapters of another shape), or in any field that changes what
  training computes (data, batch, seed, optimizer, schedule, loss, steps) unless `allow_change`.
  Returns the allowed changes, for the run's logs ([] when none or nothing to resume)."""
  step = mngr.latest_step()
  if step is None:
    return []
  old = _saved_config(mngr, step)
  difference = config_difference(old, saved, keys)
  if difference:
    raise ValueError(
      f"{str(mngr.directory)!r} holds a checkpoint of another config ({difference}); use a "
      f"fresh --config.workdir or the original config"
    )
  changes = config_changes(old, saved, free_keys)
  if changes and not allow_change:
    raise ValueError(
      f"{str(mngr.directory)!r} holds step {step} of a run with another config: "
      f"{'; '.join(changes)}; resume with the original values, use a fresh --config.workdir, or "
      f"pass --config.train.allow_config_change=True to continue with the change (e.g. more "
      f"steps; it is recorded in logs/events.jsonl)"
    )
  return changes
