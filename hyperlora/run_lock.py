"""One trainer per workdir: an exclusive lock on WORKDIR/train.lock for the run's whole life.

The lock is an OS file lock (fcntl.flock), so it is released whenever its process ends, kill -9
and a lost node included: a lock file left behind by a dead process is simply taken over (with a
warning naming it). The file records who holds it, so a second trainer says which process to wait
for. Multi-host runs take it on process 0 only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time

log = logging.getLogger(__name__)

LOCK_FILE = "train.lock"


class RunLocked(ValueError):
  """Another live process trains in this workdir."""


def _holder(path: str) -> str:
  try:
    with open(path) as f:
      info = json.load(f)
    return f"process {info['pid']} on {info['host']} (since {info['since']})"
  except (OSError, ValueError, KeyError):
    return "another process"


@contextlib.contextmanager
def hold(workdir: str, enabled: bool = True):
  """Holds the workdir's lock inside the block; raises RunLocked at once if another process has
  it. enabled=False (processes other than 0) takes nothing."""
  if not enabled:
    yield
    return
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise RunLocked(
        f"{workdir!r} is being trained by {_holder(path)}; wait for it to finish, stop it, or "
        f"give another --config.workdir"
      ) from None
    previous = os.read(fd, 4096)
    if previous.strip():
      log.warning(
        "%s was locked by %s, which is no longer running; taking the run over",
        workdir,
        _holder(path),
      )
    info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%F %T")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    try:
      yield
    finally:
      os.ftruncate(fd, 0)  # An empty file: released cleanly, nothing to warn about next time.
  finally:
    os.close(fd)  # Closing releases the flock.
