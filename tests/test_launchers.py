"""The launchers: the task-count sweep writes its table and plot; launch/local.py runs a training
job as 2 processes on 127.0.0.1. (Apart from test_distributed.py so the two files run in
parallel.)"""

import json
import subprocess
import sys


def test_sweep_runs_resumes_collects_and_writes_a_slurm_array(tiny_model, tmp_path):
  path, _ = tiny_model("llama")
  out = tmp_path / "sweep"
  sweep = lambda *args: subprocess.run(
    [
      sys.executable,
      "launch/sweep.py",
      "--config",
      "configs/t2l/tiny.py",
      "--task-counts",
      "4",
      "8",
      "--seeds",
      "0",
      "1",
      "--out",
      str(out),
      *args,
      "--",
      f"--config.base_model={path}",
      "--config.train.steps=4",
      "--config.eval.examples_per_task=2",
      "--config.eval.max_new_tokens=2",
    ],
    capture_output=True,
    text=True,
    timeout=900,
  )
  # A SLURM array of 4 tasks; its task 1 is (4 tasks, seed 1), run here as the array would.
  result = sweep("--slurm", "--no-submit")
  assert result.returncode == 0, result.stderr[-3000:]
  script = (out / "sweep.sbatch").read_text()
  assert "#SBATCH --array=0-3" in script and "--requeue" in script
  assert '--array-index "$SLURM_ARRAY_TASK_ID"' in script and "--config.train.steps=4" in script
  result = sweep("--array-index", "1")
  assert result.returncode == 0, result.stderr[-3000:]
  assert (out / "tasks0004_seed1" / "eval.json").is_file()
  assert not (out / "tasks0004_seed0").exists()
  # Locally: the finished run is skipped, the other three run, then everything is collected.
  result = sweep()
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stderr.count("finished, skipped") == 1
  saved = json.loads((out / "sweep.json").read_text())
  adapters = {
    "base model",
    "multi-task LoRA",
    "T2L, random descriptions (control)",
    "T2L, task descriptions",
  }
  sibling = "T2L, a sibling task's description (control)"
  assert {(r["train_tasks"], r["seed"], r["split"], r["adapter"]) for r in saved["runs"]} == {
    (n, seed, split, adapter)
    for n in (4, 8)
    for seed in (0, 1)
    # Held-out families of one task (title_case, ...) have no sibling: no sibling control there.
    for split, names in (("sibling held-out", adapters | {sibling}), ("family held-out", adapters))
    for adapter in names
  }
  for row in saved["summary"]:
    mean, low, high = row["_exact match"]
    assert row["seeds"] == 2 and low <= mean <= high
  assert "| family held-out | T2L, task descriptions | 8 | 2 |" in (out / "sweep.md").read_text()
  assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  collected = sweep("--collect-only")
  assert collected.returncode == 0 and "finished, skipped" not in collected.stderr
  printed = sweep("--print-commands")
  assert printed.stdout.count("t2l train") == 4
  assert "--config.data.max_train_tasks=8" in printed.stdout
  epochs = sweep("--print-commands", "--steps-per-task", "5")  # fixed epochs: steps grow
  assert "--config.train.steps=20 " in epochs.stdout and "--config.train.steps=40 " in epochs.stdout


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
      "--config.baselines.multitask=False",
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
