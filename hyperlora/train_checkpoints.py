"""Orbax checkpoints of a training run: the train state plus the config that made it.

A step holds three Orbax items, so inference can read the parameters alone:
  params/      the trainable parameters (all that inference restores)
  optimizer/   step, optimizer state and rng (only training reads them back)
  config/      the saved config (JSON)
Checkpoints written before this layout hold one item `state/` (the whole TrainState); they still
resume, and their parameters are read alone from it (an Orbax partial restore), so neither layout
needs the optimizer to be rebuilt to be used for inference.

Resuming never silently starts over. A checkpoint counts as damaged only on Orbax's own signals: the
step is not finalized, or its step metadata or an array item's tree metadata is missing or
unparseable. A damaged newest checkpoint is set aside (renamed `<step>.damaged`) and the one before
it is used. Any other failure to read (a storage hiccup, an unknown error) stops with
`CheckpointReadError` and leaves every checkpoint as it was: rerunning later resumes from them.
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
ARRAY_ITEMS = ("params", "optimizer")
LEGACY_ITEM = "state"  # the whole TrainState, as checkpoints were written before ARRAY_ITEMS


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


def manager(
  directory: str, keep: int = 3, save_every: int = 1, create: bool = True
) -> ocp.CheckpointManager:
  """create=False for readers: a reader never leaves a directory behind where there was none."""
  options = ocp.CheckpointManagerOptions(
    max_to_keep=keep,
    save_interval_steps=save_every,
    create=create,
    enable_async_checkpointing=True,
  )
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def _split(state) -> dict:
  """A TrainState as the checkpoint's array items."""
  return {
    "params": state.params,
    "optimizer": {"step": state.step, "opt_state": state.opt_state, "rng": state.rng},
  }


