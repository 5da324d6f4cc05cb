"""Directories written whole or not at all: built in a staging directory beside the target (same
filesystem, so the final rename is atomic) that is removed with its contents if writing fails."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile


def check_new_dir(
  out_dir: str, flag: str = "--out", kind: str = "", ours: frozenset = frozenset()
) -> None:
  """Refuses (ValueError, naming the command's `flag`) an output directory that is not new or
  empty: a file, a symbolic link or a directory with anything in it. Called before any work, and
  again just before the rename, so nothing is ever replaced that this project did not write.
  `kind` ('an adapter directory') says what a non-empty directory would have had to be; the
  message lists what it holds besides the names such a directory may hold (`ours`)."""
  if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
    raise ValueError(f"{flag} {out_dir!r} is a file, not a directory; give a new directory path")
  if not os.path.isdir(out_dir):
    return
  if os.path.islink(out_dir):
    raise ValueError(f"{flag} {out_dir!r} is a symbolic link; give a new directory path")
  names = set(os.listdir(out_dir))
  if names:
    names = sorted(names - ours) or sorted(names)
    shown = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
    raise ValueError(
      f"{flag} {out_dir!r} already exists{f' and is not {kind}' if kind else ''} (it holds "
      f"{shown}); nothing was written: give a new directory path"
    )


@contextlib.contextmanager
def staging_beside(out_dir: str, prefix: str):
  """Yields a new empty directory next to out_dir; on any failure inside the block it is deleted
  (only it: it was created here) and the error propagates. The caller renames it into place."""
  parent = os.path.dirname(os.path.abspath(out_dir))
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=prefix, dir=parent)
  try:
    yield staging
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
