"""The meta-training core shared by T2L and D2L: state, optimiser, a pure jitted step, the loop.

A method supplies `adapter_fn(params, base_params, batch, rng, deterministic) -> LoRA` (a
hypernetwork, or a LoRA learned directly; D2L reads the base model's activations of the document),
an `aux_loss_fn(lora, batch)` and, when it is not cross-entropy on the answer tokens, its
`answer_loss(logits, batch)` (D2L's distillation from cached teacher log-probs). The frozen base
params are an argument of the step, never donated and never updated.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import signal
import time
from typing import Callable

import chex
import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from hyperlora import sharding, train_checkpoints
from hyperlora.data import batch_stream
from hyperlora.lora import LoRA
from hyperlora.losses import answer_cross_entropy

log = logging.getLogger(__name__)


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: dict
  opt_state: optax.OptState
  rng: jax.Array


def decay_mask(no_decay: tuple[str, ...]):
  """params -> a pytree of bools: True where weight decay applies, i.e. where no fragment of
  `no_decay` occurs in the parameter's path (e.g. 'norm' exempts every norm scale)."""

  def mask(params):
    def decays(path, _):
      name = "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path).lower()
      return not any(fragment in name for fragment in no_decay)

    return jax.tree_util.tree_map_with_path(decays, params)

  return mask


def make_optimizer(
  lr: float,
  total_steps: int,
  warmup_frac: float = 0.2,
  weight_decay: float = 0.01,
  clip_norm: float = 1.0,
  schedule: str = "linear",
  grad_accum: int = 1,
  no_decay: tuple[str, ...] = (),
) -> optax.GradientTransformation:
  """AdamW with linear warmup then linear (reference T2L) or cosine (reference D2L) decay.

  grad_accum > 1 averages gradients over that many train steps (micro-batches) per update;
  total_steps counts train steps, the schedule counts updates. Parameters whose path contains a
  fragment of `no_decay` get no weight decay (the optimizer state has the same shape either way).
  """
  if grad_accum > 1:
    inner = make_optimizer(
      lr,
      max(1, total_steps // grad_accum),
      warmup_frac,
      weight_decay,
      clip_norm,
      schedule,
      no_decay=no_decay,
    )
    return optax.MultiSteps(inner, every_k_schedule=grad_accum)
  warmup = max(1, int(warmup_frac * total_steps))
  if schedule == "linear":
    lr_schedule = optax.join_schedules(
      [
        optax.linear_schedule(0.0, lr, warmup),
        optax.linear_schedule(lr, 0.0, max(1, total_steps - warmup)),
      ],
      [warmup],
    )
  elif schedule == "cosine":
    lr_schedule = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(warmup + 1, total_steps))
  else:
    raise ValueError(f"unknown schedule {schedule!r}; choose 'linear' or 'cosine'")
  return optax.chain(
    optax.clip_by_global_norm(clip_norm),
    optax.adamw(lr_schedule, weight_decay=weight_decay, mask=decay_mask(no_decay)),
  )


def optimizer_of(tc, steps: int | None = None, lr: float | None = None, no_decay=()):
  """The optimizer a run's train config (`tc`) names: make_optimizer with its lr, steps, warmup,
  weight decay, clipping, schedule and gradient accumulation (`steps` / `lr` override, e.g. for a
  baseline trained for its own number of steps). The one place a config becomes an optimizer."""
  return make_optimizer(
    lr or tc.lr,
    steps or tc.steps,
    tc.warmup_frac,
    tc.weight_decay,
    tc.clip_norm,
    tc.schedule,
    tc.grad_accum,
    no_decay,
  )


def init_state(params: dict, optimizer: optax.GradientTransformation, seed: int) -> TrainState:
  # A raw uint32 key (not a typed key array) so checkpoints store it as a plain array.
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    opt_state=optimizer.init(params),
    rng=jax.random.PRNGKey(seed),
  )


