"""Checks of config values, run where a command line's config is parsed (`cli_config.parse`), so
a bad value stops the command at once with the field named, not deep inside training."""

from __future__ import annotations

import numbers

_WHOLE = lambda low: (
  lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= low
)
_POSITIVE = lambda v: isinstance(v, numbers.Real) and v > 0
_FRACTION = lambda v: isinstance(v, numbers.Real) and 0 <= v < 1

# (field, what it must be, check); fields a config does not have are skipped, so one table serves
# both methods.
CHECKS = (
  ("train.steps", "a whole number above 0", _WHOLE(1)),
  ("train.lr", "a learning rate above 0", _POSITIVE),
  ("train.warmup_frac", "a fraction in [0, 1)", _FRACTION),
  ("train.weight_decay", "0 or more", lambda v: isinstance(v, numbers.Real) and v >= 0),
  ("train.clip_norm", "above 0", _POSITIVE),
  ("train.label_smoothing", "a fraction in [0, 1)", _FRACTION),
  ("train.grad_accum", "a whole number above 0", _WHOLE(1)),
  ("train.log_every", "a whole number above 0", _WHOLE(1)),
  ("train.ckpt_every", "a whole number above 0", _WHOLE(1)),
  ("train.keep_checkpoints", "a whole number above 0", _WHOLE(1)),
  ("hypernet.rank", "a whole number above 0", _WHOLE(1)),
  ("data.tasks_per_batch", "a whole number above 0", _WHOLE(1)),
  ("data.examples_per_task", "a whole number above 0", _WHOLE(1)),
  ("data.train_descriptions", "a whole number above 0", _WHOLE(1)),
  ("data.docs_per_batch", "a whole number above 0", _WHOLE(1)),
  ("data.queries_per_doc", "a whole number above 0", _WHOLE(1)),
  ("data.max_len", "a whole number above 0", _WHOLE(1)),
  ("data.max_answer", "a whole number above 0", _WHOLE(1)),
  ("baselines.lr", "a learning rate above 0", _POSITIVE),
  ("baselines.oracle_steps", "a whole number, 0 or more", _WHOLE(0)),
  ("eval.examples_per_task", "a whole number above 0", _WHOLE(1)),
  ("eval.chunk_len", "a whole number above 0", _WHOLE(1)),
)


def _lookup(config, path: str):
  node = config
  for key in path.split("."):
    if key not in node:
      return _MISSING
    node = node[key]
  return node


_MISSING = object()


def validate(config) -> None:
  """Raises ValueError naming the first field whose value is out of range."""
  for path, what, ok in CHECKS:
    value = _lookup(config, path)
    if value is not _MISSING and not ok(value):
      raise ValueError(f"--config.{path}={value!r}: must be {what}")
