"""Runs a command as N JAX processes on this machine (coordinator on 127.0.0.1), e.g. to test a
multi-host configuration without a cluster:

  python launch/local.py --processes 2 --devices-per-process 2 -- \\
      t2l train --config configs/t2l/tiny.py --config.base_model=DIR --config.workdir=runs/mp

Each process gets HYPERLORA_COORDINATOR / HYPERLORA_NUM_PROCESSES / HYPERLORA_PROCESS_ID (read by
hyperlora.distributed.initialize) and, on CPU, that many forced host devices. Output of process 0 is
shown; the others go to <logdir>/process_<i>.log. Exits with the first non-zero exit code.
"""

import argparse
import os
import socket
import subprocess
import sys


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def main() -> int:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--processes", type=int, default=2)
  parser.add_argument("--devices-per-process", type=int, default=1, help="forced CPU devices each")
  parser.add_argument("--logdir", default="runs/launch_logs")
  parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...")
  args = parser.parse_args()
  command = args.command[1:] if args.command[:1] == ["--"] else args.command
  if not command:
    parser.error("give the command after --")
  os.makedirs(args.logdir, exist_ok=True)
  coordinator = f"127.0.0.1:{free_port()}"
  procs = []
  for i in range(args.processes):
    env = dict(
      os.environ,
      HYPERLORA_COORDINATOR=coordinator,
      HYPERLORA_NUM_PROCESSES=str(args.processes),
      HYPERLORA_PROCESS_ID=str(i),
      JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"),
      XLA_FLAGS=f"--xla_force_host_platform_device_count={args.devices_per_process}",
    )
    out = None if i == 0 else open(os.path.join(args.logdir, f"process_{i}.log"), "w")
    procs.append(
      subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT if out else None)
    )
  codes = [p.wait() for p in procs]
  return next((c for c in codes if c), 0)


if __name__ == "__main__":
  sys.exit(main())
