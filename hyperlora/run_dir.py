"""A run directory: what `t2l train` and `d2l train` write, and the one way to load a run from it.

  WORKDIR/checkpoints/   Orbax steps: params, optimizer state, the saved config (with "method"
                         and the spec): train_checkpoints
  WORKDIR/logs/          metrics.jsonl and TensorBoard events
  WORKDIR/cache/         embeddings, teacher targets (safe to delete)
  WORKDIR/<extra>/       a method's own subdirectories (T2L: multitask/, oracle/)

Everything about a run is read relative to the directory it is in now, never to the path it was
trained at, so a run directory can be moved or copied to another machine.
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections

from hyperlora import methods, train_checkpoints

# Saved-config keys derived from the config at training time (not config fields).
DERIVED_KEYS = ("spec", "embed_dim")


def paths(workdir: str, extra: tuple[str, ...] = ()) -> dict[str, str]:
  return {name: os.path.join(workdir, name) for name in ("checkpoints", "logs", "cache", *extra)}


def saved_config(config, method: str, spec, **derived) -> dict:
  """What a checkpoint keeps besides arrays: the config, the method that wrote it and its spec."""
  out = train_checkpoints.config_json(config)
  out.update(method=method, spec=dataclasses.asdict(spec), **derived)
  return out


@dataclasses.dataclass
class Run:
  """A finished (or preempted) run, as its directory holds it."""

  workdir: str
  method: str
  saved: dict  # the saved config as JSON data

  @property
  def config(self) -> ml_collections.ConfigDict:
    """The run's config merged onto its method's defaults (methods.merged), so that fields added
    to the code since it was trained read their defaults."""
    saved = {k: v for k, v in self.saved.items() if k not in DERIVED_KEYS}
    config = methods.merged(methods.get(self.method), saved)
    config.workdir = self.workdir  # where it is now, not where it was trained
    return config

  def path(self, name: str) -> str:
    return os.path.join(self.workdir, name)

  def spec(self, spec_cls, model_config):
    """The saved hypernetwork spec, checked against the base model it is about to be used with."""
    saved = self.saved["spec"]
    spec = spec_cls(
      **{
        **saved,
        "modules": tuple(saved["modules"]),
        "dims": tuple(tuple(d) for d in saved["dims"]),
      }
    )
    expected = tuple(model_config.projection_dims(m) for m in spec.modules)
    width = getattr(spec, "feature_dim", model_config.hidden_size)
    if (
      spec.dims != expected
      or spec.num_layers != model_config.num_layers
      or width != model_config.hidden_size
    ):
      raise ValueError(
        f"run {self.workdir!r} was trained for another base model: it makes adapters for "
        f"{spec.num_layers} layers with (d_in, d_out) {spec.dims} (reading {width}-wide "
        f"activations), "
        f"but {model_config.name or model_config.family!r} has {model_config.num_layers} layers, "
        f"{expected} and width {model_config.hidden_size}; pass the base model it was trained with"
      )
    return spec

  def restore_params(
    self, abstract_params, step: int | None = None, subdir: str = "checkpoints"
  ) -> dict:
    """Trainable params of the latest checkpoint in WORKDIR/subdir (or of `step`), read alone:
    no optimizer is built, so any change to the optimizer leaves runs readable."""
    return train_checkpoints.restore_params(self.path(subdir), abstract_params, step)


def open_run(workdir: str, method: str) -> Run:
  """The run in `workdir`, refusing one written by the other method with what to do instead."""
  checkpoints = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(checkpoints):
    raise FileNotFoundError(
      f"{workdir!r} is not a run directory (no checkpoints/ in it); pass the "
      f"--config.workdir of a `{method} train` run"
    )
  saved = train_checkpoints.read_config(checkpoints)
  found = saved.get("method")
  if found not in methods.METHODS:
    raise ValueError(
      f"{workdir!r} holds a run that records no known method ({found!r}); it was written by "
      f"another program or version: train it again with `{method} train`"
    )
  if found != method:
    raise ValueError(
      f"{workdir!r} holds a {methods.get(found).describe()} run, not a "
      f"{methods.get(method).describe()} one; use `{found} ...` with it, or give a "
      f"`{method} train` workdir"
    )
  return Run(workdir, method, saved)
