"""`hyperlora plan` end to end: the config's program, the slice's devices, one plan per mesh, the
ranked table (printed, and with --out written as JSON and Markdown)."""

from __future__ import annotations

import json
import logging
import os

from tqdm import tqdm

from hyperlora import chips, methods, sharding
from hyperlora import plan as plan_lib
from hyperlora.metrics import markdown_table, print_table

log = logging.getLogger(__name__)


def program_builder(config, name: str = "train"):
  """config -> the config's program `name`, from its method's plan.PROGRAMS (hyperlora.methods;
  the core does not import the methods)."""
  method = methods.of_config(config)
  programs = method.programs()
  if name not in programs:
    raise ValueError(
      f"--program={name}: a {method.name.upper()} config has programs {', '.join(programs)}"
    )
  return programs[name]


def run(
  config, target: str, mesh: dict | None, out: str | None, program_name: str = "train"
) -> list[dict]:
  build = program_builder(config, program_name)
  chip = chips.chip_for(target)
  devices = plan_lib.topology_devices(target)
  program = build(config)
  rules = sharding.rules_from_config(config.mesh)
  meshes = [mesh] if mesh else plan_lib.candidate_meshes(len(devices), program.batch_size)
  if not meshes:
    raise ValueError(
      f"no (data, fsdp, tensor) mesh of {len(devices)} chips divides the batch of "
      f"{program.batch_size}; change the batch or the slice"
    )
  log.info(
    "%s on %s (%d x %s, %.0f GB HBM each): %.1f model TFLOP per step; %d mesh(es) to compile",
    program.name,
    target,
    len(devices),
    chip.name,
    chip.hbm_bytes / 1e9,
    program.flops.model / 1e12,
    len(meshes),
  )
  rows = [
    plan_lib.plan_one(program, target, m, devices, rules) for m in tqdm(meshes, desc="compile")
  ]
  rows = plan_lib.rank(rows)
  printable = plan_lib.table(rows)
  print(f"\n{program.name}, {target} ({chip.source}); best first:")
  print_table(printable)
  if out:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
      json.dump({"program": program.name, "target": target, "plans": rows}, f, indent=2)
    with open(os.path.splitext(out)[0] + ".md", "w") as f:
      f.write(f"{program.name} on {target}, best first:\n\n" + markdown_table(printable))
  return rows
