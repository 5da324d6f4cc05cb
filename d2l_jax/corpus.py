"""Documents with questions: the embedded synthetic corpus and needle-in-a-haystack (NIAH).

Synthetic documents describe invented people (made-up names, towns, pets and numbers), so no base
model knows the answers before reading. Every fact has two question phrasings: `study` questions
are what training (and context distillation) sees, `test` questions what evaluation asks, so a
score on held-out documents measures reading the document, not memorising a phrasing.

NIAH follows the reference: a haystack of fixed sentences repeated to a length measured with the
tokenizer, the needle "The special magic number is NNNN." at a depth, one question.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np

ANSWER_STYLE = " Reply with only the answer."


@dataclasses.dataclass(frozen=True)
class QA:
  question: str
  answers: tuple[str, ...]  # any of them counts as right (SQuAD has several)


@dataclasses.dataclass(frozen=True)
class Document:
  doc_id: str
  text: str
  study: tuple[QA, ...]  # questions training may see
  test: tuple[QA, ...]  # questions evaluation asks (other phrasings of the same facts)


_ONSETS = (
  "b",
  "br",
  "d",
  "dr",
  "f",
  "g",
  "gl",
  "k",
  "kr",
  "l",
  "m",
  "n",
  "p",
  "pr",
  "qu",
  "r",
  "s",
  "st",
  "t",
  "th",
  "v",
  "z",
  "zh",
)
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ou", "y")
_CODAS = ("", "", "n", "r", "l", "th", "x", "m", "sk", "nd")
PROFESSIONS = (
  "glassblower",
  "beekeeper",
  "clockmaker",
  "ferryman",
  "cartographer",
  "weaver",
  "lamplighter",
  "stonemason",
  "brewer",
  "astronomer",
  "potter",
  "bookbinder",
)
ANIMALS = ("goat", "parrot", "tortoise", "hound", "mule", "falcon", "cat", "ferret")
COLOURS = ("teal", "crimson", "amber", "violet", "ochre", "silver", "indigo", "olive")
OBJECTS = ("lanterns", "barrels", "maps", "kites", "bells", "ladders", "drums", "boats")


def invented_name(rng: random.Random, syllables: int = 2) -> str:
  return "".join(
    rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)
  ).capitalize()


def _fact_sheet(rng: random.Random):
  """(sentence, study question, test question, answer) for each fact of one invented person."""
  person = f"{invented_name(rng)} {invented_name(rng, 3)}"
  town, pet_name, sibling = invented_name(rng), invented_name(rng), invented_name(rng)
  job, animal, colour, things = (
    rng.choice(PROFESSIONS),
    rng.choice(ANIMALS),
    rng.choice(COLOURS),
    rng.choice(OBJECTS),
  )
  year, count = str(rng.randint(1700, 1990)), str(rng.randint(3, 97))
  return person, [
    (
      f"{person} was born in the town of {town} in {year}.",
      f"In which town was {person} born?",
      f"What is the name of {person}'s home town?",
      town,
    ),
    ("", f"In which year was {person} born?", f"What year was {person} born in?", year),
    (
      f"{person} worked as {'an' if job[0] in 'aeiou' else 'a'} {job}.",
      f"What was {person}'s profession?",
      f"What did {person} do for a living?",
      job,
    ),
    (
      f"{person} kept a {animal} named {pet_name}.",
      f"What was the name of {person}'s {animal}?",
      f"What was {person}'s {animal} called?",
      pet_name,
    ),
    (
      f"{person}'s favourite colour was {colour}.",
      f"What was {person}'s favourite colour?",
      f"Which colour did {person} like best?",
      colour,
    ),
    (
      f"{person} owned {count} {things}.",
      f"How many {things} did {person} own?",
      f"What number of {things} did {person} have?",
      count,
    ),
    (
      f"{person} had a sister called {sibling}.",
      f"What was the name of {person}'s sister?",
      f"Who was {person}'s sister?",
      sibling,
    ),
  ]


def synthetic_document(seed: int) -> Document:
  """One invented biography (about 100 tokens) with a study and a test question per fact."""
  rng = random.Random(seed)
  person, facts = _fact_sheet(rng)
  sentences = [sentence for sentence, *_ in facts if sentence]
  rest = sentences[1:]
  rng.shuffle(rest)  # the introduction first, the other facts in any order
  text = " ".join([sentences[0]] + rest)
  study = tuple(QA(q + ANSWER_STYLE, (a,)) for _, q, _, a in facts)
  test = tuple(QA(q + ANSWER_STYLE, (a,)) for _, _, q, a in facts)
  return Document(f"synthetic-{seed}", text, study, test)


def synthetic_corpus(n: int, seed: int) -> list[Document]:
  """n documents; disjoint seeds (e.g. 0 for training, 10**6 for held-out) give disjoint people."""
  return [synthetic_document(seed + i) for i in range(n)]


HAYSTACK = (
  "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
)
NEEDLE = "The special magic number is {number}. "
NIAH_QUESTION = "What is the special magic number? Reply with only the number."
NIAH_DEPTHS = tuple(np.linspace(0.0, 1.0, 10).round(3))


def niah_document(tokenizer, n_tokens: int, depth: float, seed: int) -> Document:
  """A haystack of about n_tokens tokens (measured with the tokenizer) with the needle at `depth`
  (0 = start, 1 = end), placed at a sentence boundary."""
  rng = random.Random(seed)
  number = str(rng.randint(1000, 9999))
  sentences = HAYSTACK.split(". ")
  sentences = [s.strip() + ". " for s in sentences if s.strip()]
  sample = "".join(sentences * 8)
  tokens_per_sentence = len(tokenizer(sample, add_special_tokens=False)["input_ids"]) / (
    8 * len(sentences)
  )
  needle = NEEDLE.format(number=number)
  needle_tokens = len(tokenizer(needle, add_special_tokens=False)["input_ids"])
  n_sentences = max(1, round((n_tokens - needle_tokens) / tokens_per_sentence))
  hay = [sentences[i % len(sentences)] for i in range(n_sentences)]
  position = round(depth * n_sentences)
  text = "".join(hay[:position] + [needle] + hay[position:]).strip()
  qa = (QA(NIAH_QUESTION, (number,)),)
  return Document(f"niah-{n_tokens}-{depth}-{seed}", text, qa, qa)


def niah_corpus(
  tokenizer, n: int, max_tokens: int, seed: int, min_tokens: int = 32, depths=NIAH_DEPTHS
) -> list[Document]:
  """Training haystacks: lengths uniform in [min_tokens, max_tokens], depths drawn from `depths`.
  One length and one depth make haystacks that differ only in the needle's number."""
  rng = random.Random(seed)
  return [
    niah_document(tokenizer, rng.randint(min_tokens, max_tokens), rng.choice(depths), seed + i)
    for i in range(n)
  ]
