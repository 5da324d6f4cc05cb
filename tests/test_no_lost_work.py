"""No lost work, no hang: exports that never delete what they did not write, checkpoint writes
that fail fast, one trainer per workdir, and logs that count a resumed step once."""

import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import jax
import pytest

import hyperlora
from hyperlora import lora as lora_lib
from hyperlora import peft_io, run_lock
from hyperlora.metrics import MetricWriter
from tests.test_checkpoints import t2l_train
from tests.test_errors import fake_run


def snapshot(root) -> dict:
  """Every file below root -> its bytes (directories as well, so an emptied one shows)."""
  out = {}
  for directory, dirs, files in os.walk(root):
    out[os.path.relpath(directory, root) + "/"] = None
    for name in files:
      with open(os.path.join(directory, name), "rb") as f:
        out[os.path.relpath(os.path.join(directory, name), root)] = f.read()
  return out


@pytest.fixture(scope="module")
def adapter(tiny_model):
  path, _ = tiny_model("llama")
  loaded = hyperlora.load(path, with_tokenizer=False)
  return lora_lib.init(jax.random.key(0), loaded.config, ["q_proj"], 4, b_std=0.1)


@pytest.mark.parametrize(
  "layout, message",
  [
    ({"notes.txt": b"precious"}, "is not an adapter directory (it holds notes.txt)"),
    (
      {"checkpoints/1/state": b"x", "logs/metrics.jsonl": b"{}"},
      "is not an adapter directory (it holds checkpoints, logs)",
    ),
    ({"adapter_config.json": b"{}"}, "is not an adapter directory"),  # half an adapter
    (
      {"adapter_config.json": b"{}", "adapter_model.safetensors": b"w", "README.md": b"mine"},
      "is not an adapter directory (it holds README.md)",
    ),
  ],
)
def test_export_refuses_a_directory_it_did_not_write(adapter, tmp_path, layout, message):
  target = tmp_path / "out"
  for name, data in layout.items():
    (target / name).parent.mkdir(parents=True, exist_ok=True)
    (target / name).write_bytes(data)
  before = snapshot(tmp_path)
  for overwrite in (False, True):  # --overwrite replaces adapters only, never anything else
    with pytest.raises(ValueError, match=re.escape(message)):
      peft_io.export(adapter, str(target), overwrite=overwrite)
    assert snapshot(tmp_path) == before


def test_export_into_a_file_is_refused(adapter, tmp_path):
  (tmp_path / "adapter").write_bytes(b"a file")
  before = snapshot(tmp_path)
  with pytest.raises(ValueError, match="is a file, not a directory"):
    peft_io.export(adapter, str(tmp_path / "adapter"))
  assert snapshot(tmp_path) == before


def test_export_replaces_only_an_adapter_and_only_when_asked(adapter, tmp_path):
  target = str(tmp_path / "a")
  os.makedirs(target)  # an empty directory may be written into
  peft_io.export(adapter, target, extra={"n": 1})
  first = snapshot(target)
  assert set(first) == {"./", "adapter_config.json", "adapter_model.safetensors", "hyperlora.json"}
  with pytest.raises(ValueError, match="already holds an adapter; pass --overwrite"):
    peft_io.export(adapter, target)
  assert snapshot(target) == first
  doubled = adapter.replace(weights=jax.tree.map(lambda x: 2 * x, adapter.weights))
  peft_io.export(doubled, target, overwrite=True)
  assert snapshot(target)["adapter_model.safetensors"] != first["adapter_model.safetensors"]
  assert "hyperlora.json" not in snapshot(target)  # the new adapter alone, nothing left over
  assert sorted(os.listdir(tmp_path)) == ["a"]  # no staging directories left beside it


@pytest.mark.parametrize("cli", ["t2l", "d2l"])
def test_out_naming_a_run_directory_is_refused_before_any_work(cli, tmp_path, capsys):
  from d2l_jax import cli as d2l_cli
  from t2l_jax import cli as t2l_cli

  run = fake_run(tmp_path / "run", cli)
  (tmp_path / "run" / "notes.txt").write_text("precious")
  doc = tmp_path / "doc.txt"
  doc.write_text("Ada kept a goat.")
  before = snapshot(tmp_path)
  argv = (
    ["generate", "Add 7.", "--checkpoint", run, "--out", run]
    if cli == "t2l"
    else ["internalize", str(doc), "--checkpoint", run, "--out", run]
  )
  status = (t2l_cli if cli == "t2l" else d2l_cli).main(argv + ["--overwrite"])
  err = capsys.readouterr().err
  assert status == 2
  assert "already exists and is not an adapter directory" in err
  assert len(err.strip().splitlines()) == 1, err
  assert snapshot(tmp_path) == before