def create_state(
  init_params: Callable[[], dict], optimizer, seed: int, mesh=None, rules=sharding.RULES
):
  """Sharded initialisation: eval_shape -> shardings from logical names -> jit(init) onto the mesh,
  so no device ever holds a full copy. init_params() may return flax LogicallyPartitioned boxes.
  Returns (state, state_shardings); without a mesh the shardings are None (default placement).
  """

  def init():
    return init_state(init_params(), optimizer, seed)

  if mesh is None:
    return jax.jit(lambda: nn.unbox(init()))(), None
  state_shardings = sharding.shardings(jax.eval_shape(init), mesh, rules)
  return jax.jit(lambda: nn.unbox(init()), out_shardings=state_shardings)(), state_shardings


AdapterFn = Callable[..., LoRA]  # (params, base_params, batch, rng, deterministic) -> LoRA


def direct_adapter_fn(scale: float) -> AdapterFn:
  """A LoRA learned directly (multi-task, oracle and context-distillation baselines): its params
  are the factors, the same adapter for every example."""
  return lambda params, base_params, batch, rng, deterministic: LoRA(params, scale)


def neftune_noise(rng, shape, alpha: float) -> jax.Array:
  """NEFTune (Jain et al. 2023, as transformers applies it): uniform noise of magnitude
  alpha / sqrt(seq * hidden) on the input embeddings [batch, seq, hidden]."""
  return jax.random.uniform(rng, shape, jnp.float32, -1.0, 1.0) * (
    alpha / math.sqrt(shape[1] * shape[2])
  )


def lm_loss_fn(
  base_model,
  adapter_fn: AdapterFn,
  aux_loss_fn=None,
  label_smoothing: float = 0.0,
  answer_loss=None,
  neftune_alpha: float = 0.0,
  lora_dropout: float = 0.0,
):
  """loss(params, base_params, batch, rng, deterministic) -> (scalar, metrics).

  answer_loss(logits, batch) -> [batch] is the method's loss on the answer tokens (default:
  cross-entropy on target_ids, with label smoothing); the plain NLL is logged beside it either way.
  neftune_alpha > 0 adds NEFTune noise to the input embeddings, and lora_dropout > 0 drops the
  adapter's inputs (PEFT's lora_dropout), both only when not deterministic.
  """

  def loss_fn(params, base_params, batch, rng, deterministic):
    noise = None
    if neftune_alpha and not deterministic:
      rng, noise_rng = jax.random.split(rng)
      shape = batch["tokens"].shape + (base_model.config.hidden_size,)
      noise = neftune_noise(noise_rng, shape, neftune_alpha)
    # Short-circuits like the NEFTune test, so `deterministic` may stay a traced argument when
    # neither regulariser is configured.
    dropout = lora_dropout if lora_dropout and not deterministic else 0.0
    if dropout:
      rng, dropout_rng = jax.random.split(rng)
    lora = adapter_fn(params, base_params, batch, rng, deterministic)
    logits = base_model.apply(
      {"params": base_params},
      batch["tokens"],
      batch["attention_mask"],
      lora=lora,
      logits_at=batch["target_index"],
      embed_noise=noise,
      lora_dropout=dropout,
      rngs={"dropout": dropout_rng} if dropout else None,
    ).logits
    # The plain NLL shows progress (smoothing adds a large vocabulary-wide term).
    nll = answer_cross_entropy(logits, batch["target_ids"], batch["target_mask"]).mean()
    if answer_loss is not None:
      lm_loss = answer_loss(logits, batch).mean()
    else:
      lm_loss = answer_cross_entropy(
        logits, batch["target_ids"], batch["target_mask"], label_smoothing
      ).mean()
    metrics = {"lm_loss": lm_loss, "answer_nll": jax.lax.stop_gradient(nll)}
    loss = lm_loss
    if aux_loss_fn is not None:
      aux = aux_loss_fn(lora, batch)
      metrics["aux_loss"] = aux
      loss = loss + aux
    metrics["loss"] = loss
    return loss, metrics

  return loss_fn


def make_train_step(loss_fn, optimizer: optax.GradientTransformation):
  """train_step(state, base_params, batch) -> (state, metrics); jit it with the state donated."""

  def train_step(state: TrainState, base_params, batch):
    rng, step_rng = jax.random.split(state.rng)
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params, base_params, batch, step_rng, False
    )
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics["grad_norm"] = optax.tree.norm(grads)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state, rng=rng), metrics

  return train_step


