"""Scale-out on CPU: T2L step time on 1 vs N forced host devices (data parallel), and checkpoint
save (async vs blocking) and restore time of a T2L-L train state at SmolLM2 shapes.

  python benchmarks/scaling.py --model DIR_OR_NAME [--devices 8] [--repeats 5]

On this 2-core machine N CPU "devices" share two cores, so the N-device row measures the cost of
the sharded program (collectives, partitioning), not a speed-up; on real accelerators each device
brings its own compute.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

parser = argparse.ArgumentParser(
  description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
)
parser.add_argument("--model", default="smollm2")
parser.add_argument("--devices", type=int, default=8)
parser.add_argument("--repeats", type=int, default=5)
parser.add_argument("--batch", type=int, default=8)
args = parser.parse_args()
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

import hyperlora  # noqa: E402
from hyperlora import sharding  # noqa: E402
from hyperlora import train as train_lib  # noqa: E402
from hyperlora import train_checkpoints as ckpt  # noqa: E402
from t2l_jax import model as t2l_model  # noqa: E402
from t2l_jax import tasks as tasks_lib  # noqa: E402
from t2l_jax.data import SFTBatches  # noqa: E402
from t2l_jax.hypernet import HyperSpec, T2LHypernet, init_params_boxed  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from report import median_seconds, write  # noqa: E402

loaded = hyperlora.load(args.model)
spec = HyperSpec.for_model(loaded.config, "L", ["q_proj", "v_proj"])
tasks = tasks_lib.generated_suite()[:16]
rng = np.random.default_rng(0)
embeddings = {t.name: rng.normal(size=(4, 384)).astype(np.float32) for t in tasks}
batches = SFTBatches(
  tasks,
  embeddings,
  loaded.tokenizer,
  tasks_per_batch=args.batch,
  examples_per_task=1,
  max_len=80,
  seed=0,
  max_answer=24,
)
optimizer = train_lib.make_optimizer(1e-4, 100)
loss_fn = train_lib.lm_loss_fn(
  loaded.module(), t2l_model.hypernet_adapter_fn(T2LHypernet(spec)), t2l_model.l2_penalty(1e-3), 0.1
)
init = lambda: init_params_boxed(spec, 384, jax.random.key(0))

rows = []
for n in (1, args.devices):
  mesh = sharding.make_mesh((n, 1, 1), jax.devices()[:n])
  base = sharding.shard_base_params(loaded.params, loaded.module(), mesh)
  state, shardings = train_lib.create_state(init, optimizer, 0, mesh)
  step = train_lib.jit_train_step(loss_fn, optimizer, mesh, shardings, base)
  batch = sharding.shard_batch(batches(0), mesh)
  holder = {"state": state}

  def run():
    holder["state"], metrics = step(holder["state"], base, batch)
    jax.block_until_ready(metrics)

  seconds = median_seconds(run, args.repeats)
  rows.append(
    {"what": f"T2L-L step, mesh data={n}", "seconds": seconds, "examples/s": args.batch / seconds}
  )
# Strong scaling (same global batch): ideal N-device time is t1 / N.
rows[-1]["scaling efficiency"] = rows[0]["seconds"] / (args.devices * rows[-1]["seconds"])

state = holder["state"]
nbytes = sum(x.nbytes for x in jax.tree.leaves(state))
warmup = ckpt.manager(tempfile.mkdtemp())  # Orbax's first save pays its start-up: not timed.
ckpt.save(warmup, 0, state, {}, force=True)
warmup.wait_until_finished()
for mode in ("blocking", "async"):
  directory = tempfile.mkdtemp()
  mngr = ckpt.manager(directory)
  start = time.perf_counter()
  ckpt.save(mngr, 1, state, {}, force=True)
  returned = time.perf_counter() - start
  if mode == "blocking":
    mngr.wait_until_finished()
    returned = time.perf_counter() - start
  mngr.wait_until_finished()
  done = time.perf_counter() - start
  rows.append(
    {
      "what": f"checkpoint save ({mode})",
      "seconds": returned,
      "until durable s": done,
      "MB": nbytes / 1e6,
    }
  )
  mngr.close()
start = time.perf_counter()
restored = ckpt.restore(ckpt.manager(directory), state)
jax.block_until_ready(restored)
rows.append(
  {"what": "checkpoint restore", "seconds": time.perf_counter() - start, "MB": nbytes / 1e6}
)
write("scaling", rows, {"model": args.model, "devices": args.devices, "batch": args.batch})