FAILING_SAVE = """
import errno, os, sys
real = os.makedirs
def makedirs(path, *args, **kwargs):
  # From the second checkpoint on, the storage refuses writes (as a read-only remount would).
  if "orbax-checkpoint-tmp" in str(path) and "/6.orbax-checkpoint-tmp" not in str(path):
    raise OSError(errno.EROFS, "Read-only file system", str(path))
  return real(path, *args, **kwargs)
os.makedirs = makedirs
from t2l_jax import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_checkpoint_that_cannot_be_written_ends_the_run_at_once(tiny_model, tmp_path):
  run = tmp_path / "run"
  argv = t2l_train(tiny_model("llama")[0], run)[3:]  # after `python -m t2l_jax.cli`
  start = time.time()
  result = subprocess.run(
    [sys.executable, "-c", FAILING_SAVE, *argv], capture_output=True, text=True, timeout=300
  )
  last = result.stderr.strip().splitlines()[-1]
  assert result.returncode == 1, result.stderr[-3000:]
  assert time.time() - start < 240
  assert last.startswith("error: could not write checkpoint step 12 in ") or last.startswith(
    "error: could not write a checkpoint in "
  ), last
  assert str(run / "checkpoints") in last and "Read-only file system" in last
  assert sorted(os.listdir(run / "checkpoints")) == ["6"]  # the one written before is intact


def test_a_second_trainer_on_a_workdir_exits_at_once(tiny_model, tmp_path):
  run = tmp_path / "run"
  with run_lock.hold(str(run)):
    start = time.time()
    second = subprocess.run(
      t2l_train(tiny_model("llama")[0], run), capture_output=True, text=True, timeout=300
    )
  assert second.returncode == 2
  last = second.stderr.strip().splitlines()[-1]
  assert f"is being trained by process {os.getpid()} on " in last, last
  assert time.time() - start < 120
  assert not (run / "checkpoints").exists() and not (run / "logs").exists()


def test_a_lock_left_by_a_killed_trainer_is_taken_over(tmp_path, caplog):
  holder = subprocess.Popen(
    [
      sys.executable,
      "-c",
      textwrap.dedent(
        f"""
        import time
        from hyperlora import run_lock
        with run_lock.hold({str(tmp_path)!r}):
          print("held", flush=True)
          time.sleep(600)
        """
      ),
    ],
    stdout=subprocess.PIPE,
    text=True,
  )
  assert holder.stdout.readline().strip() == "held"
  with pytest.raises(run_lock.RunLocked, match=f"process {holder.pid}"):
    with run_lock.hold(str(tmp_path)):
      pass
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  with caplog.at_level(logging.WARNING, logger="hyperlora.run_lock"):
    with run_lock.hold(str(tmp_path)):
      info = json.loads((tmp_path / run_lock.LOCK_FILE).read_text())
  assert info["pid"] == os.getpid()
  assert f"locked by process {holder.pid}" in caplog.text and "no longer running" in caplog.text
  with caplog.at_level(logging.WARNING, logger="hyperlora.run_lock"):
    caplog.clear()
    with run_lock.hold(str(tmp_path)):  # released cleanly last time: no warning
      pass
  assert caplog.text == ""


def test_resume_drops_the_rows_it_redoes(tmp_path):
  writer = MetricWriter(str(tmp_path))
  for step in (10, 20, 30, 40):
    writer.write(step, {"loss": float(step)}, prefix="t2l")
  writer.write(50, {"loss": 1.0}, prefix="multitask")
  writer.close()
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 50, "prefix": "t2l", "lo')  # torn by a kill
  writer = MetricWriter(str(tmp_path))
  writer.resume("t2l", 20)
  writer.write(30, {"loss": 3.5}, prefix="t2l")
  writer.close()
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [(r["prefix"], r["step"], r["loss"]) for r in rows] == [
    ("t2l", 10, 10.0),
    ("t2l", 20, 20.0),
    ("multitask", 50, 1.0),
    ("t2l", 30, 3.5),
  ]
  # TensorBoard is told to purge the redone steps of that run alone (a SessionLog START at 21).
  events = b"".join(
    open(os.path.join(tmp_path, "t2l", name), "rb").read() for name in os.listdir(tmp_path / "t2l")
  )
  from tensorboardX.proto import event_pb2

  purges = []
  while events:
    length = int.from_bytes(events[:8], "little")
    event = event_pb2.Event.FromString(events[12 : 12 + length])
    events = events[16 + length :]
    if event.HasField("session_log") and event.session_log.status == event.session_log.START:
      purges.append(event.step)
  assert purges == [21]
