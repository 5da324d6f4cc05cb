"""The launchers: the task-count sweep writes its table and plot; launch/local.py runs a training
job as 2 processes on 127.0.0.1. (Apart from test_distributed.py so the two files run in
parallel.)"""

import json
import subprocess
import sys


def test_sweep_writes_table_and_plot(tiny_model, tmp_path):
  path, _ = tiny_model("llama")
  out = tmp_path / "sweep"
  result = subprocess.run(
    [
      sys.executable,
      "launch/sweep.py",
      "--config",
      "configs/t2l/tiny.py",
      "--task-counts",
      "4",
      "8",
      "--out",
      str(out),
      "--",
      f"--config.base_model={path}",
      "--config.train.steps=6",
      "--config.eval.examples_per_task=2",
      "--config.eval.max_new_tokens=2",
    ],
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  rows = json.loads((out / "sweep.json").read_text())
  assert {(r["train_tasks"], r["adapter"]) for r in rows} == {
    (n, a) for n in (4, 8) for a in ("base model", "T2L, task descriptions")
  }
  assert (out / "sweep.csv").read_text().startswith("train_tasks,seed,adapter,held-out exact match")
  assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  printed = subprocess.run(
    [
      sys.executable,
      "launch/sweep.py",
      "--config",
      "configs/t2l/tiny.py",
      "--task-counts",
      "16",
      "--seeds",
      "0",
      "1",
      "--out",
      str(out),
      "--print-commands",
    ],
    capture_output=True,
    text=True,
  )
  assert (
    printed.stdout.count("t2l train") == 2 and "--config.data.max_train_tasks=16" in printed.stdout
  )


def test_local_launcher_runs_t2l_train_in_two_processes(tiny_model, tmp_path):
  path, _ = tiny_model("llama")
  result = subprocess.run(
    [
      sys.executable,
      "launch/local.py",
      "--processes",
      "2",
      "--logdir",
      str(tmp_path / "logs"),
      "--",
      sys.executable,
      "-m",
      "t2l_jax.cli",
      "train",
      "--config",
      "configs/t2l/tiny.py",
      f"--config.base_model={path}",
      f"--config.workdir={tmp_path / 'run'}",
      "--config.train.steps=4",
      "--config.train.log_every=2",
      "--config.baselines.multitask_steps=0",
      "--config.data.max_train_tasks=8",
    ],
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "mesh {'data': 2, 'fsdp': 1, 'tensor': 1}" in result.stderr
  assert (tmp_path / "run" / "checkpoints" / "4").is_dir()
  logged = (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()
  assert len(logged) == 2  # steps 2 and 4, written once (by process 0 only)
