"""Orbax checkpoints of a training run: the train state plus the config that made it."""

from __future__ import annotations

import json
import logging
import os

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


def manager(directory: str, keep: int = 3, save_every: int = 1) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=save_every, create=True,
                                         enable_async_checkpointing=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save(mngr: ocp.CheckpointManager, step: int, state, config: dict, force: bool = False) -> bool:
  return mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 config=ocp.args.JsonSave(config)), force=force)


def read_config(directory: str, step: int | None = None) -> dict:
  """The config saved with a checkpoint (latest step unless given), without restoring arrays."""
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no checkpoint directory {directory!r}")
  with ocp.CheckpointManager(os.path.abspath(directory)) as mngr:
    step = mngr.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"{directory!r} holds no finished checkpoint")
    return dict(mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"])


def restore(mngr: ocp.CheckpointManager, like_state, step: int | None = None):
  """The newest readable checkpoint (or the one of `step`), laid out like `like_state` (same
  shapes, dtypes and shardings: restoring onto a different mesh works). A damaged newest checkpoint
  is skipped, with a warning, in favour of the one before. None when there is nothing to restore.
  """
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
  steps = sorted(mngr.all_steps(), reverse=True)
  if step is not None:
    if step not in steps:
      raise FileNotFoundError(f"no checkpoint of step {step} in {mngr.directory}; it holds steps "
                              f"{sorted(steps)}")
    steps = [step]
  for step in steps:
    try:
      restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    except (ValueError, KeyError, TypeError) as err:
      if _is_mismatch(err):
        raise ValueError(f"checkpoint step {step} in {mngr.directory} does not match this config's "
                         f"model (different variant, modules, rank or base model?): {err}") from err
      log.warning("checkpoint step %d in %s is unreadable (%s); trying an older one", step,
                  mngr.directory, err)
      continue
    except (OSError, RuntimeError) as err:
      log.warning("checkpoint step %d in %s is unreadable (%s); trying an older one", step,
                  mngr.directory, err)
      continue
    return restored["state"]
  if steps:
    log.warning("no readable checkpoint in %s: starting from scratch", mngr.directory)
  return None


def _is_mismatch(err: Exception) -> bool:
  """Shape/structure disagreements (a config problem), as opposed to damaged files."""
  text = str(err).lower()
  return any(word in text for word in ("shape", "structure", "mismatch", "tree"))


def config_json(config) -> dict:
  """An ml_collections ConfigDict (or dict) as plain JSON data."""
  return json.loads(config.to_json() if hasattr(config, "to_json") else json.dumps(config))


def check_resumable(mngr: ocp.CheckpointManager, saved: dict, keys: dict[str, str]) -> None:
  """Refuses to resume a checkpoint written by a config that differs in `keys` (config key ->
  what it means), e.g. one that makes adapters of another shape."""
  step = mngr.latest_step()
  if step is None:
    return
  old = dict(mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"])
  as_json = lambda value: json.loads(json.dumps(value))  # tuples and lists compare equal
  for key, describe in keys.items():
    if as_json(old.get(key)) != as_json(saved.get(key)):
      raise ValueError(f"{str(mngr.directory)!r} holds a checkpoint of another config ({describe} "
                       f"differs: {old.get(key)} vs {saved.get(key)}); use a fresh --config.workdir "
                       f"or the original config")


def restore_params(directory: str, abstract_params, train_config, step: int | None = None) -> dict:
  """Trainable params of the latest finished checkpoint in `directory`, or of `step` (optimizer
  state skipped after reading)."""
  from hyperlora import train as train_lib

  optimizer = train_lib.make_optimizer(train_config.lr, 1, grad_accum=train_config.get("grad_accum", 1))
  abstract = jax.eval_shape(lambda p: train_lib.init_state(p, optimizer, 0), abstract_params)
  mngr = manager(directory)
  state = restore(mngr, abstract, step)
  mngr.close()
  if state is None:
    raise FileNotFoundError(f"no finished checkpoint in {directory!r}")
  return state.params
