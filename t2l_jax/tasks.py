"""Tasks for Text-to-LoRA: the embedded generated suite, and Lots-of-LoRAs metadata from disk.

A task is a canonical definition (shown in the prompt, as Super-NaturalInstructions does), at least
ten paraphrased descriptions (what T2L reads) and an example generator. The generated suite is
deterministic given its seed; parametrised families (add k, append word w, ...) hold out some of
their members, so zero-shot evaluation asks the hypernetwork to interpolate between tasks it saw.
"""

from __future__ import annotations

import dataclasses
import os
import random
from typing import Callable

import yaml

from hyperlora.sft import Example

PROMPT_SUFFIX = " Please complete the task without any explanation."

WORDS = (
  "apple river stone cloud green quick seven music paper light garden window silver tiger "
  "orange bread chair ocean winter forest candle yellow rabbit planet"
).split()
FRAMES = (
  "{}",
  "In this task, {}",
  "Your job: {}",
  "Task: {}",
  "You are asked to {}",
  "Given the input, {}",
  "Instruction: {}",
  "For each input, {}",
  "Please {}",
  "The goal is to {}",
  "Here you must {}",
  "What to do: {}",
)


@dataclasses.dataclass(frozen=True)
class Task:
  """A task. Its prompt names it (the definition, as Super-NaturalInstructions and the reference's
  training prompt do) unless `definition_in_prompt` is off: then the user turn is only
  PROMPT_SUFFIX and the input, under an empty system turn, and only a description (T2L's, or one
  put in the prompt on purpose) can say which task it is."""

  name: str
  definition: str
  descriptions: tuple[str, ...]
  make_example: Callable[[random.Random], tuple[str, str]]  # rng -> (input, target)
  family: str = ""
  param: int | str | None = None  # the family parameter (k of add_k), for sibling controls
  definition_in_prompt: bool = True

  def examples(self, n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(f"{self.name}/{seed}")
    return [self.make_example(rng) for _ in range(n)]

  def prompt(self, task_input: str, description: str | None = None) -> str:
    """The user turn; `description` puts that text where the definition would go."""
    head = (
      description
      if description is not None
      else (self.definition if self.definition_in_prompt else None)
    )
    return (
      f"{head}{PROMPT_SUFFIX}\n\n{task_input}"
      if head
      else (f"{PROMPT_SUFFIX.strip()}\n\n{task_input}")
    )

  def example(self, task_input: str, target: str, description: str | None = None) -> Example:
    system = None if self.definition_in_prompt else ""  # "": an empty system turn
    return Example(self.prompt(task_input, description), target, system)

  def sample(self, seed: int, description: str | None = None) -> Example:
    return self.example(*self.examples(1, seed)[0], description)

  def eval_examples(self, n: int, seed: int, descriptions=None) -> list[Example]:
    """n examples; with `descriptions`, example i carries descriptions[i % len] in its prompt."""
    return [
      self.example(x, y, descriptions[i % len(descriptions)] if descriptions else None)
      for i, (x, y) in enumerate(self.examples(n, seed))
    ]


def _sentence(rng, lo=3, hi=6):
  return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def _number(rng):
  return str(rng.randint(0, 99))


def _descriptions(phrasings: list[str]) -> tuple[str, ...]:
  """>= 10 distinct descriptions: each phrasing in several frames, each ending in a full stop."""
  out = []
  for i, frame in enumerate(FRAMES):
    for phrasing in phrasings[i % len(phrasings) :] + phrasings[: i % len(phrasings)]:
      text = frame.format(phrasing)
      text = text[0].upper() + text[1:]
      text = text if text.endswith(".") else text + "."
      if text not in out:
        out.append(text)
        break
  return tuple(out)


def _task(name, phrasings, fn, family="", inputs=_sentence):
  """fn maps the input string to the target string."""

  def make(rng):
    x = inputs(rng)
    return x, fn(x)

  return Task(name, _descriptions(phrasings)[0], _descriptions(phrasings), make, family or name)


def _yes_no(flag: bool) -> str:
  return "yes" if flag else "no"


def generated_suite() -> list[Task]:
  """The embedded suite: 69 text tasks over string, arithmetic, classification and formatting."""
  vowels = set("aeiou")
  tasks = [
    _task(
      "uppercase",
      [
        "rewrite the sentence in upper case",
        "convert every letter to capitals",
        "make all letters uppercase",
      ],
      str.upper,
    ),
    _task(
      "title_case",
      [
        "capitalise the first letter of every word",
        "write each word with an initial capital",
        "convert the text to title case",
      ],
      str.title,
    ),
    _task(
      "reverse_words",
      [
        "reverse the order of the words",
        "write the words from last to first",
        "output the words in reverse order",
      ],
      lambda s: " ".join(s.split()[::-1]),
    ),
    _task(
      "reverse_letters",
      [
        "spell the whole text backwards",
        "reverse the characters of the text",
        "write the text from its last character to its first",
      ],
      lambda s: s[::-1],
    ),
    _task(
      "sort_words",
      [
        "sort the words alphabetically",
        "put the words in alphabetical order",
        "arrange the words from a to z",
      ],
      lambda s: " ".join(sorted(s.split())),
    ),
    _task(
      "count_words",
      [
        "count the words in the sentence",
        "say how many words there are",
        "give the number of words",
      ],
      lambda s: str(len(s.split())),
    ),
    _task(
      "count_vowels",
      [
        "count the vowels in the text",
        "say how many vowels the text has",
        "give the number of vowel letters",
      ],
      lambda s: str(sum(c in vowels for c in s)),
    ),
    _task(
      "remove_vowels",
      [
        "delete every vowel from the text",
        "write the text without vowels",
        "drop the letters a, e, i, o and u",
      ],
      lambda s: "".join(c for c in s if c not in vowels),
    ),
    _task(
      "acronym",
      [
        "give the first letter of each word",
        "form an acronym from the words",
        "join the initial letters of the words",
      ],
      lambda s: "".join(w[0] for w in s.split()),
    ),
    _task(
      "longest_word",
      [
        "find the longest word",
        "output the word with the most letters",
        "return the longest word of the sentence",
      ],
      lambda s: max(s.split(), key=len),
    ),
    _task(
      "shortest_word",
      [
        "find the shortest word",
        "output the word with the fewest letters",
        "return the shortest word of the sentence",
      ],
      lambda s: min(s.split(), key=len),
    ),
    _task(
      "word_lengths",
      [
        "list the length of each word",
        "replace each word by its number of letters",
        "give the letter count of every word",
      ],
      lambda s: " ".join(str(len(w)) for w in s.split()),
    ),
    _task(
      "dedupe_words",
      [
        "remove repeated words, keeping the first",
        "drop duplicate words",
        "keep each word only once, in order",
      ],
      lambda s: " ".join(dict.fromkeys(s.split())),
    ),
    _task(
      "has_repeat",
      [
        "answer yes if some word appears twice, else no",
        "say whether any word is repeated",
        "tell if the sentence repeats a word",
      ],
      lambda s: _yes_no(len(set(s.split())) < len(s.split())),
    ),
    _task(
      "starts_with_vowel",
      [
        "answer yes if the text starts with a vowel, else no",
        "say whether the first letter is a vowel",
        "tell if the text begins with a, e, i, o or u",
      ],
      lambda s: _yes_no(s[0] in vowels),
    ),
    _task(
      "is_even",
      [
        "answer yes if the number is even, else no",
        "say whether the number is even",
        "tell if the number is divisible by two",
      ],
      lambda s: _yes_no(int(s) % 2 == 0),
      inputs=_number,
    ),
    _task(
      "double",
      ["double the number", "multiply the number by two", "give twice the number"],
      lambda s: str(2 * int(s)),
      inputs=_number,
    ),
    _task(
      "square",
      ["square the number", "multiply the number by itself", "give the number squared"],
      lambda s: str(int(s) ** 2),
      inputs=_number,
    ),
    _task(
      "digit_sum",
      ["add up the digits of the number", "give the sum of the digits", "compute the digit sum"],
      lambda s: str(sum(int(c) for c in s)),
      inputs=_number,
    ),
    _task(
      "number_to_words_count",
      ["say how many digits the number has", "count the digits", "give the number of digits"],
      lambda s: str(len(s)),
      inputs=_number,
    ),
  ]
  for k in range(1, 10):
    tasks.append(
      _task(
        f"add_{k}",
        [f"add {k} to the number", f"increase the number by {k}", f"give the number plus {k}"],
        lambda s, k=k: str(int(s) + k),
        family="add_k",
        inputs=_number,
      )
    )
  for k in range(1, 6):
    tasks.append(
      _task(
        f"subtract_{k}",
        [
          f"subtract {k} from the number",
          f"decrease the number by {k}",
          f"give the number minus {k}",
        ],
        lambda s, k=k: str(int(s) - k),
        family="subtract_k",
        inputs=_number,
      )
    )
  for k in range(3, 8):
    tasks.append(
      _task(
        f"times_{k}",
        [
          f"multiply the number by {k}",
          f"give {k} times the number",
          f"scale the number by a factor of {k}",
        ],
        lambda s, k=k: str(int(s) * k),
        family="times_k",
        inputs=_number,
      )
    )
  for k in range(1, 5):
    tasks.append(
      _task(
        f"first_{k}_words",
        [
          f"keep only the first {k} words",
          f"output the first {k} words",
          f"drop everything after word {k}",
        ],
        lambda s, k=k: " ".join(s.split()[:k]),
        family="first_k_words",
      )
    )
  for k in (1, 2, 3):
    tasks.append(
      _task(
        f"last_{k}_words",
        [
          f"keep only the last {k} words",
          f"output the final {k} words",
          f"drop everything before the last {k} words",
        ],
        lambda s, k=k: " ".join(s.split()[-k:]),
        family="last_k_words",
      )
    )
  for w in ("apple", "river", "seven", "moon", "stone", "blue"):
    tasks.append(
      _task(
        f"append_{w}",
        [
          f"add the word '{w}' at the end",
          f"append '{w}' to the sentence",
          f"finish the sentence with the word '{w}'",
        ],
        lambda s, w=w: f"{s} {w}",
        family="append_word",
      )
    )
  for w in ("hello", "today", "maybe", "look", "sadly"):
    tasks.append(
      _task(
        f"prepend_{w}",
        [
          f"put the word '{w}' at the start",
          f"prepend '{w}' to the sentence",
          f"begin the sentence with the word '{w}'",
        ],
        lambda s, w=w: f"{w} {s}",
        family="prepend_word",
      )
    )
  for sep, name in (
    ("-", "hyphens"),
    ("_", "underscores"),
    (", ", "commas"),
    (" | ", "bars"),
    ("/", "slashes"),
  ):
    tasks.append(
      _task(
        f"join_{name}",
        [
          f"join the words with {name}",
          f"separate the words by {name}",
          f"replace the spaces between words with {name}",
        ],
        lambda s, sep=sep: sep.join(s.split()),
        family="join_words",
      )
    )
  for left, right, name in (
    ("[", "]", "square brackets"),
    ("(", ")", "parentheses"),
    ('"', '"', "quotes"),
    ("*", "*", "asterisks"),
  ):
    tasks.append(
      _task(
        f"wrap_{name.replace(' ', '_')}",
        [
          f"wrap the text in {name}",
          f"surround the text with {name}",
          f"put {name} around the text",
        ],
        lambda s, l=left, r=right: f"{l}{s}{r}",
        family="wrap",
      )
    )
  for k in (3, 4, 5):
    tasks.append(
      _task(
        f"more_than_{k}_words",
        [
          f"answer yes if the sentence has more than {k} words, else no",
          f"say whether there are over {k} words",
          f"tell if the word count exceeds {k}",
        ],
        lambda s, k=k: _yes_no(len(s.split()) > k),
        family="more_than_k_words",
      )
    )
  return tasks


# Held out from meta-training, two ways. Siblings: unseen members of families whose other members
# are trained on ("add 7" between "add 6" and "add 8"), so they measure interpolation between
# near-copies. Families: whole families with no member in training (singletons are their own
# family), a harder zero-shot test.
HELD_OUT = (
  "add_7",
  "subtract_4",
  "times_5",
  "first_3_words",
  "append_moon",
  "prepend_maybe",
  "join_underscores",
  "more_than_4_words",
)
HELD_OUT_FAMILIES = (
  "last_k_words",
  "wrap",
  "title_case",
  "shortest_word",
  "double",
  "count_vowels",
  "acronym",
)


@dataclasses.dataclass
class Split:
  train: list[Task]
  siblings: list[Task]  # held out; their families are trained on
  families: list[Task]  # held out with their whole family
  # held out siblings whose parameter lies outside the trained range (extrapolation)
  extrapolation: list[Task] = dataclasses.field(default_factory=list)
  suite: list[Task] = dataclasses.field(default_factory=list)  # every task, for the controls
  partners: dict = dataclasses.field(default_factory=dict)  # see other_family_of

  @property
  def held_out(self) -> list[Task]:
    return self.siblings + self.extrapolation + self.families


def split_suite(
  tasks: list[Task], held_out=HELD_OUT, held_out_families=(), extrapolation=()
) -> Split:
  names, families = {t.name for t in tasks}, {t.family for t in tasks}
  missing = (
    sorted(set(held_out) - names)
    + sorted(set(extrapolation) - names)
    + sorted(set(held_out_families) - families)
  )
  if missing:
    raise ValueError(f"held-out task(s) or famil(ies) {missing} are not in the suite")
  in_family = lambda t: t.family in held_out_families
  out = set(held_out) | set(extrapolation)
  return Split(
    train=[t for t in tasks if t.name not in out and not in_family(t)],
    siblings=[t for t in tasks if t.name in held_out and not in_family(t)],
    families=[t for t in tasks if in_family(t)],
    extrapolation=[t for t in tasks if t.name in extrapolation and not in_family(t)],
    suite=list(tasks),
  )


def sibling_of(task: Task, suite: list[Task]) -> Task | None:
  """The control for "does T2L read the parameter": the family member with the nearest other
  parameter (the larger on a tie; add_12 -> add_13), or the next member in suite order when the
  family has no numeric parameters. None for a family of one."""
  family = [t for t in suite if t.family == task.family and t.name != task.name]
  if not family:
    return None
  if isinstance(task.param, int) and all(isinstance(t.param, int) for t in family):
    return min(family, key=lambda t: (abs(t.param - task.param), -t.param))
  order = [t.name for t in suite if t.family == task.family]
  after = order[(order.index(task.name) + 1) % len(order)]
  return next(t for t in family if t.name == after)


def other_family_of(task: Task, suite: list[Task], partners: dict | None = None) -> Task | None:
  """The control for "does T2L read the operation": in the partner family (`partners`: family ->
  family with the same inputs), else the next family in suite order, the task with the same
  parameter (add_12 -> subtract_12), else that family's first."""
  families = list(dict.fromkeys(t.family for t in suite))
  if len(families) < 2:
    return None
  other = (partners or {}).get(task.family)
  if other is None:
    other = families[(families.index(task.family) + 1) % len(families)]
  members = [t for t in suite if t.family == other]
  return next((t for t in members if t.param is not None and t.param == task.param), members[0])


def sample_tasks(tasks: list[Task], n: int, seed: int) -> list[Task]:
  """n tasks drawn without replacement (all of them if n is 0 or too large), in suite order. For a
  task-count sweep, seed s draws nested subsets: the 8 tasks of seed s hold its 4."""
  if not n or n >= len(tasks):
    return list(tasks)
  order = random.Random(f"tasks/{seed}").sample(range(len(tasks)), len(tasks))
  return [tasks[i] for i in sorted(order[:n])]


def load_lol_metadata(task_dir: str) -> dict:
  """Reads a Lots-of-LoRAs / T2L `metadata.yaml` (descriptions, prompt template, response field,
  system message, assistant prefill) and checks the fields T2L needs."""
  path = os.path.join(task_dir, "metadata.yaml")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{task_dir!r} has no metadata.yaml")
  with open(path) as f:
    meta = yaml.safe_load(f)
  missing = [k for k in ("descriptions", "user_prompt_template", "response_field") if k not in meta]
  if missing:
    raise ValueError(f"{path}: missing field(s) {missing}")
  if not meta["descriptions"]:
    raise ValueError(f"{path}: no descriptions")
  return meta
