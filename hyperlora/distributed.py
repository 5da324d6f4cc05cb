"""Multi-host start-up: `jax.distributed.initialize` from whatever launched this process.

- explicit: HYPERLORA_COORDINATOR (host:port), HYPERLORA_NUM_PROCESSES, HYPERLORA_PROCESS_ID
  (what launch/local.py sets; also usable by hand);
- SLURM (srun) and TPU pods: JAX detects the cluster itself from its environment;
- otherwise: a single process, nothing to do.
On CPU, collectives between processes run over Gloo.
"""

from __future__ import annotations

import importlib.util
import logging
import os

import jax

log = logging.getLogger(__name__)


def initialize() -> None:
  explicit = os.environ.get("HYPERLORA_COORDINATOR")
  on_slurm = "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1
  on_tpu_pod = "TPU_WORKER_HOSTNAMES" in os.environ or "MEGASCALE_COORDINATOR_ADDRESS" in os.environ
  if not (explicit or on_slurm or on_tpu_pod):
    return
  if os.environ.get("JAX_PLATFORMS", "") == "cpu" or not _has_accelerator_plugin():
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if explicit:
    jax.distributed.initialize(
      explicit, int(os.environ["HYPERLORA_NUM_PROCESSES"]), int(os.environ["HYPERLORA_PROCESS_ID"])
    )
  else:
    jax.distributed.initialize()  # SLURM / TPU: cluster auto-detection
  log.info(
    "process %d of %d; %d local / %d global devices",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )


def _has_accelerator_plugin() -> bool:
  return any(
    importlib.util.find_spec(name) for name in ("jax_cuda12_plugin", "jax_cuda13_plugin", "libtpu")
  )
