"""Sharded training equals single-device training: meshes on 8 CPU devices, and 2 real processes
on 127.0.0.1 against one process. Tolerance: 1e-5 on losses and parameters (float32 sums in a
different order; observed differences are ~1e-7)."""

import json
import socket
import subprocess
import sys

import numpy as np

WORKER = [sys.executable, "tests/distributed_worker.py"]
TOL = 1e-5


def run(*args, timeout=600):
  result = subprocess.run(
    [*WORKER, *map(str, args)], capture_output=True, text=True, timeout=timeout
  )
  assert result.returncode == 0, result.stderr[-3000:]


def assert_same(reference: dict, other: dict):
  np.testing.assert_allclose(other["losses"], reference["losses"], atol=TOL, rtol=TOL)
  assert reference["params"].keys() == other["params"].keys()
  for name, values in reference["params"].items():
    np.testing.assert_allclose(other["params"][name], values, atol=TOL, rtol=TOL, err_msg=name)


def test_meshes_match_one_device(tiny_model, tmp_path):
  path, _ = tiny_model("llama")
  out = tmp_path / "meshes.json"
  # Every axis at once (data, fsdp and tensor of 2 each); pure data parallelism is the 8x1x1 mesh
  # the checkpoint is restored onto below.
  run(out, path, "--devices", 8, "--meshes", "1,1,1", "2,2,2")
  results = json.loads(out.read_text())
  reference = results["1x1x1"]
  assert np.abs(reference["params"]["head_q_proj/kernel"]).max() > 0  # updated (initialised at 0)
  assert_same(reference, results["2x2x2"])
  assert_same(results["d2l 1x1x1"], results["d2l 2x2x2"])  # D2L steps too
  assert np.abs(results["d2l 1x1x1"]["params"]["scaler_B_down_proj"]).max() > 0  # updated (init 0)
  # Parameters really are sharded: head [head_in=64, r (d_in + d_out)], q_proj [layers, 64, 64].
  out_width = reference["head_shape"][1]
  assert results["2x2x2"]["head_shard"] == [32, out_width // 2]  # fsdp=2, tensor=2
  assert results["2x2x2"]["q_shard"] == [3, 32, 32]
  # The shard_map per-example LoRA program equals the jit path (and the adapter matters).
  assert results["shard_map_max_diff"] < 1e-5 and results["lora_effect"] > 1e-3
  # A 2x2x2 checkpoint restores exactly onto an 8x1x1 mesh and onto a single device.
  assert results["restore_other_mesh_equal"]
  assert results["restored_head_shard"] == reference["head_shape"]  # fsdp = tensor = 1 there


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_match_one(tiny_model, tmp_path):
  path, _ = tiny_model("llama")
  single = tmp_path / "single.json"
  run(single, path, "--devices", 4)
  port, multi = free_port(), tmp_path / "multi.json"
  workers = [
    subprocess.Popen(
      [
        *WORKER,
        str(multi),
        path,
        "--devices",
        "2",
        "--process",
        str(i),
        "--processes",
        "2",
        "--port",
        str(port),
      ],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  for worker in workers:
    _, err = worker.communicate(timeout=600)
    assert worker.returncode == 0, err[-3000:]
  assert_same(json.loads(single.read_text())["4x1x1"], json.loads(multi.read_text())["4x1x1"])
