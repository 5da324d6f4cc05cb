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

from hyperlora import config_checks

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


class _StderrHandler(logging.StreamHandler):
  """Writes to whatever sys.stderr is when a record is emitted (not the one at set-up), so a
  command run twice in one process (tests, notebooks) logs to the current stream."""

  @property
  def stream(self):
    return sys.stderr

  @stream.setter
  def stream(self, _):
    pass


def setup_logging(*packages: str) -> None:
  """Our messages, one line each, on stderr; calling it again replaces its handler (no doubles)."""
  handler = _StderrHandler()
  handler.setFormatter(logging.Formatter("%(message)s"))
  for name in ("hyperlora", *packages):
    logger = logging.getLogger(name)
    for old in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
      logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # absl also installs a root handler


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
  except flags.Error as err:  # e.g. --config.train.lr=abc
    print(
      f"error: {err} (fix that flag: --config.KEY=VALUE takes the type of the config's field; "
      f"see the config file)",
      file=sys.stderr,
    )
    return None, None
  except (AttributeError, KeyError) as err:  # a key the config does not have
    print(f"error: {_unknown_field(args, err)}", file=sys.stderr)
    return None, None
  if flag_values.config is None:
    print("error: --config is required (a configs/*/*.py file)", file=sys.stderr)
    return None, None
  try:
    config_checks.validate(flag_values.config)
  except ValueError as err:
    print(f"error: {err}", file=sys.stderr)
    return None, None
  return flag_values.config, flag_values


def _unknown_field(args: list[str], err: Exception) -> str:
  """One line for an override of a field the config lacks: the flag, and ml_collections' hint."""
  while err.args and isinstance(err.args[0], BaseException):  # AttributeError(KeyError(text))
    err = err.args[0]
  text = str(err.args[0] if err.args else err)
  name, _, hint = text.partition("\n")
  name = name.strip("'\"")
  flag = next((a.split("=")[0] for a in args if a.startswith("--config.") and name in a), name)
  return (
    f"{flag}: the config has no field {name!r}"
    + (f"; {hint.strip()}" if hint else "")
    + (" (see the config file for its fields)")
  )


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
  from hyperlora.train_checkpoints import CheckpointReadError, CheckpointWriteError

  try:
    return command() or 0
  except Preempted as stop:
    print(stop, file=sys.stderr)
    return stop.code
  except CheckpointWriteError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    # Orbax's writer threads can stay blocked after a failed write, and an ordinary exit would
    # wait for them forever (a scheduler job holding its allocation): leave without them.
    os._exit(1)
  except CheckpointReadError as err:
    print(f"error: {err}", file=sys.stderr)
    return 1
  except (FileNotFoundError, ValueError) as err:
    print(f"error: {err}", file=sys.stderr)
    return 2


def run_training(train_fn, config, prog: str) -> int:
  """Trains with the workdir locked for the run's life (process 0 holds it), so a second trainer
  on the same workdir exits at once instead of colliding with this one."""
  import jax

  from hyperlora import run_lock

  def command():
    with run_lock.hold(config.workdir, enabled=jax.process_index() == 0):
      workdir = train_fn(config)
    print(f"checkpoints in {workdir}; next: {prog} eval --checkpoint {workdir}")

  return guarded(command)
