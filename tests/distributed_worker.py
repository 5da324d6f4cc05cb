"""Runs a few T2L (and, with --meshes, D2L) train steps of a tiny model on given device layouts and
writes what happened.

  python tests/distributed_worker.py OUT.json MODEL_DIR --devices 8 --meshes 1,1,1 8,1,1 2,4,1
  python tests/distributed_worker.py OUT.json MODEL_DIR --devices 2 --process 0 --processes 2
  --port P

Used by tests/test_distributed.py in fresh processes, since the device count and the distributed
runtime must be set before JAX starts.
"""

import argparse
import json
import os
import sys

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("model_dir")
parser.add_argument("--devices", type=int, required=True, help="CPU devices in this process")
parser.add_argument("--meshes", nargs="+", default=None, help="data,fsdp,tensor shapes to compare")
parser.add_argument("--process", type=int, default=0)
parser.add_argument("--processes", type=int, default=1)
parser.add_argument("--port", type=int, default=0)
parser.add_argument("--steps", type=int, default=3)
args = parser.parse_args()

os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402

if args.processes > 1:
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(f"127.0.0.1:{args.port}", args.processes, args.process)

import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

import hyperlora  # noqa: E402
from hyperlora import sharding  # noqa: E402
from hyperlora import train as train_lib  # noqa: E402
from t2l_jax import model as t2l_model  # noqa: E402
from t2l_jax import tasks as tasks_lib  # noqa: E402
from t2l_jax.data import SFTBatches  # noqa: E402
from t2l_jax.hypernet import HyperSpec, T2LHypernet, init_params_boxed  # noqa: E402

loaded = hyperlora.load(args.model_dir)
spec = HyperSpec.for_model(
  loaded.config, "L", ["q_proj", "v_proj", "down_proj"], rank=4, latent=32, head_in=64, dropout=0.0
)
tasks = tasks_lib.generated_suite()[:12]
rng = np.random.default_rng(0)
embeddings = {t.name: rng.normal(size=(4, 16)).astype(np.float32) for t in tasks}
batches = SFTBatches(
  tasks,
  embeddings,
  loaded.tokenizer,
  tasks_per_batch=4,
  examples_per_task=2,
  max_len=160,
  seed=0,
  max_answer=48,
  process_index=jax.process_index(),
  process_count=jax.process_count(),
)
optimizer = train_lib.make_optimizer(3e-3, 10)
loss_fn = train_lib.lm_loss_fn(
  loaded.module(), t2l_model.hypernet_adapter_fn(T2LHypernet(spec)), t2l_model.l2_penalty(1e-3), 0.1
)

meshes = (
  [tuple(int(x) for x in m.split(",")) for m in args.meshes]
  if args.meshes
  else [(len(jax.devices()), 1, 1)]
)
results = {}
for shape in meshes:
  devices = jax.devices()[: int(np.prod(shape))]
  mesh = sharding.make_mesh(shape, devices)
  base = sharding.shard_base_params(loaded.params, loaded.module(), mesh)
  state, state_shardings = train_lib.create_state(
    lambda: init_params_boxed(spec, 16, jax.random.key(0)), optimizer, 0, mesh
  )
  step = train_lib.jit_train_step(loss_fn, optimizer, mesh, state_shardings, base)
  losses = []
  for s in range(args.steps):
    state, metrics = step(state, base, sharding.shard_batch(batches(s), mesh))
    losses.append(float(metrics["loss"]))
  head = state.params["head_q_proj"]["kernel"]
  q_kernel = base["layers"]["self_attn"]["q_proj"]["kernel"]
  params = multihost_utils.process_allgather(state.params, tiled=True)
  results["x".join(map(str, shape))] = {
    "losses": losses,
    "params": {
      "/".join(str(k.key) for k in path): np.asarray(leaf).ravel()[:64].tolist()
      for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
    },
    "head_shard": list(head.addressable_shards[0].data.shape),
    "head_shape": list(head.shape),
    "q_shard": list(q_kernel.addressable_shards[0].data.shape),
    "q_shape": list(q_kernel.shape),
  }
