"""Directories written whole or not at all: built in a staging directory beside the target (same
filesystem, so the final rename is atomic) that is removed with its contents if writing fails."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile


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
