"""Preemption-safe training: SIGTERM writes a checkpoint and the resumed run continues exactly;
damaged checkpoints are set aside; a read error stops without touching anything; a checkpoint of
another config is refused."""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

from hyperlora import train_checkpoints as ckpt


def t2l_train(model_dir, workdir, *extra):
  return [
    sys.executable,
    "-m",
    "t2l_jax.cli",
    "train",
    "--config",
    "configs/t2l/tiny.py",
    f"--config.base_model={model_dir}",
    f"--config.workdir={workdir}",
    "--config.train.steps=40",
    "--config.train.log_every=1",
    "--config.train.ckpt_every=6",
    "--config.baselines.multitask=False",
    "--config.data.max_train_tasks=8",
    *extra,
  ]


def logged_losses(workdir) -> list[tuple[int, float]]:
  """(step, loss) of every logged step, in order."""
  with open(os.path.join(workdir, "logs", "metrics.jsonl")) as f:
    return [(row["step"], row["loss"]) for row in map(json.loads, f)]


@pytest.fixture(scope="module")
def model_dir(tiny_model):
  return tiny_model("llama")[0]


def test_sigterm_then_resume_redoes_steps_bit_exactly(model_dir, tmp_path):
  """One run, stopped by SIGTERM and resumed from the checkpoint *before* the one SIGTERM wrote, so
  the steps in between run twice: both times they must log bitwise-equal losses."""
  run = tmp_path / "run"
  proc = subprocess.Popen(
    t2l_train(model_dir, run), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
  )
  metrics = run / "logs" / "metrics.jsonl"
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    if metrics.exists() and len(metrics.read_text().splitlines()) >= 14:  # step >= 14 of 40
      proc.send_signal(signal.SIGTERM)
      break
    time.sleep(0.05)
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 143, err[-2000:]
  assert "preempted: checkpoint of step" in err
  stopped_at = int(err.split("checkpoint of step ")[1].split()[0])
  assert 14 <= stopped_at < 40
  shutil.rmtree(run / "checkpoints" / str(stopped_at))  # resume from the periodic one before
  before = -(-stopped_at // 6) * 6 - 6  # the last multiple of ckpt_every below stopped_at
  first = dict(logged_losses(run))  # the log as the stopped run left it
  assert sorted(first) == list(range(1, stopped_at + 1))
  resumed = subprocess.run(t2l_train(model_dir, run), capture_output=True, text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert f"resuming from step {before}" in resumed.stderr
  logged = logged_losses(run)
  steps = [step for step, _ in logged]
  assert steps == list(range(1, 41))  # each step once: the redone steps replaced their rows
  again = {step: loss for step, loss in logged if before < step <= stopped_at}
  assert again == {s: first[s] for s in range(before + 1, stopped_at + 1)}  # bitwise equal

  other_rank = subprocess.run(
    t2l_train(model_dir, run, "--config.hypernet.rank=4"),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert other_rank.returncode == 2
  assert (
    "holds a checkpoint of another config (hypernetwork / adapter shape differs"
    in other_rank.stderr
  )

  # Another data or optimizer config is refused with every changed field named, old -> new.
  changed = subprocess.run(
    t2l_train(model_dir, run, "--config.train.lr=0.01", "--config.data.tasks_per_batch=2"),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert changed.returncode == 2, changed.stderr[-2000:]
  last = changed.stderr.strip().splitlines()[-1]
  assert "data.tasks_per_batch 4 -> 2; train.lr 0.003 -> 0.01" in last, last
  assert "allow_config_change" in last
  assert logged_losses(run) == logged  # nothing trained, nothing logged
  # More steps, explicitly allowed (and a log interval, which may change freely): resumes from
  # step 40 and records the change.
  extended = subprocess.run(
    t2l_train(
      model_dir,
      run,
      "--config.train.steps=44",
      "--config.train.log_every=2",
      "--config.train.allow_config_change=True",
    ),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert extended.returncode == 0, extended.stderr[-2000:]
  assert "resuming from step 40" in extended.stderr
  assert [step for step, _ in logged_losses(run)] == list(range(1, 41)) + [42, 44]
  events = [json.loads(line) for line in open(run / "logs" / "events.jsonl")]
  assert events == [
    {
      "time": events[0]["time"],
      "event": "config_change",
      "run": "t2l",
      "step": 40,
      "changes": ["train.steps 40 -> 44"],
    }
  ]


def toy_state(scale: float = 1.0):
  import optax

  from hyperlora import train as train_lib

  params = {"w": jnp.arange(6.0).reshape(2, 3) * scale, "b": jnp.ones(3) * scale}
  return train_lib.init_state(params, optax.adam(1e-3), 0)


def truncate_arrays(step_dir):
  """Empties every file of a checkpoint's array items (as a write cut short would)."""
  for item in (*ckpt.ARRAY_ITEMS, ckpt.LEGACY_ITEM):
    for root, _, files in os.walk(step_dir / item):
      for name in files:
        open(os.path.join(root, name), "wb").close()


def test_damaged_checkpoint_is_skipped(tmp_path, caplog):
  mngr = ckpt.manager(str(tmp_path), keep=3)
  for step in (1, 2):
    ckpt.save(mngr, step, toy_state(step), {"step": step}, force=True)
  mngr.wait_until_finished()
  truncate_arrays(tmp_path / "2")
  with caplog.at_level(logging.WARNING, logger="hyperlora.train_checkpoints"):
    restored = ckpt.restore(ckpt.manager(str(tmp_path)), toy_state())
  np.testing.assert_array_equal(restored.params["w"], toy_state(1).params["w"])  # step 1's values
  assert "checkpoint step 2" in caplog.text and "damaged" in caplog.text


def test_params_are_read_without_the_optimizer_in_both_layouts(tmp_path):
  """A step holds params / optimizer / config items, and inference restores the params alone
  (given only their shapes: no optimizer is built). A checkpoint written before this layout (one
  `state` item holding the whole TrainState, written here as that code wrote it) still resumes
  and still gives its params alone."""
  import jax
  import orbax.checkpoint as ocp

  state = toy_state(3.0)
  state = state.replace(step=jnp.asarray(7, jnp.int32))
  abstract_params = jax.eval_shape(lambda: state.params)

  new = tmp_path / "new"
  mngr = ckpt.manager(str(new))
  ckpt.save(mngr, 7, state, {"toy": 1}, force=True)
  mngr.wait_until_finished()
  assert {"params", "optimizer", "config"} <= set(os.listdir(new / "7"))
  assert "state" not in os.listdir(new / "7")

  old = tmp_path / "old"
  mngr = ckpt.manager(str(old))
  mngr.save(
    7,
    args=ocp.args.Composite(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave({})),
    force=True,
  )
  mngr.wait_until_finished()

  for directory in (new, old):
    params = ckpt.restore_params(str(directory), abstract_params)
    jax.tree.map(np.testing.assert_array_equal, params, state.params)
    resumed = ckpt.restore(ckpt.manager(str(directory)), toy_state())
    assert int(resumed.step) == 7
    jax.tree.map(np.testing.assert_array_equal, resumed.params, state.params)
    jax.tree.map(np.testing.assert_array_equal, resumed.opt_state, state.opt_state)
    wrong = {"w": jax.ShapeDtypeStruct((3, 3), jnp.float32), "b": abstract_params["b"]}
    with pytest.raises(ValueError, match="does not match this config's model"):
      ckpt.restore_params(str(directory), wrong)
  with pytest.raises(FileNotFoundError, match="no checkpoint of step 5"):
    ckpt.restore_params(str(new), abstract_params, step=5)
  # A reader leaves nothing behind where there was no run (a mistyped --checkpoint).
  with pytest.raises(FileNotFoundError, match="no checkpoint directory"):
    ckpt.restore_params(str(tmp_path / "typo"), abstract_params)
  assert not (tmp_path / "typo").exists()


def tiny_run(directory, steps, **kwargs):
  """hyperlora.train.run on a least-squares toy (4 params), checkpointing every 2 steps."""
  import optax

  from hyperlora import train as train_lib

  target = jnp.arange(4.0)
  loss_fn = lambda params, base_params, batch, rng, det: (
    (l := jnp.mean((params["w"] * batch["x"] - target) ** 2)),
    {"loss": l},
  )
  return train_lib.run(
    loss_fn=loss_fn,
    optimizer=optax.sgd(0.1),
    init_params=lambda: {"w": jnp.zeros(4)},
    batches=lambda step: {"x": np.ones((2, 4), np.float32)},
    steps=steps,
    directory=str(directory),
    config_json={"toy": 1},
    resume_keys={},
    seed=0,
    log_every=2,
    ckpt_every=2,
    keep=2,
    **kwargs,
  )


def snapshot(directory):
  return {
    os.path.relpath(os.path.join(root, name), directory): open(
      os.path.join(root, name), "rb"
    ).read()
    for root, _, files in os.walk(directory)
    for name in files
  }


def test_read_error_stops_the_run_and_leaves_checkpoints_untouched(tmp_path, monkeypatch, capsys):
  import orbax.checkpoint as ocp

  from hyperlora.cli_config import guarded

  tiny_run(tmp_path, 4)
  before = snapshot(tmp_path)
  assert {p.split(os.sep)[0] for p in before} == {"2", "4"}

  def unreadable(self, step, *args, **kwargs):
    raise OSError(5, "Input/output error (injected)")

  monkeypatch.setattr(ocp.CheckpointManager, "restore", unreadable)
  status = guarded(lambda: tiny_run(tmp_path, 8))
  assert status == 1
  err = capsys.readouterr().err
  assert (
    "could not read" in err
    and "checkpoint step 4" in err
    and "every checkpoint was left as it was" in err
  )
  assert snapshot(tmp_path) == before  # byte-identical: no rotation, no restart from scratch


def test_truncated_newest_checkpoint_is_set_aside_and_training_resumes(tmp_path, caplog):
  tiny_run(tmp_path, 4)
  truncate_arrays(tmp_path / "4")
  with caplog.at_level(logging.WARNING, logger="hyperlora.train_checkpoints"):
    state = tiny_run(tmp_path, 6)
  assert "checkpoint step 4" in caplog.text and "damaged" in caplog.text
  assert os.path.isdir(tmp_path / "4.damaged")  # kept for inspection, out of Orbax's way
  # Resumed from step 2 (step 4 redone), keeping the newest two as configured.
  assert int(state.step) == 6 and sorted(n for n in os.listdir(tmp_path) if n.isdigit()) == [
    "4",
    "6",
  ]