class NonFiniteLossError(FloatingPointError):
  pass


class Preempted(SystemExit):
  """Raised after SIGTERM once the state at `step` is checkpointed; rerun the command to resume."""

  def __init__(self, step: int, directory: str):
    super().__init__(143)  # 128 + SIGTERM, what schedulers expect of a terminated job
    self.step, self.directory = step, directory

  def __str__(self):
    return (
      f"preempted: checkpoint of step {self.step} written to {self.directory}; "
      f"run the same command again to resume"
    )


class PreemptionWatch:
  """Turns SIGTERM into a flag checked at step boundaries (agreed across processes)."""

  def __enter__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    log.warning("SIGTERM received: saving a checkpoint at the end of this step")
    self.requested = True

  def should_stop(self) -> bool:
    if jax.process_count() == 1:
      return self.requested
    return bool(multihost_utils.process_allgather(np.asarray(self.requested)).any())

  def __exit__(self, *exc):
    signal.signal(signal.SIGTERM, self._previous)
    return False


def check_finite(metrics: dict, step: int) -> None:
  loss = float(metrics["loss"])
  if not math.isfinite(loss):
    raise NonFiniteLossError(
      f"loss is {loss} at step {step}: lower the learning rate (--config.lr), check the data "
      f"for empty answers, or resume from the last checkpoint; nothing after it was saved"
    )


@dataclasses.dataclass
class Throughput:
  """Examples/s (rows of the batch) and, for batches of token sequences, tokens/s between two
  reports."""

  start: float = dataclasses.field(default_factory=time.perf_counter)
  examples: int = 0
  tokens: int = 0

  def add(self, batch: dict) -> None:
    self.examples += len(jax.tree.leaves(batch)[0])
    if "attention_mask" in batch:
      self.tokens += int(np.asarray(batch["attention_mask"]).sum())

  def report(self) -> dict:
    elapsed = max(time.perf_counter() - self.start, 1e-9)
    out = {"examples_per_s": self.examples / elapsed}
    if self.tokens:
      out["tokens_per_s"] = self.tokens / elapsed
    self.start, self.examples, self.tokens = time.perf_counter(), 0, 0
    return out


def jit_train_step(
  loss_fn, optimizer, mesh=None, state_shardings=None, base_params=None, rules=sharding.RULES
):
  """The train step jitted with explicit shardings (state donated; base params read-only)."""
  step = make_train_step(loss_fn, optimizer)
  if mesh is None:
    return jax.jit(step, donate_argnums=0)
  base_shardings = jax.tree.map(lambda x: x.sharding, base_params)
  batch_shardings = sharding.batch_sharding(mesh, rules)
  return jax.jit(
    sharding.constrained(step, mesh, rules),
    in_shardings=(state_shardings, base_shardings, batch_shardings),
    out_shardings=(state_shardings, sharding.replicated(mesh)),
    donate_argnums=0,
  )


