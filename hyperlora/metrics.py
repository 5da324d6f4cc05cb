"""Metric writers: TensorBoard event files (tensorboardX) plus a JSON-lines log; process 0 only."""

from __future__ import annotations

import json
import os

import jax


class MetricWriter:
  def __init__(self, logdir: str):
    self.enabled = jax.process_index() == 0
    if not self.enabled:
      return
    from tensorboardX import SummaryWriter

    os.makedirs(logdir, exist_ok=True)
    self._tb = SummaryWriter(logdir)
    self._jsonl = open(os.path.join(logdir, "metrics.jsonl"), "a")

  def write(self, step: int, metrics: dict, prefix: str = "") -> None:
    if not self.enabled:
      return
    for name, value in metrics.items():
      self._tb.add_scalar(f"{prefix}/{name}" if prefix else name, value, step)
    self._jsonl.write(json.dumps({"step": step, "prefix": prefix, **metrics}) + "\n")
    self._jsonl.flush()

  def close(self) -> None:
    if self.enabled:
      self._tb.close()
      self._jsonl.close()


def print_table(rows: list[dict], float_format: str = ".3f") -> None:
  """Rows of a results table (dicts; floats in float_format), columns in first-seen order."""
  columns = list(dict.fromkeys(k for r in rows for k in r))
  fmt = lambda v: format(v, float_format) if isinstance(v, float) else str(v)
  widths = [max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in columns]
  print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
  for r in rows:
    print("  ".join(fmt(r.get(c, "-")).ljust(w) for c, w in zip(columns, widths)))
