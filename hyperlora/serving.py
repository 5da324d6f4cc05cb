"""The LoRA ranks serving engines accept, for exports padded to one of them (--pad-rank).

The command lines parse --pad-rank with parse_ranks before any model loads.
"""

from __future__ import annotations

# The ranks vLLM serves (its --max-lora-rank accepts only these).
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def parse_ranks(text: str) -> tuple[int, ...]:
  """--pad-rank: 'vllm' (the ranks vLLM serves) or a comma-separated list of ranks."""
  if text.strip().lower() == "vllm":
    return VLLM_RANKS
  try:
    ranks = tuple(sorted({int(r) for r in text.split(",") if r.strip()}))
  except ValueError:
    ranks = ()
  if not ranks or ranks[0] < 1:
    raise ValueError(f"--pad-rank {text!r}: give 'vllm' or positive ranks like 8,16,32")
  return ranks


def serving_rank(rank: int, allowed: tuple[int, ...]) -> int:
  """The smallest allowed rank that holds `rank`; one line on what to do when none does."""
  fitting = [r for r in sorted(allowed) if r >= rank]
  if not fitting:
    raise ValueError(
      f"the adapter has rank {rank}, more than the largest allowed rank {max(allowed)}; make a "
      "smaller one (D2L: fewer or longer chunks, --chunk-len; T2L: a lower lora rank)"
    )
  return fitting[0]
