"""Plan a run on a TPU slice from a CPU-only machine: compile a method's real step ahead of time for
the slice's topology, then report per device its memory (from the compiled program) against the
chip's HBM, the bytes its collectives move (from its HLO), and a roofline estimate of step time
and MFU. `--mesh auto` compiles every (data, fsdp, tensor) factorisation that could fit and ranks
those that do by estimated step time.

Compiling for a TPU without one needs libtpu (`pip install -e ".[tpu]"`); JAX then compiles for a
named topology (`jax.experimental.topologies`). The roofline: compute = hardware FLOPs / peak;
HBM = (frozen base bytes read once per pass + train state read and written + temporaries written
and read) / HBM bandwidth; interconnect = collective bytes / the chip's collective bandwidth. The
estimate assumes the three overlap (their max); "no overlap" is their sum.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from typing import Callable

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import topologies
from jax.sharding import Mesh

from hyperlora import chips, hlo_stats, sharding
from hyperlora import train as train_lib
from hyperlora.flops import StepFlops


@dataclasses.dataclass(frozen=True)
class Program:
  """One step to plan: fn(*args). args are abstract pytrees; parameter leaves may be flax boxes
  carrying logical axis names (sharded by the rules table). Arguments in `batch_args` shard their
  leading axis over the data axes; `frozen_arg` is the frozen base (read once per pass)."""

  name: str
  fn: Callable
  args: tuple
  batch_args: tuple[int, ...]
  frozen_arg: int
  donate: tuple[int, ...]
  out_shardings: Callable  # (in_shardings, mesh) -> out_shardings
  flops: StepFlops
  batch_size: int
  base_passes: int  # passes over the frozen base a step (forward, backward, rematerialised forward)


def train_step_program(
  name: str, loss_fn, optimizer, state, base_params, batch: dict, **costs
) -> Program:
  """A method's training step (the `train_lib.make_train_step` its trainer runs) as a Program: the
  state donated, the batch sharded over the data axes, the metrics replicated. `costs`: flops,
  batch_size, base_passes."""
  return Program(
    name=name,
    fn=train_lib.make_train_step(loss_fn, optimizer),
    args=(state, base_params, batch),
    batch_args=(2,),
    frozen_arg=1,
    donate=(0,),
    out_shardings=lambda ins, mesh: (ins[0], sharding.replicated(mesh)),
    **costs,
  )


class PlanError(ValueError):
  pass


def topology_devices(target: str) -> list:
  """The devices of a TPU topology such as 'v5e:4x4', compiled for from this machine."""
  chips.chip_for(target)
  try:
    return list(topologies.get_topology_desc(target, platform="tpu").devices)
  except Exception as err:  # libtpu missing or a shape the generation does not have
    raise PlanError(
      f"cannot describe TPU topology {target!r} ({type(err).__name__}: {str(err)[:200]}); "
      f'install libtpu with `pip install -e ".[tpu]"` and use a valid slice shape, e.g. v5e:4x4'
    ) from err


def candidate_meshes(num_devices: int, batch_size: int, max_tensor: int = 8) -> list[dict]:
  """(data, fsdp, tensor) factorisations whose data x fsdp divides the batch."""
  out = []
  for data, fsdp in itertools.product(range(1, num_devices + 1), repeat=2):
    if num_devices % (data * fsdp):
      continue
    tensor = num_devices // (data * fsdp)
    if tensor <= max_tensor and batch_size % (data * fsdp) == 0:
      out.append({"data": data, "fsdp": fsdp, "tensor": tensor})
  return out


def _per_device_bytes(abstract, shardings_tree) -> float:
  leaves = jax.tree.leaves(abstract)
  shards = jax.tree.leaves(shardings_tree, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
  return float(
    sum(
      math.prod(s.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize for x, s in zip(leaves, shards)
    )
  )


def compile_program(program: Program, mesh: Mesh, rules=sharding.RULES):
  """(compiled executable, seconds to compile, per-device bytes of each argument)."""
  in_shardings, abstract = [], []
  for i, arg in enumerate(program.args):
    unboxed = nn.unbox(arg)
    if i in program.batch_args:
      arg_shardings = jax.tree.map(lambda _: sharding.batch_sharding(mesh, rules), unboxed)
    else:
      arg_shardings = sharding.shardings(arg, mesh, rules)
    in_shardings.append(arg_shardings)
    abstract.append(
      jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), unboxed, arg_shardings
      )
    )
  jitted = jax.jit(
    sharding.constrained(program.fn, mesh, rules),
    in_shardings=tuple(in_shardings),
    out_shardings=program.out_shardings(tuple(in_shardings), mesh),
    donate_argnums=program.donate,
  )
  start = time.perf_counter()
  compiled = jitted.lower(*abstract).compile()
  seconds = time.perf_counter() - start
  arg_bytes = [_per_device_bytes(a, s) for a, s in zip(abstract, in_shardings)]
  return compiled, seconds, arg_bytes


def roofline(
  program: Program, chip: chips.Chip, num_devices: int, memory, arg_bytes, collectives
) -> dict:
  frozen = arg_bytes[program.frozen_arg]
  state = sum(arg_bytes) - frozen
  hbm_bytes = frozen * program.base_passes + 2 * state + 2 * memory.temp_size_in_bytes
  comm_bytes = sum(c["bytes"] for c in collectives.values())
  terms = {
    "compute_s": program.flops.hardware / num_devices / chip.bf16_flops,
    "hbm_s": hbm_bytes / chip.hbm_bandwidth,
    "ici_s": comm_bytes / chip.ici_bandwidth,
  }
  step = max(terms.values())
  return {
    **terms,
    "step_s": step,
    "step_s_no_overlap": sum(terms.values()),
    "bound": max(terms, key=terms.get).removesuffix("_s"),
    "mfu": program.flops.model / (num_devices * chip.bf16_flops * step),
  }


def plan_one(program: Program, target: str, mesh_shape: dict, devices: list, rules) -> dict:
  """The plan of one mesh: memory, collectives, roofline; `error` set if it does not compile."""
  chip = chips.chip_for(target)
  row = {"target": target, "mesh": dict(mesh_shape), "program": program.name}
  try:
    mesh = sharding.make_mesh(mesh_shape, devices)
    compiled, seconds, arg_bytes = compile_program(program, mesh, rules)
  except Exception as err:  # XLA's resource errors and sharding mismatches alike
    return {**row, "fits": False, "error": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
  memory = compiled.memory_analysis()
  peak = (
    memory.argument_size_in_bytes
    + memory.output_size_in_bytes
    - memory.alias_size_in_bytes
    + memory.temp_size_in_bytes
    + memory.generated_code_size_in_bytes
  )
  collectives = hlo_stats.summarise(compiled.as_text(), len(devices))
  return {
    **row,
    "compile_s": seconds,
    "arguments_gb": memory.argument_size_in_bytes / 1e9,
    "temporaries_gb": memory.temp_size_in_bytes / 1e9,
    "outputs_gb": memory.output_size_in_bytes / 1e9,
    "aliased_gb": memory.alias_size_in_bytes / 1e9,
    "peak_gb": peak / 1e9,
    "hbm_gb": chip.hbm_bytes / 1e9,
    "fits": peak <= chip.hbm_bytes,
    "model_tflop": program.flops.model / 1e12,
    "collectives": collectives,
    **roofline(program, chip, len(devices), memory, arg_bytes, collectives),
  }


def table(rows: list[dict]) -> list[dict]:
  """Printable rows, best estimate first (the input order is kept)."""
  out = []
  for r in rows:
    mesh = "x".join(str(r["mesh"][a]) for a in sharding.MESH_AXES)
    if "error" in r:
      out.append({"mesh (data x fsdp x tensor)": mesh, "fits": "no", "note": r["error"][:80]})
      continue
    comm = r["collectives"]
    out.append(
      {
        "mesh (data x fsdp x tensor)": mesh,
        "peak GB / HBM": f"{r['peak_gb']:.2f} / {r['hbm_gb']:.1f}",
        "args / temp GB": f"{r['arguments_gb']:.2f} / {r['temporaries_gb']:.2f}",
        "fits": "yes" if r["fits"] else "no",
        "AG / AR / RS / A2A GB": " / ".join(
          f"{comm[k]['bytes'] / 1e9:.2f}"
          for k in ("all-gather", "all-reduce", "reduce-scatter", "all-to-all")
        ),
        "compute / HBM / ICI ms": " / ".join(
          f"{r[k] * 1e3:.0f}" for k in ("compute_s", "hbm_s", "ici_s")
        ),
        "step ms (no overlap)": f"{r['step_s'] * 1e3:.0f} ({r['step_s_no_overlap'] * 1e3:.0f})",
        "MFU": f"{r['mfu']:.0%}",
        "compile s": f"{r['compile_s']:.0f}",
      }
    )
  return out


def rank(rows: list[dict]) -> list[dict]:
  """Fitting plans by estimated step time, ties (e.g. all compute-bound) broken by the time with
  no overlap (less exposed to an optimistic overlap assumption), then the rest."""
  return sorted(
    rows,
    key=lambda r: (
      not r.get("fits"),
      round(r.get("step_s", math.inf), 4),
      r.get("step_s_no_overlap", math.inf),
    ),
  )