def fit(
  *,
  loss_fn,
  optimizer,
  state: TrainState,
  base_params,
  batches: Callable[[int], dict],
  total_steps: int,
  mngr=None,
  config_json: dict | None = None,
  writer=None,
  log_every: int = 10,
  ckpt_every: int = 100,
  desc: str = "train",
  mesh=None,
  state_shardings=None,
  rules=sharding.RULES,
  probe=None,
) -> TrainState:
  """Runs train steps from state.step to total_steps with progress, metrics and checkpoints.

  `batches(step)` must be a pure function of the step (this process's rows of the global batch),
  so resuming needs no iterator state. `probe(params, base_params) -> metrics`, when given, is
  logged with the training metrics every log step (e.g. D2L's document-dependence probe).
  """
  step_fn = jit_train_step(loss_fn, optimizer, mesh, state_shardings, base_params, rules)
  place = (lambda b: sharding.shard_batch(b, mesh, rules)) if mesh is not None else (lambda b: b)
  start = int(state.step)
  throughput = Throughput()
  bar = tqdm(
    range(start, total_steps),
    initial=start,
    total=total_steps,
    desc=desc,
    disable=jax.process_index() != 0,
  )
  with PreemptionWatch() as preemption:
    for step, batch in zip(bar, batch_stream(batches, start, total_steps)):
      state, metrics = step_fn(state, base_params, place(batch))
      throughput.add(batch)
      done = step + 1
      if done % log_every == 0 or done == total_steps:
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        check_finite(metrics, done)
        metrics.update(throughput.report())
        if probe is not None:
          metrics.update(
            {k: float(v) for k, v in jax.device_get(probe(state.params, base_params)).items()}
          )
        speed = (
          {"tok_s": f"{metrics['tokens_per_s']:.0f}"}
          if "tokens_per_s" in metrics
          else {"ex_s": f"{metrics['examples_per_s']:.1f}"}
        )
        bar.set_postfix(loss=f"{metrics['loss']:.4f}", **speed)
        if writer is not None:
          writer.write(done, metrics, prefix=desc)
      stop = preemption.should_stop()
      if mngr is not None:
        train_checkpoints.check_background_write(mngr)
        if stop or done % ckpt_every == 0 or done == total_steps:
          train_checkpoints.save(
            mngr, done, state, config_json or {}, force=stop or done == total_steps
          )
      if stop:
        bar.close()
        if mngr is not None:
          train_checkpoints.wait(mngr)
        raise Preempted(
          done, str(mngr.directory) if mngr is not None else "(no checkpoint manager)"
        )
  if mngr is not None:
    train_checkpoints.wait(mngr)
  return state


def run(
  *,
  loss_fn,
  optimizer,
  init_params: Callable[[], dict],
  batches,
  steps: int,
  directory: str,
  config_json: dict,
  resume_keys: dict[str, str],
  seed: int,
  free_keys: tuple[str, ...] = (),
  allow_config_change: bool = False,
  mesh=None,
  base_params=None,
  rules=sharding.RULES,
  writer=None,
  desc: str = "train",
  log_every: int = 10,
  ckpt_every: int = 100,
  keep: int = 2,
  probe=None,
  start_params: Callable[[], dict] | None = None,
) -> TrainState:
  """Creates the (sharded) state, or resumes the newest intact checkpoint in `directory` after
  checking that it was written by a compatible config (`resume_keys` must agree; every other field
  but `free_keys` too, unless `allow_config_change`), then fits to `steps`.
  `start_params` (a warm start: another run's trained params) replaces the fresh params when there
  is no checkpoint to resume; the optimizer state and step start from zero.

  A checkpoint that cannot be read stops the run (train_checkpoints.CheckpointReadError) rather
  than starting over, which would rotate the good checkpoints out.
  """
  state, state_shardings = create_state(init_params, optimizer, seed, mesh, rules)
  mngr = train_checkpoints.manager(directory, keep=keep)
  train_checkpoints.set_aside_damaged(mngr)
  changes = train_checkpoints.check_resumable(
    mngr,
    config_json,
    resume_keys,
    train_checkpoints.FREE_KEYS + tuple(free_keys),
    allow_config_change,
  )
  restored = train_checkpoints.restore(mngr, state)
  if restored is not None:
    step = int(restored.step)
    log.info("%s: resuming from step %d in %s", desc, step, directory)
    if changes:
      log.warning("%s: resuming with a changed config: %s", desc, "; ".join(changes))
    if writer is not None:
      writer.resume(desc, step)  # The steps after the checkpoint are redone, not logged twice.
      if changes:
        writer.event("config_change", run=desc, step=step, changes=changes)
    state = restored
  elif start_params is not None:
    params = start_params()
    chex.assert_trees_all_equal_shapes_and_dtypes(params, state.params)
    placement = None if state_shardings is None else state_shardings.params
    state = state.replace(params=jax.device_put(params, placement))
  state = fit(
    loss_fn=loss_fn,
    optimizer=optimizer,
    state=state,
    base_params=base_params,
    batches=batches,
    total_steps=steps,
    mngr=mngr,
    config_json=config_json,
    writer=writer,
    log_every=log_every,
    ckpt_every=ckpt_every,
    desc=desc,
    mesh=mesh,
    state_shardings=state_shardings,
    rules=rules,
    probe=probe,
  )
  mngr.close()
  return state
