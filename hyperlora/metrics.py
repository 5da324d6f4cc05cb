"""Metric writers: TensorBoard event files (tensorboardX) plus a JSON-lines log; process 0 only."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from tensorboardX import SummaryWriter


class MetricWriter:
  def __init__(self, logdir: str):
    self.enabled = jax.process_index() == 0
    if not self.enabled:
      return
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


def _cells(rows: list[dict], float_format: str) -> tuple[list[str], list[list[str]]]:
  columns = list(dict.fromkeys(k for r in rows for k in r))
  fmt = lambda v: format(v, float_format) if isinstance(v, float) else str(v)
  return columns, [[fmt(r.get(c, "-")) for c in columns] for r in rows]


def print_table(rows: list[dict], float_format: str = ".3f") -> None:
  """Rows of a results table (dicts; floats in float_format), columns in first-seen order."""
  columns, cells = _cells(rows, float_format)
  widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
  print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
  for row in cells:
    print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def markdown_table(rows: list[dict], float_format: str = ".3f") -> str:
  """The same table as GitHub Markdown."""
  columns, cells = _cells(rows, float_format)
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells]) + "\n"


def bootstrap_ci(
  groups: list, n_resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
  """(mean, low, high): the mean of all items and its bootstrap interval, resampling groups (tasks,
  documents) and then the items within each drawn group. groups: a list of item-score lists.
  Seeded, so a table is the same on every run."""
  groups = [np.asarray(g, np.float64) for g in groups if len(g)]
  if not groups:
    raise ValueError("bootstrap_ci needs at least one non-empty group")
  rng = np.random.default_rng(seed)
  means = np.empty(n_resamples)
  for i in range(n_resamples):
    drawn = [groups[j] for j in rng.integers(0, len(groups), len(groups))]
    means[i] = np.mean(np.concatenate([g[rng.integers(0, len(g), len(g))] for g in drawn]))
  tail = (1.0 - level) / 2 * 100
  low, high = np.percentile(means, [tail, 100 - tail])
  return float(np.mean(np.concatenate(groups))), float(low), float(high)


def with_ci(mean: float, low: float, high: float, float_format: str = ".3f") -> str:
  """'0.512 [0.431, 0.590]'."""
  return f"{mean:{float_format}} [{low:{float_format}}, {high:{float_format}}]"
