"""Shared by the benchmark scripts: timing, a printed table, and a JSON record."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

from hyperlora.metrics import print_table

RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results")


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
  """Median wall time of fn() over `repeats` calls after `warmup` untimed calls."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def write(name: str, rows: list[dict], meta: dict | None = None) -> str:
  """Prints rows as an aligned table and saves them with machine info to results/<name>.json."""
  print_table(rows, float_format=".4g")
  os.makedirs(RESULTS_DIR, exist_ok=True)
  path = os.path.join(RESULTS_DIR, f"{name}.json")
  record = {
    "benchmark": name,
    "machine": platform.platform(),
    "cpus": os.cpu_count(),
    "meta": meta or {},
    "rows": rows,
  }
  with open(path, "w") as f:
    json.dump(record, f, indent=2)
  print(f"wrote {path}")
  return path
