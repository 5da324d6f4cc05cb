"""The shared training core: gradient accumulation, mixed precision, NaN guard."""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hyperlora
from hyperlora import train as train_lib
from t2l_jax import model as t2l_model
from t2l_jax import tasks as tasks_lib
from t2l_jax.data import SFTBatches
from t2l_jax.hypernet import HyperSpec, T2LHypernet, init_params_boxed


@pytest.fixture(scope="module")
def setup(tiny_model):
  path, _ = tiny_model("llama")
  loaded = hyperlora.load(path)
  spec = HyperSpec.for_model(
    loaded.config, "L", ["q_proj", "v_proj"], rank=4, latent=32, head_in=64, dropout=0.0
  )
  tasks = tasks_lib.generated_suite()[:8]
  rng = np.random.default_rng(0)
  embeddings = {t.name: rng.normal(size=(3, 16)).astype(np.float32) for t in tasks}
  batches = SFTBatches(
    tasks,
    embeddings,
    loaded.tokenizer,
    tasks_per_batch=4,
    examples_per_task=2,
    max_len=160,
    seed=0,
    max_answer=48,
  )
  return loaded, spec, batches


def run_steps(loaded, spec, batches, optimizer, dtype=jnp.float32):
  loss_fn = train_lib.lm_loss_fn(
    loaded.module(dtype),
    t2l_model.hypernet_adapter_fn(T2LHypernet(spec)),
    t2l_model.l2_penalty(1e-3),
    0.1,
  )
  state, _ = train_lib.create_state(
    lambda: init_params_boxed(spec, 16, jax.random.key(0)), optimizer, 0
  )
  step = train_lib.jit_train_step(loss_fn, optimizer)
  losses = []
  for b in batches:
    state, metrics = step(state, loaded.params, b)
    losses.append(float(metrics["loss"]))
  return state, losses


def test_gradient_accumulation_equals_the_full_batch(setup):
  loaded, spec, batches = setup
  full = [batches(0), batches(1)]  # two updates: the schedule's first learning rate is 0
  halves = [jax.tree.map(lambda x: x[half], b) for b in full for half in (slice(0, 4), slice(4, 8))]
  one_step, _ = run_steps(loaded, spec, full, train_lib.make_optimizer(1e-2, 10))
  accumulated, _ = run_steps(loaded, spec, halves, train_lib.make_optimizer(1e-2, 20, grad_accum=2))
  moved = jax.tree.map(lambda a: float(jnp.abs(a).max()), one_step.params["head_q_proj"])
  assert moved["kernel"] > 0
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), one_step.params, accumulated.params
  )


def test_bfloat16_compute_with_float32_master_weights(setup):
  loaded, spec, batches = setup
  optimizer = train_lib.make_optimizer(3e-3, 10)
  state32, losses32 = run_steps(loaded, spec, [batches(i) for i in range(3)], optimizer)
  state16, losses16 = run_steps(
    loaded, spec, [batches(i) for i in range(3)], optimizer, jnp.bfloat16
  )
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state16.params))  # master weights
  np.testing.assert_allclose(losses16, losses32, rtol=0.05)


def test_non_finite_loss_names_the_fix():
  with pytest.raises(
    train_lib.NonFiniteLossError, match="loss is nan at step 7: lower the learning rate"
  ):
    train_lib.check_finite({"loss": float("nan")}, 7)


def test_rules_come_from_the_config():
  from hyperlora import sharding

  table = dict(
    sharding.rules_from_config({"rules": (("embed", None), ("mlp", ["fsdp", "tensor"]))})
  )
  assert table["embed"] is None and table["mlp"] == ("fsdp", "tensor")
  assert table["heads"] == dict(sharding.RULES)["heads"]  # the rest as in RULES
  assert sharding.rules_from_config({}) == sharding.RULES
  with pytest.raises(ValueError, match=r"mesh.rules names mesh axes \['model'\]"):
    sharding.rules_from_config({"rules": (("embed", "model"),)})


def test_fewer_tasks_than_a_batch_repeat_tasks_at_the_same_batch_size(setup):
  # A task-count sweep trains every count on the same steps x batch: with 2 tasks and 4 task slots
  # per batch, tasks repeat instead of the batch shrinking.
  _, _, batches = setup
  few = copy.copy(batches)  # the fixture's settings (4 tasks x 2 examples a batch) on 2 tasks
  few.tasks = batches.tasks[:2]
  batch = few(0)
  assert batch["tokens"].shape[0] == 8
  assert set(np.asarray(batch["task_id"]).tolist()) <= {0, 1}
