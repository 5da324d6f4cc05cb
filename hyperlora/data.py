"""Input pipelines: a batch is a pure function of the step, served by grain with prefetch."""

from __future__ import annotations

from typing import Callable, Iterator

import grain.python as grain


def batch_stream(
  make_batch: Callable[[int], dict], start: int, stop: int, prefetch: int = 2
) -> Iterator[dict]:
  """Batches for steps [start, stop): built in a background thread while the device computes.

  Because each batch depends only on its step, resuming at `start` replays exactly what an
  uninterrupted run would have seen; the iterator has no other state to checkpoint.
  """
  steps = grain.MapDataset.range(start, stop).map(make_batch)
  return iter(
    steps.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=prefetch))
  )
