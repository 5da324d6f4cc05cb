"""The task-count sweep at CPU size: T2L-L for SmolLM2 on the embedded suite, short runs.

Each (task count, seed) run trains T2L and its multi-task LoRA for 40 steps of 8 tasks x 1
example at the main job's learning rate (3e-4; at 1e-3 T2L diverged within 20 steps: answer NLL
2.0 -> 11.7, gradient norm 325; counts below 8 repeat tasks within a batch, so every count gets the
same budget) and evaluates 8 examples per sibling and family held-out task. One run takes about
5.5 minutes on 2 CPU cores (T2L 2.2 s/step, multi-task LoRA 1.8 s/step, eval 2.5 min), so 2 task
counts x 3 seeds take about 35 minutes:

  python launch/sweep.py --config configs/t2l/sweep_cpu.py --task-counts 4 49 \\
      --seeds 0 1 2 --out runs/sweep_cpu
"""

import os

from hyperlora.cli_config import load_config_file


def get_config():
  c = load_config_file(os.path.join(os.path.dirname(__file__), "smollm2_suite.py"))
  c.workdir = "runs/sweep_cpu/run"  # launch/sweep.py sets one workdir per run
  c.train.update(steps=40, ckpt_every=20, log_every=5)
  c.eval.update(examples_per_task=8)
  return c
