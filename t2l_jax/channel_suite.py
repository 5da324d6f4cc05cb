"""The description-channel suite: tasks whose prompts do not say which task they are.

Every task of a family takes the same inputs (2-digit integers, or sentences), and the prompt is
only "Please complete the task without any explanation.\\n\\n{input}" under an empty system turn.
So nothing but the description tells add_7 from add_8 or from subtract_7: a multi-task LoRA, which
sees the same prompts, can only learn a family-wide guess, and a T2L adapter beats it only by
reading the description. (The embedded generated suite, `tasks.generated_suite`, is the other
setting: the task's definition in the prompt, as the reference trains.)

Families: add_k and subtract_k for k = 1..30 (27..30 outside the trained range, for
extrapolation), first_k_words and last_k_words for k = 1..8. Each task has 28 training
descriptions and 6 evaluation descriptions from templates that no training description uses:
different verbs and sentence shapes, k as digits and as words.
"""

from __future__ import annotations

import random

from t2l_jax.tasks import WORDS, Task

NUMBER_WORDS = (
  "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
  "fifteen sixteen seventeen eighteen nineteen twenty"
).split()


def number_word(k: int) -> str:
  if k < len(NUMBER_WORDS):
    return NUMBER_WORDS[k]
  tens, ones = divmod(k, 10)
  name = {2: "twenty", 3: "thirty"}[tens]
  return name if not ones else f"{name}-{NUMBER_WORDS[ones]}"


# {k}: the parameter as digits, {kw}: as words, {s}: "s" unless k is 1 (word counts).
TEMPLATES = {
  "add_k": (
    [
      "Add {k} to the number.",
      "Increase the number by {k}.",
      "Give the number plus {k}.",
      "Output the input plus {k}.",
      "Return the sum of the input and {k}.",
      "Compute x + {k} for the given x.",
      "Add {kw} to whatever number you are given.",
      "Your answer is the number increased by {kw}.",
      "Take the number and add {kw}.",
      "What is the number after adding {k}? Answer with it.",
      "Raise the value by {k}.",
      "Write down the input number plus {kw}.",
      "Sum the given integer with {k}.",
      "Count {kw} steps up from the number.",
      "Add the constant {k}.",
      "The result should be {k} more than the input.",
      "Output a number that is {kw} larger than the one given.",
      "Increment the number by {k}.",
      "Plus {k}: apply it to the input.",
      "Find the number that is {k} greater.",
      "Shift the number up by {kw}.",
      "Given an integer n, reply with n + {k}.",
      "Calculate the input plus {kw}.",
      "Make the number bigger by exactly {k}.",
      "Add {kw} (that is, {k}) to the input.",
      "Respond with the total of the number and {kw}.",
      "Go up by {k} from the given value.",
      "Answer with {k} added to the number.",
    ],
    [
      "Please produce the input number with {k} added on.",
      "Tell me what you get when {kw} is added to the number.",
      "Adding {k} to the number gives the answer.",
      "Move {kw} places up the number line.",
      "Return n plus {k}, where n is the input.",
      "A number comes in; add {kw} to it and give the result.",
    ],
  ),
  "subtract_k": (
    [
      "Subtract {k} from the number.",
      "Decrease the number by {k}.",
      "Give the number minus {k}.",
      "Output the input minus {k}.",
      "Return the difference of the input and {k}.",
      "Compute x - {k} for the given x.",
      "Take {kw} away from whatever number you are given.",
      "Your answer is the number reduced by {kw}.",
      "Take the number and subtract {kw}.",
      "What is the number after removing {k}? Answer with it.",
      "Lower the value by {k}.",
      "Write down the input number minus {kw}.",
      "Deduct {k} from the given integer.",
      "Count {kw} steps down from the number.",
      "Subtract the constant {k}.",
      "The result should be {k} less than the input.",
      "Output a number that is {kw} smaller than the one given.",
      "Decrement the number by {k}.",
      "Minus {k}: apply it to the input.",
      "Find the number that is {k} lower.",
      "Shift the number down by {kw}.",
      "Given an integer n, reply with n - {k}.",
      "Calculate the input minus {kw}.",
      "Make the number smaller by exactly {k}.",
      "Subtract {kw} (that is, {k}) from the input.",
      "Respond with the number once {kw} has been taken off.",
      "Go down by {k} from the given value.",
      "Answer with {k} taken from the number.",
    ],
    [
      "Please produce the input number with {k} removed.",
      "Tell me what is left when {kw} is subtracted from the number.",
      "Subtracting {k} from the number gives the answer.",
      "Move {kw} places down the number line.",
      "Return n minus {k}, where n is the input.",
      "A number comes in; take {kw} off it and give the result.",
    ],
  ),
  "first_k_words": (
    [
      "Keep only the first {k} word{s}.",
      "Output the first {k} word{s} of the sentence.",
      "Drop everything after word {k}.",
      "Return the opening {kw} word{s}.",
      "Write the sentence's first {kw} word{s} and nothing else.",
      "Give the leading {k} word{s}.",
      "Truncate the text after its first {k} word{s}.",
      "Copy the first {kw} word{s} of the input.",
      "Only the beginning {k} word{s} should remain.",
      "Cut the sentence down to its first {kw} word{s}.",
      "Print the initial {k} word{s}.",
      "From the start of the text, take {kw} word{s}.",
      "Answer with the first {k} word{s}.",
      "Retain words 1 to {k} and delete the rest.",
      "Select the first {kw} word{s} from the sentence.",
      "Shorten the input to {k} word{s}, starting from the front.",
      "Your output is the input's first {kw} word{s}.",
      "Take {k} word{s} from the beginning.",
      "Remove every word after position {k}.",
      "Reply with the sentence's opening {k} word{s}.",
      "Show just the first {kw} word{s}.",
      "Return the prefix of {k} word{s}.",
      "Extract the first {k} word{s} of the text.",
      "Give back the first {kw} word{s}, in order.",
      "Keep {kw} word{s} from the start and drop the others.",
      "List the first {k} word{s} of the input sentence.",
      "The answer is the first {kw} word{s}.",
      "Write down the sentence's first {k} word{s}.",
    ],
    [
      "Please reproduce only the sentence's {kw} earliest word{s}.",
      "Output the word{s} in the first {k} position{s}.",
      "Leave the first {k} word{s} in place and erase the remainder.",
      "Starting at the front, output {kw} word{s}.",
      "Return the words up to and including word number {k}.",
      "A sentence comes in; give its first {kw} word{s}.",
    ],
  ),
  "last_k_words": (
    [
      "Keep only the last {k} word{s}.",
      "Output the last {k} word{s} of the sentence.",
      "Drop everything before the last {k} word{s}.",
      "Return the closing {kw} word{s}.",
      "Write the sentence's last {kw} word{s} and nothing else.",
      "Give the trailing {k} word{s}.",
      "Remove all but the final {k} word{s}.",
      "Copy the last {kw} word{s} of the input.",
      "Only the ending {k} word{s} should remain.",
      "Cut the sentence down to its last {kw} word{s}.",
      "Print the final {k} word{s}.",
      "From the end of the text, take {kw} word{s}.",
      "Answer with the last {k} word{s}.",
      "Retain only the final {k} word{s} and delete the rest.",
      "Select the last {kw} word{s} from the sentence.",
      "Shorten the input to {k} word{s}, keeping the end.",
      "Your output is the input's last {kw} word{s}.",
      "Take {k} word{s} from the end.",
      "Delete every word except the {k} at the end.",
      "Reply with the sentence's closing {k} word{s}.",
      "Show just the last {kw} word{s}.",
      "Return the suffix of {k} word{s}.",
      "Extract the last {k} word{s} of the text.",
      "Give back the last {kw} word{s}, in order.",
      "Keep {kw} word{s} from the end and drop the others.",
      "List the last {k} word{s} of the input sentence.",
      "The answer is the last {kw} word{s}.",
      "Write down the sentence's final {k} word{s}.",
    ],
    [
      "Please reproduce only the sentence's {kw} latest word{s}.",
      "Output the word{s} in the last {k} position{s}.",
      "Leave the last {k} word{s} in place and erase the remainder.",
      "Starting at the back, keep {kw} word{s}, in their order.",
      "Return the words after all but {k} of them.",
      "A sentence comes in; give its final {kw} word{s}.",
    ],
  ),
}
TRAIN_DESCRIPTIONS = 28  # per task; the 6 after them come from templates training never uses

