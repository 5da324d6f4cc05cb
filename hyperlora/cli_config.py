"""What the `t2l` and `d2l` command lines share: logging and an ml_collections config file with
--config.key=value overrides (absl flags, as big_vision and the Flax examples do).

JAX and the training code are imported inside the functions that need them, so that `--help` and
bad flags answer at once, before JAX starts.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

from absl import flags
from ml_collections import config_flags

CONFIG_HELP = (
  "  --config=FILE          an experiment file (get_config())\n"
  "  --config.KEY=VALUE     override any config field, e.g. --config.train.steps=50\n"
)


def load_config_file(path: str):
  """get_config() of an experiment file, as `--config=path` would load it (for notebooks, tests and
  benchmarks that build a config without a command line)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no config file {path!r}")
  spec = importlib.util.spec_from_file_location("experiment_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def setup_logging(*packages: str) -> None:
  handler = logging.StreamHandler(sys.stderr)
  handler.setFormatter(logging.Formatter("%(message)s"))
  for name in ("hyperlora", *packages):
    logging.getLogger(name).addHandler(handler)
    logging.getLogger(name).setLevel(logging.INFO)
    logging.getLogger(name).propagate = False  # absl also installs a root handler


def parse(prog: str, argv: list[str], usage: str, define_extra=None):
  """(config, flag values) from `argv`, or (None, None) after printing help or an error.

  define_extra(flags, flag_values) may define more flags.
  """
  flag_values = flags.FlagValues()
  args = [prog] + argv
  # sys_argv: ml_collections reads it to know which --config.* overrides to define.
  config_flags.DEFINE_config_file(
    "config",
    None,
    "experiment config file",
    flag_values=flag_values,
    lock_config=True,
    sys_argv=args,
  )
  if define_extra is not None:
    define_extra(flags, flag_values)
  if any(a in ("-h", "--help") for a in argv):
    print(usage)
    return None, None
  try:
    flag_values(args)
  except flags.Error as err:  # e.g. --config.train.lr=abc, or a key the config does not have
    print(
      f"error: {err} (fix that flag: --config.KEY=VALUE takes the type of the config's field; "
      f"see the config file)",
      file=sys.stderr,
    )
    return None, None
  if flag_values.config is None:
    print("error: --config is required (a configs/*/*.py file)", file=sys.stderr)
    return None, None
  return flag_values.config, flag_values


def start(config) -> None:
  """Joins the other processes of a multi-host job (no-op alone) and prints the config once."""
  from hyperlora import distributed

  distributed.initialize()
  import jax

  if jax.process_index() == 0:
    print(config)


def guarded(command) -> int:
  """Runs command() and returns its exit status: bad input (a missing file, a wrong value) prints
  one line and gives 2; a preempted training run gives 143 once its checkpoint is written; a
  checkpoint that cannot be read gives 1 (nothing on disk was changed)."""
  from hyperlora.train import Preempted
  from hyperlora.train_checkpoints import CheckpointReadError

  try:
    return command() or 0
  except Preempted as stop:
    print(stop, file=sys.stderr)
    return stop.code
  except CheckpointReadError as err:
    print(f"error: {err}", file=sys.stderr)
    return 1
  except (FileNotFoundError, ValueError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 2


def run_training(train_fn, config, prog: str) -> int:
  def command():
    workdir = train_fn(config)
    print(f"checkpoints in {workdir}; next: {prog} eval --checkpoint {workdir}")

  return guarded(command)
