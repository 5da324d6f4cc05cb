"""Collectives of a compiled XLA program, read from its HLO text: how many of each kind run per
step and the bytes each device moves for them.

XLA's own cost analysis counts a while loop's body once; a scanned decoder runs its layer body
num_layers times. So every computation gets a multiplier (the product of the trip counts of the
while loops that call it: XLA's known_trip_count when printed, else the bound its condition
compares the counter with), and a collective inside the layer body counts num_layers times.

Sizes come from result types (compiled TPU HLO prints operands without types). Bytes moved per
device, for ring algorithms over a group of n devices (S = the full, gathered or unreduced array):
all-gather and reduce-scatter S (n-1)/n, all-reduce 2 S (n-1)/n, all-to-all S (n-1)/n,
collective-permute S. TPU's asynchronous collective fusions repeat one collective (same
channel_id) in a start and continuation computations: each channel counts once.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re

DTYPE_BYTES = {
  "pred": 1,
  "s8": 1,
  "u8": 1,
  "f8e4m3fn": 1,
  "f8e5m2": 1,
  "bf16": 2,
  "f16": 2,
  "s16": 2,
  "u16": 2,
  "f32": 4,
  "s32": 4,
  "u32": 4,
  "f64": 8,
  "s64": 8,
  "u64": 8,
  "c64": 8,
}
KINDS = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")

_ARRAY = re.compile(r"\b(" + "|".join(DTYPE_BYTES) + r")\[([\d,]*)\]")
_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.*?)\s+([\w\-]+)\((.*)$")
_CALLS = re.compile(r"\b(?:body|condition|calls|to_apply)=%?([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_LOOP_BOUND = re.compile(r"=\s*s32\[\]\S*\s+constant\((\d+)\)")
_IOTA_GROUPS = re.compile(r"replica_groups=\[([\d,]+)\]<=")
_LIST_GROUPS = re.compile(r"replica_groups=\{\{([\d,]*)\}")
_MESH_GROUPS = re.compile(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}")
_CHANNEL = re.compile(r"\bchannel_id=(\d+)")
_COMMENT = re.compile(r"/\*.*?\*/")


def array_bytes(text: str) -> int:
  """Bytes of every array type written in `text` (e.g. 'bf16[4,8]{1,0}' -> 64)."""
  return sum(
    DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
    for dtype, dims in _ARRAY.findall(text)
  )


def _group_size(attrs: str, num_devices: int) -> int:
  mesh = _MESH_GROUPS.search(attrs)  # mesh['axis_0'=4,'axis_1'=2] {'axis_0'}: the named axes
  if mesh:
    sizes = dict(re.findall(r"'([^']+)'=(\d+)", mesh.group(1)))
    return math.prod(int(sizes[a]) for a in re.findall(r"'([^']+)'", mesh.group(2)))
  iota = _IOTA_GROUPS.search(attrs)
  if iota:
    return int(iota.group(1).split(",")[-1])
  listed = _LIST_GROUPS.search(attrs)
  if listed and listed.group(1):
    return len(listed.group(1).split(","))
  return num_devices  # replica_groups={} means every device


def _split_call(rest: str) -> tuple[str, str]:
  """'operands), attrs' -> (operands, attrs), matching the call's closing parenthesis."""
  depth = 1
  for i, char in enumerate(rest):
    depth += {"(": 1, ")": -1}.get(char, 0)
    if depth == 0:
      return rest[:i], rest[i + 1 :]
  return rest, ""


@dataclasses.dataclass
class Collective:
  kind: str
  computation: str
  array_bytes: int  # S: the full (gathered / unreduced) array
  group: int
  channel: int | None = None

  def moved(self) -> float:
    n = self.group
    share = (n - 1) / n if n > 1 else 0.0
    factor = {"all-reduce": 2 * share, "collective-permute": 1.0}.get(self.kind, share)
    return factor * self.array_bytes


def _full_array_bytes(kind: str, opcode: str, result_bytes: int, n: int) -> int:
  """S, the full array of a collective, from its result's bytes."""
  if opcode.endswith("-start") and kind in ("all-gather", "collective-permute"):
    # An async start returns (operand, output): for all-gather S/n + S, for a permute S + S.
    return result_bytes * n // (n + 1) if kind == "all-gather" else result_bytes // 2
  return result_bytes * n if kind == "reduce-scatter" else result_bytes


def parse(hlo_text: str, num_devices: int) -> tuple[list[Collective], dict[str, int]]:
  """(collectives, computation -> times it runs per step)."""
  collectives, calls, bounds = [], collections.defaultdict(list), {}
  computation, entry = None, None
  for line in hlo_text.splitlines():
    line = _COMMENT.sub("", line)
    header = _HEADER.match(line)
    if header:
      computation = header.group(2)
      entry = computation if header.group(1) else entry
      continue
    match = _INSTRUCTION.match(line)
    if not match or computation is None:
      continue
    bound = _LOOP_BOUND.search(line)
    if bound:
      bounds[computation] = int(bound.group(1))
    result_type, opcode, rest = match.groups()
    _, attrs = _split_call(rest)
    if opcode == "while":
      known = _TRIP_COUNT.search(attrs)
      condition = re.search(r"condition=%?([\w.\-]+)", attrs).group(1)
      body = re.search(r"body=%?([\w.\-]+)", attrs).group(1)
      trip = int(known.group(1)) if known else condition  # resolved once all bounds are read
      calls[computation] += [(condition, trip), (body, trip)]
      continue
    calls[computation] += [(callee, 1) for callee in _CALLS.findall(attrs)]
    for branches in _BRANCHES.findall(attrs):
      calls[computation] += [(c.strip().lstrip("%"), 1) for c in branches.split(",")]
    kind = opcode.removesuffix("-start")
    if kind not in KINDS or opcode.endswith("-done"):
      continue
    n = _group_size(attrs, num_devices)
    size = _full_array_bytes(kind, opcode, array_bytes(result_type), n)
    channel = _CHANNEL.search(attrs)
    collectives.append(
      Collective(kind, computation, size, n, int(channel.group(1)) if channel else None)
    )
  runs = collections.Counter()

  def visit(name: str, times: int, seen: tuple) -> None:
    if name in seen:  # recursion cannot occur in HLO; guard against a parse slip
      return
    runs[name] += times
    for callee, trip in calls.get(name, ()):
      trip = bounds.get(trip, 1) if isinstance(trip, str) else trip
      visit(callee, times * trip, seen + (name,))

  if entry is not None:
    visit(entry, 1, ())
  return collectives, dict(runs)


def summarise(hlo_text: str, num_devices: int) -> dict[str, dict]:
  """kind -> {'count': per step, 'bytes': moved per device per step}, for each collective kind."""
  collectives, runs = parse(hlo_text, num_devices)
  out = {kind: {"count": 0, "bytes": 0.0} for kind in KINDS}
  by_channel = {}
  for c in collectives:  # one per channel, where it runs most often
    key = c.channel if c.channel is not None else id(c)
    if key not in by_channel or runs.get(c.computation, 1) > runs.get(
      by_channel[key].computation, 1
    ):
      by_channel[key] = c
  for c in by_channel.values():
    times = runs.get(c.computation, 1)
    out[c.kind]["count"] += times
    out[c.kind]["bytes"] += times * c.moved()
  return out
