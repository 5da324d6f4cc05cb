"""Shared by the benchmark scripts: timing, a printed table, and a JSON record."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

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
  columns = list(dict.fromkeys(k for row in rows for k in row))
  cells = [[_fmt(row.get(c, "")) for c in columns] for row in rows]
  widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
  print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
  for r in cells:
    print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
  os.makedirs(RESULTS_DIR, exist_ok=True)
  path = os.path.join(RESULTS_DIR, f"{name}.json")
  record = {"benchmark": name, "machine": platform.platform(), "cpus": os.cpu_count(),
            "meta": meta or {}, "rows": rows}
  with open(path, "w") as f:
    json.dump(record, f, indent=2)
  print(f"wrote {path}")
  return path


def _fmt(value) -> str:
  return f"{value:.4g}" if isinstance(value, float) else str(value)