if len(meshes) > 1:  # D2L steps, first and last mesh: documents in 2 chunks, distillation loss.
  from d2l_jax import corpus, teacher
  from d2l_jax import model as d2l_model
  from d2l_jax.data import DocBatches
  from d2l_jax.hypernet import D2LHypernet, D2LSpec
  from d2l_jax.train import question_pairs

  d2l_spec = D2LSpec.for_model(
    loaded.config,
    ("down_proj",),
    latent=32,
    n_latents=4,
    num_blocks=1,
    heads=4,
    kv_heads=2,
    head_dim=8,
  )
  d2l = d2l_model.Setup(loaded, d2l_spec, D2LHypernet(d2l_spec), "all_but_last")
  documents = corpus.synthetic_corpus(8, 0)
  pairs, pair_doc = question_pairs(documents)

  class Data:
    responses, top_k, max_len, max_teacher_len, max_answer, teacher_batch = (
      "gold",
      4,
      96,
      448,
      16,
      8,
    )

  d2l_batches = DocBatches(
    documents,
    teacher.prepare(loaded, pairs, Data, None),
    pair_doc,
    loaded.tokenizer,
    docs_per_batch=8,
    queries_per_doc=1,
    max_doc_len=320,
    chunk_counts=(2,),
    chunk_probs=(1.0,),
    min_chunk_len=8,
    seed=0,
  )
  d2l_loss = train_lib.lm_loss_fn(
    loaded.module(),
    d2l.adapter_fn(),
    d2l_model.l1_penalty(0.1),
    answer_loss=d2l_model.answer_loss("distill"),
  )
  for d2l_shape in (meshes[0], meshes[-1]):  # one device, and the mesh that uses every axis
    d2l_mesh = sharding.make_mesh(d2l_shape, jax.devices()[: int(np.prod(d2l_shape))])
    d2l_base = sharding.shard_base_params(loaded.params, loaded.module(), d2l_mesh)
    d2l_state, d2l_shardings = train_lib.create_state(
      lambda: d2l.init_params(0), optimizer, 0, d2l_mesh
    )
    d2l_step = train_lib.jit_train_step(d2l_loss, optimizer, d2l_mesh, d2l_shardings, d2l_base)
    d2l_losses = []
    for s in range(2):
      d2l_state, metrics = d2l_step(
        d2l_state, d2l_base, sharding.shard_batch(d2l_batches(s), d2l_mesh)
      )
      d2l_losses.append(float(metrics["loss"]))
    results["d2l " + "x".join(map(str, d2l_shape))] = {
      "losses": d2l_losses,
      "params": {
        "/".join(str(k.key) for k in path): np.asarray(leaf).ravel()[:64].tolist()
        for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(d2l_state.params))[0]
      },
    }

  import tempfile

  import jax.numpy as jnp

  from hyperlora import train_checkpoints as ckpt

  # shard_map per-example LoRA equals the jit path (same state, same batch, last mesh).
  batch = sharding.shard_batch(batches(0), mesh)
  lora = T2LHypernet(spec).apply({"params": state.params}, batch["task_emb"])
  plain = jax.jit(
    lambda p, b, l: (
      loaded.module().apply({"params": p}, b["tokens"], b["attention_mask"], lora=l).logits
    )
  )
  mapped = jax.jit(
    lambda p, b, l: (
      loaded.module(lora_mesh=mesh)
      .apply({"params": p}, b["tokens"], b["attention_mask"], lora=l)
      .logits
    )
  )
  results["shard_map_max_diff"] = float(
    jnp.abs(plain(base, batch, lora) - mapped(base, batch, lora)).max()
  )
  results["lora_effect"] = float(jnp.abs(plain(base, batch, lora) - plain(base, batch, None)).max())

  # A checkpoint written on this mesh restores onto another mesh, and onto one device (export).
  directory = tempfile.mkdtemp()
  mngr = ckpt.manager(directory)
  ckpt.save(mngr, 1, state, {"mesh": list(shape)}, force=True)
  mngr.wait_until_finished()
  other = sharding.make_mesh((8, 1, 1), jax.devices()[:8])
  like, _ = train_lib.create_state(
    lambda: init_params_boxed(spec, 16, jax.random.key(1)), optimizer, 1, other
  )
  restored = ckpt.restore(ckpt.manager(directory), like)
  single = ckpt.restore(ckpt.manager(directory), jax.eval_shape(lambda: like))
  alone = ckpt.restore_params(directory, jax.eval_shape(lambda: like.params))  # inference's read
  same = jax.tree.map(
    lambda a, *others: all(bool((np.asarray(a) == np.asarray(o)).all()) for o in others),
    state.params,
    restored.params,
    single.params,
    alone,
  )
  results["restore_other_mesh_equal"] = all(jax.tree.leaves(same))
  results["restored_head_shard"] = list(
    restored.params["head_q_proj"]["kernel"].addressable_shards[0].data.shape
  )
if jax.process_index() == 0:
  with open(args.out, "w") as f:
    json.dump(results, f)
