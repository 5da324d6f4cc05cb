"""SQuAD-style answer scoring: normalised exact match and word-overlap F1, max over gold answers."""

from __future__ import annotations

import collections
import re
import string


def normalize(text: str) -> str:
  """Lower case, no punctuation, no articles, single spaces (the SQuAD evaluation script's
  rules)."""
  text = "".join(c for c in text.lower() if c not in set(string.punctuation))
  text = re.sub(r"\b(a|an|the)\b", " ", text)
  return " ".join(text.split())


def word_f1(prediction: str, gold: str) -> float:
  pred, ref = normalize(prediction).split(), normalize(gold).split()
  if not pred or not ref:
    return float(pred == ref)
  common = sum((collections.Counter(pred) & collections.Counter(ref)).values())
  if common == 0:
    return 0.0
  precision, recall = common / len(pred), common / len(ref)
  return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str) -> float:
  return float(normalize(prediction) == normalize(gold))


def best(metric, prediction: str, answers) -> float:
  return max(metric(prediction, gold) for gold in answers)
