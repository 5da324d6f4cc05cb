"""The D2L notebook runs top to bottom (see test_notebooks.py)."""

import os

from tests.test_notebooks import NOTEBOOKS, needs_smollm2, run_notebook


@needs_smollm2
def test_d2l_notebook_runs():
  (path,) = [p for p in NOTEBOOKS if "d2l" in os.path.basename(p)]
  run_notebook(path)