ADD_SUB_K = range(1, 31)
WORD_K = range(1, 9)
# Held out from meta-training. In range: siblings between trained values of k. Extrapolation:
# siblings past the largest trained k (26).
HELD_OUT = (
  "add_5",
  "add_12",
  "add_19",
  "add_23",
  "subtract_8",
  "subtract_17",
  "first_3_words",
  "first_6_words",
  "last_4_words",
  "last_7_words",
)
EXTRAPOLATION = tuple(f"{op}_{k}" for op in ("add", "subtract") for k in range(27, 31))
# The family whose task of the same k is the "another family's description" control: same inputs,
# other operation.
PARTNERS = {
  "add_k": "subtract_k",
  "subtract_k": "add_k",
  "first_k_words": "last_k_words",
  "last_k_words": "first_k_words",
}


def _number(rng: random.Random) -> str:
  return str(rng.randint(10, 99))


def _sentence(rng: random.Random) -> str:
  return " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 12)))


def _descriptions(family: str, k: int) -> tuple[str, ...]:
  train, held_out = TEMPLATES[family]
  fill = dict(k=k, kw=number_word(k), s="" if k == 1 else "s")
  return tuple(t.format(**fill) for t in train + held_out)


def _task(family: str, name: str, k: int, inputs, answer) -> Task:
  def make(rng):
    x = inputs(rng)
    return x, answer(x)

  descriptions = _descriptions(family, k)
  return Task(
    name, descriptions[0], descriptions, make, family, param=k, definition_in_prompt=False
  )


def channel_suite() -> list[Task]:
  """add_k, subtract_k (k = 1..30) on 2-digit integers; first_k_words and last_k_words
  (k = 1..8) on sentences of 10 to 12 words."""
  tasks = []
  for k in ADD_SUB_K:
    tasks.append(_task("add_k", f"add_{k}", k, _number, lambda x, k=k: str(int(x) + k)))
  for k in ADD_SUB_K:
    tasks.append(_task("subtract_k", f"subtract_{k}", k, _number, lambda x, k=k: str(int(x) - k)))
  for k in WORD_K:
    tasks.append(
      _task(
        "first_k_words", f"first_{k}_words", k, _sentence, lambda x, k=k: " ".join(x.split()[:k])
      )
    )
  for k in WORD_K:
    tasks.append(
      _task(
        "last_k_words", f"last_{k}_words", k, _sentence, lambda x, k=k: " ".join(x.split()[-k:])
      )
    )
  return tasks
