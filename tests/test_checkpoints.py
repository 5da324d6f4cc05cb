"""Preemption-safe training: SIGTERM writes a checkpoint and the resumed run continues exactly;
damaged checkpoints are skipped; a checkpoint of another config is refused."""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

from hyperlora import ckpt


def t2l_train(model_dir, workdir, *extra):
  return [sys.executable, "-m", "t2l_jax.cli", "train", "--config", "configs/t2l/tiny.py",
          f"--config.base_model={model_dir}", f"--config.workdir={workdir}", "--config.train.steps=50",
          "--config.train.log_every=2", "--config.train.ckpt_every=1000",
          "--config.baselines.multitask_steps=0", "--config.data.max_train_tasks=8", *extra]


def logged_losses(workdir):
  losses = {}
  with open(os.path.join(workdir, "logs", "metrics.jsonl")) as f:
    for line in f:
      row = json.loads(line)
      losses[row["step"]] = row["loss"]  # A resumed run re-logs steps after its checkpoint.
  return losses


@pytest.fixture(scope="module")
def model_dir(tiny_model):
  return tiny_model("llama")[0]


def test_sigterm_then_resume_equals_uninterrupted(model_dir, tmp_path):
  straight = tmp_path / "straight"
  subprocess.run(t2l_train(model_dir, straight), check=True, capture_output=True, timeout=600)

  interrupted = tmp_path / "interrupted"
  proc = subprocess.Popen(t2l_train(model_dir, interrupted), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  metrics = interrupted / "logs" / "metrics.jsonl"
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    if metrics.exists() and len(metrics.read_text().splitlines()) >= 6:  # step >= 12 of 50
      proc.send_signal(signal.SIGTERM)
      break
    time.sleep(0.05)
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 143, err[-2000:]
  assert "preempted: checkpoint of step" in err
  stopped_at = int(err.split("checkpoint of step ")[1].split()[0])
  assert 12 <= stopped_at < 50
  resumed = subprocess.run(t2l_train(model_dir, interrupted), capture_output=True, text=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert f"resuming from step {stopped_at}" in resumed.stderr
  assert logged_losses(interrupted) == logged_losses(straight)  # bitwise equal, every logged step

  other_rank = subprocess.run(t2l_train(model_dir, interrupted, "--config.hypernet.rank=4"),
                              capture_output=True, text=True, timeout=600)
  assert other_rank.returncode == 2
  assert "holds a checkpoint of another config (hypernetwork / adapter shape differs" in other_rank.stderr


def test_damaged_checkpoint_is_skipped(tmp_path, caplog):
  state = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
  mngr = ckpt.manager(str(tmp_path), keep=3)
  for step in (1, 2):
    ckpt.save(mngr, step, {k: v * step for k, v in state.items()}, {"step": step}, force=True)
  mngr.wait_until_finished()
  for root, _, files in os.walk(tmp_path / "2" / "state"):
    for name in files:  # Truncate every file of the newest checkpoint.
      open(os.path.join(root, name), "wb").close()
  with caplog.at_level(logging.WARNING, logger="hyperlora.ckpt"):
    restored = ckpt.restore(ckpt.manager(str(tmp_path)), state)
  np.testing.assert_array_equal(restored["w"], state["w"])  # step 1's values
  assert "checkpoint step 2" in caplog.text and "unreadable" in caplog.text
