"""Load time of the embedded GGUF model (SmolLM2-135M-Instruct, Q4_1), each in a fresh process.

  python benchmarks/load_time.py [--repeats 3]

Rows: our params only; ours with tokenizer (cache warm); transformers' own GGUF loading.
Import time is excluded and reported separately.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from report import write

_SNIPPET = """
import json, time
t0 = time.perf_counter()
{imports}
t1 = time.perf_counter()
{load}
t2 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "load_s": t2 - t1}}))
"""
CASES = {
  "hyperlora params": (
    "import jax, hyperlora; jax.numpy.zeros(1).block_until_ready()",
    "m = hyperlora.load('smollm2', with_tokenizer=False)",
  ),
  "hyperlora params+tokenizer": (
    "import jax, hyperlora; jax.numpy.zeros(1).block_until_ready()",
    "m = hyperlora.load('smollm2')",
  ),
  "transformers GGUF": (
    "import os, transformers; from hyperlora import base_weights; "
    "p = base_weights.resolve('smollm2')",
    "m = transformers.AutoModelForCausalLM.from_pretrained(os.path.dirname(p), "
    "gguf_file=os.path.basename(p))",
  ),
}


def main():
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  rows = []
  for name, (imports, load) in CASES.items():
    runs = []
    for _ in range(args.repeats):
      out = subprocess.run(
        [sys.executable, "-c", _SNIPPET.format(imports=imports, load=load)],
        capture_output=True,
        text=True,
        check=True,
      )
      runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows.append(
      {
        "case": name,
        "load s (median)": statistics.median(r["load_s"] for r in runs),
        "import s (median)": statistics.median(r["import_s"] for r in runs),
      }
    )
  write("load_time", rows, {"repeats": args.repeats})


if __name__ == "__main__":
  main()
