"""Metric writers: TensorBoard event files (tensorboardX) plus a JSON-lines log; process 0 only.

  logs/metrics.jsonl        one row per logged step: {"step", "prefix", metrics...}
  logs/<prefix>/events.*    TensorBoard events, one TensorBoard run per prefix (t2l, multitask, ...)
  logs/events.jsonl         what happened to the run besides metrics (e.g. a config change)

A resumed run redoes the steps after its checkpoint: `resume` drops their rows from metrics.jsonl
and tells TensorBoard to purge them, so no reader counts a step twice.
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
from tensorboardX import SummaryWriter

METRICS_FILE = "metrics.jsonl"
EVENTS_FILE = "events.jsonl"


class MetricWriter:
  def __init__(self, logdir: str):
    self.enabled = jax.process_index() == 0
    self.logdir = logdir
    if not self.enabled:
      return
    os.makedirs(logdir, exist_ok=True)
    self._tb: dict[str, SummaryWriter] = {}
    self._jsonl = open(os.path.join(logdir, METRICS_FILE), "a")

  def _board(self, prefix: str, purge_step: int | None = None) -> SummaryWriter:
    if prefix not in self._tb:
      self._tb[prefix] = SummaryWriter(os.path.join(self.logdir, prefix), purge_step=purge_step)
    return self._tb[prefix]

  def resume(self, prefix: str, step: int) -> None:
    """The run `prefix` restarts after `step`: its rows of later steps are dropped and TensorBoard
    purges its events from step + 1 on."""
    if not self.enabled:
      return
    path = os.path.join(self.logdir, METRICS_FILE)
    self._jsonl.close()
    with open(path) as f:
      rows = f.readlines()
    kept = [r for r in rows if not _after(r, prefix, step)]
    if len(kept) != len(rows):
      with open(path + ".tmp", "w") as f:
        f.writelines(kept)
      os.replace(path + ".tmp", path)
    self._jsonl = open(path, "a")
    if prefix in self._tb:
      self._tb.pop(prefix).close()
    self._board(prefix, purge_step=step + 1)

  def write(self, step: int, metrics: dict, prefix: str = "") -> None:
    if not self.enabled:
      return
    board = self._board(prefix)
    for name, value in metrics.items():
      board.add_scalar(f"{prefix}/{name}" if prefix else name, value, step)
    self._jsonl.write(json.dumps({"step": step, "prefix": prefix, **metrics}) + "\n")
    self._jsonl.flush()

  def event(self, kind: str, **details) -> None:
    """Records something that happened to the run (logs/events.jsonl)."""
    if not self.enabled:
      return
    with open(os.path.join(self.logdir, EVENTS_FILE), "a") as f:
      f.write(json.dumps({"time": time.strftime("%F %T"), "event": kind, **details}) + "\n")

  def close(self) -> None:
    if self.enabled:
      for board in self._tb.values():
        board.close()
      self._jsonl.close()


def _after(row: str, prefix: str, step: int) -> bool:
  try:
    data = json.loads(row)
  except ValueError:
    return True  # A line torn by a killed run: dropped, or the next row would join it.
  return data.get("prefix", "") == prefix and data.get("step", 0) > step


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