def save(mngr: ocp.CheckpointManager, step: int, state, config: dict, force: bool = False) -> bool:
  """Starts writing checkpoint `step` (a TrainState) in the background; CheckpointWriteError if
  this or the previous background write failed."""
  items = {name: ocp.args.StandardSave(tree) for name, tree in _split(state).items()}
  with _writing(mngr, f"checkpoint step {step}"):
    return mngr.save(
      step, args=ocp.args.Composite(**items, config=ocp.args.JsonSave(config)), force=force
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


def _array_items(step_dir: epath.Path) -> tuple[str, ...]:
  """The items holding arrays in a step: ARRAY_ITEMS, or LEGACY_ITEM in an older checkpoint."""
  return (LEGACY_ITEM,) if (step_dir / LEGACY_ITEM).exists() else ARRAY_ITEMS


def _tree_metadata(step_dir: epath.Path, item: str):
  """Orbax's metadata of one array item (tree, shapes, dtypes), read synchronously."""
  return ocp.Checkpointer(ocp.StandardCheckpointHandler()).metadata(step_dir / item)


def damage(step_dir: str) -> str | None:
  """Why Orbax's own metadata says the checkpoint in `step_dir` is damaged, or None when intact.

  Raises CheckpointReadError when the metadata cannot be read for another reason (e.g. storage).
  """
  path = epath.Path(step_dir)
  try:
    if not ocp.step.is_checkpoint_finalized(path):
      return "it was never finalized"
    json.loads((path / STEP_METADATA).read_text())
    for item in _array_items(path):
      if _tree_metadata(path, item).item_metadata is None:
        return f"Orbax finds no tree metadata for its {item}"
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


def _check_matches(step_dir: str, targets: dict) -> None:
  """Refuses a checkpoint whose arrays (shapes, dtypes; from the tree metadata of the items in
  `targets`) differ from what this config builds: a config problem, not damage."""
  path = epath.Path(step_dir)
  saved = [_tree_metadata(path, item).item_metadata.tree for item in targets]
  _check_matches_trees(step_dir, saved, list(targets.values()))


def _check_matches_trees(step_dir: str, saved, target) -> None:
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


def _intact_step(mngr: ocp.CheckpointManager, step: int | None) -> int | None:
  """The newest intact step (setting damaged newer ones aside), or `step` checked to exist and be
  intact; None when there is no checkpoint yet."""
  if step is None:
    set_aside_damaged(mngr)
    step = mngr.latest_step()
    if step is None:
      return None
  elif step not in mngr.all_steps():
    raise FileNotFoundError(
      f"no checkpoint of step {step} in {mngr.directory}; it holds steps {sorted(mngr.all_steps())}"
    )
  reason = damage(_step_dir(mngr, step))
  if reason is not None:
    raise ValueError(f"checkpoint {_step_dir(mngr, step)} is damaged: {reason}")
  return step


def _step_dir(mngr: ocp.CheckpointManager, step: int) -> str:
  return os.path.join(str(mngr.directory), str(step))


@contextlib.contextmanager
def _reading(mngr: ocp.CheckpointManager, step: int):
  try:
    yield
  except Exception as err:
    raise CheckpointReadError(
      f"could not read checkpoint step {step} in {mngr.directory} ({type(err).__name__}: {err}); "
      f"every checkpoint was left as it was: rerun to resume once it is readable, or move "
      f"{_step_dir(mngr, step)} aside if it is damaged"
    ) from err


def restore(mngr: ocp.CheckpointManager, like_state, step: int | None = None):
  """The newest intact checkpoint (or the one of `step`) as a TrainState laid out like
  `like_state` (same shapes, dtypes and shardings: restoring onto a different mesh works). None
  when there is none yet.

  Damaged checkpoints newer than the one restored are set aside (`set_aside_damaged`); a failed
  read of an intact one raises CheckpointReadError and changes nothing.
  """
  step = _intact_step(mngr, step)
  if step is None:
    return None
  step_dir = _step_dir(mngr, step)
  legacy = _array_items(epath.Path(step_dir)) == (LEGACY_ITEM,)
  trees = {LEGACY_ITEM: like_state} if legacy else _split(like_state)
  targets = {name: jax.tree.map(ocp.utils.to_shape_dtype_struct, t) for name, t in trees.items()}
  _check_matches(step_dir, targets)
  with _reading(mngr, step):
    args = {name: ocp.args.StandardRestore(t) for name, t in targets.items()}
    restored = mngr.restore(step, args=ocp.args.Composite(**args))
  if legacy:
    return restored[LEGACY_ITEM]
  return like_state.replace(params=restored["params"], **restored["optimizer"])


def restore_params(directory: str, abstract_params, step: int | None = None):
  """The trainable params alone of the newest intact checkpoint in `directory` (or of `step`),
  laid out like `abstract_params` (shapes and dtypes; shardings where given): what inference
  needs, read without the optimizer (so a change to the optimizer never makes a run unreadable).
  FileNotFoundError when there is no finished checkpoint."""
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no checkpoint directory {directory!r}")
  mngr = manager(directory, create=False)
  try:
    step = _intact_step(mngr, step)
    if step is None:
      raise FileNotFoundError(f"no finished checkpoint in {directory!r}")
    step_dir = epath.Path(_step_dir(mngr, step))
    target = jax.tree.map(_with_sharding, abstract_params)
    if _array_items(step_dir) == ARRAY_ITEMS:
      _check_matches(str(step_dir), {"params": target})
      with _reading(mngr, step):
        args = ocp.args.Composite(params=ocp.args.StandardRestore(target))
        return mngr.restore(step, args=args)["params"]
    # An older checkpoint: the params subtree of its whole state, nothing else read.
    saved = _tree_metadata(step_dir, LEGACY_ITEM).item_metadata.tree
    _check_matches_trees(str(step_dir), saved["params"], target)
    with _reading(mngr, step):
      restore_args = jax.tree.map(
        lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding, global_shape=x.shape, dtype=x.dtype),
        target,
      )
      args = ocp.args.PyTreeRestore(
        {"params": target}, restore_args={"params": restore_args}, partial_restore=True
      )
      return ocp.PyTreeCheckpointer().restore(step_dir / LEGACY_ITEM, args=args)["params"]
  finally:
    mngr.close()


def _with_sharding(x) -> jax.ShapeDtypeStruct:
  """An abstract array with a sharding (this process's first device when it has none)."""
  sharding = getattr(x, "sharding", None) or jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)


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
