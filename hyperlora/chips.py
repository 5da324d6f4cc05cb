"""Per-chip figures of TPU generations, for `hyperlora plan`'s roofline estimate.

Each figure is from Google Cloud's TPU documentation (URL beside each chip). The collective
bandwidth is what one chip can push into a ring collective: the documented one-way interchip
interconnect bandwidth (v5e 1,600 Gbps, v5p 4,800 Gbps), half the documented bidirectional figure
(v6e 800 GB/s), or for v4, whose page gives no per-chip figure, the pod's all-reduce bandwidth
(1.1 PB/s) over its 4,096 chips.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str
  bf16_flops: float  # peak dense bf16 FLOP/s
  hbm_bytes: float  # HBM capacity
  hbm_bandwidth: float  # bytes/s
  ici_bandwidth: float  # bytes/s one chip moves in a ring collective
  source: str


GB, GIB = 1e9, 2**30
CHIPS = {
  "v4": Chip(
    "v4", 275e12, 32 * GIB, 1200 * GB, 1.1e15 / 4096, "https://cloud.google.com/tpu/docs/v4"
  ),
  "v5e": Chip("v5e", 197e12, 16 * GB, 819 * GB, 200 * GB, "https://cloud.google.com/tpu/docs/v5e"),
  "v5p": Chip("v5p", 459e12, 95 * GB, 2765 * GB, 600 * GB, "https://cloud.google.com/tpu/docs/v5p"),
  "v6e": Chip("v6e", 918e12, 32 * GB, 1638 * GB, 400 * GB, "https://cloud.google.com/tpu/docs/v6e"),
}


def chip_for(target: str) -> Chip:
  """The chip of a topology name such as 'v5e:4x4' or 'v5p:2x2x1'."""
  generation = target.split(":")[0].lower()
  if generation not in CHIPS:
    raise ValueError(
      f"unknown TPU generation {generation!r} in target {target!r}; "
      f"known: {', '.join(CHIPS)} (e.g. v5e:4x4)"
    )
  return CHIPS[generation]
