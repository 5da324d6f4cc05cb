"""A run directory: what `t2l train` and `d2l train` write, and the one way to load a run from it.

  WORKDIR/checkpoints/   Orbax steps: train state + the saved config (with "method" and the spec)
  WORKDIR/logs/          metrics.jsonl and TensorBoard events
  WORKDIR/cache/         embeddings, teacher targets (safe to delete)
  WORKDIR/<extra>/       a method's own subdirectories (T2L: multitask/, oracle/)

Everything about a run is read relative to the directory it is in now, never to the path it was
trained at, so a run directory can be moved or copied to another machine.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import ml_collections

from hyperlora import train as train_lib
from hyperlora import train_checkpoints

METHODS = {"t2l": "Text-to-LoRA (`t2l train`)", "d2l": "Doc-to-LoRA (`d2l train`)"}
# Saved-config keys derived from the config at training time (not config fields).
DERIVED_KEYS = ("method", "spec", "embed_dim")


def paths(workdir: str, extra: tuple[str, ...] = ()) -> dict[str, str]:
  return {name: os.path.join(workdir, name) for name in ("checkpoints", "logs", "cache", *extra)}


def saved_config(config, method: str, spec, **derived) -> dict:
  """What a checkpoint keeps besides arrays: the config, the method that wrote it and its spec."""
  out = train_checkpoints.config_json(config)
  out.update(method=method, spec=dataclasses.asdict(spec), **derived)
  return out


def _method_of(saved: dict) -> str:
  if "method" in saved:
    return saved["method"]
  return "t2l" if "embed_dim" in saved else "d2l"  # Runs saved before the method was recorded.


@dataclasses.dataclass
class Run:
  """A finished (or preempted) run, as its directory holds it."""

  workdir: str
  method: str
  saved: dict  # the saved config as JSON data

  @property
  def config(self) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(
      {k: v for k, v in self.saved.items() if k not in DERIVED_KEYS}
    )
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
    """Trainable params of the latest checkpoint in WORKDIR/subdir (or of `step`); the optimizer
    state is read only for its layout."""
    tc = self.saved["train"]
    optimizer = train_lib.make_optimizer(tc["lr"], 1, grad_accum=tc.get("grad_accum", 1))
    abstract = jax.eval_shape(lambda p: train_lib.init_state(p, optimizer, 0), abstract_params)
    mngr = train_checkpoints.manager(self.path(subdir))
    try:
      state = train_checkpoints.restore(mngr, abstract, step)
    finally:
      mngr.close()
    if state is None:
      raise FileNotFoundError(f"no finished checkpoint in {self.path(subdir)!r}")
    return state.params


def open_run(workdir: str, method: str) -> Run:
  """The run in `workdir`, refusing one written by the other method with what to do instead."""
  checkpoints = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(checkpoints):
    raise FileNotFoundError(
      f"{workdir!r} is not a run directory (no checkpoints/ in it); pass the "
      f"--config.workdir of a `{method} train` run"
    )
  saved = train_checkpoints.read_config(checkpoints)
  found = _method_of(saved)
  if found != method:
    raise ValueError(
      f"{workdir!r} holds a {METHODS[found]} run, not a {METHODS[method]} one; use "
      f"`{found} ...` with it, or give a `{method} train` workdir"
    )
  return Run(workdir, method, saved)
