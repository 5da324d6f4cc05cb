"""Supervised batches for T2L: n tasks x m examples, a random description per example.

Tasks are anything with `.name` and `.sample(seed) -> Example` (the generated suite, or
Lots-of-LoRAs tasks read through tensorflow-datasets).

A batch is a pure function of (seed, step), so the iterator's whole state is the step number and a
resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import numpy as np

from t2l_jax.tasks import Example


def _messages(example: Example) -> list[dict]:
  return ([{"role": "system", "content": example.system}] if example.system else []) + [
      {"role": "user", "content": example.prompt}]


def prompt_ids(tokenizer, example: Example) -> list[int]:
  """Token ids of the chat-formatted prompt, up to where the model starts answering."""
  text = tokenizer.apply_chat_template(_messages(example), add_generation_prompt=True, tokenize=False)
  return tokenizer(text + example.prefill, add_special_tokens=False)["input_ids"]


def encode_example(tokenizer, example: Example, max_len: int) -> tuple[list[int], list[int]]:
  """Chat-formatted prompt + target + end of turn -> (token ids, loss mask on the answer)."""
  full_text = tokenizer.apply_chat_template(
      _messages(example) + [{"role": "assistant", "content": example.prefill + example.target}],
      tokenize=False)
  prompt = prompt_ids(tokenizer, example)
  full_ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
  if full_ids[:len(prompt)] != prompt:
    raise ValueError("the chat template does not extend the prompt with the answer; "
                     "is this tokenizer's template a chat template?")
  answer_ids = full_ids[len(prompt):]
  answer_ids = answer_ids[:_end_of_answer(tokenizer, answer_ids)]
  if len(answer_ids) >= max_len:
    raise ValueError(f"answer of {len(answer_ids)} tokens does not fit max_len={max_len}")
  prompt = prompt[-(max_len - len(answer_ids)):]  # Keep the end of a long prompt.
  return prompt + answer_ids, [0] * len(prompt) + [1] * len(answer_ids)


def _end_of_answer(tokenizer, answer_ids: list[int]) -> int:
  """Length of the answer up to and including its end-of-turn token (drops the template's tail)."""
  end_ids = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")}
  for i, token in enumerate(answer_ids):
    if token in end_ids:
      return i + 1
  return len(answer_ids)


def pad_batch(rows: list[tuple[list[int], list[int]]], max_len: int, pad_id: int,
              max_answer: int = 16) -> dict:
  """Right-padded tokens [batch, max_len] plus the answer targets [batch, max_answer]: token
  target_ids[i, j] is predicted at position target_index[i, j] (where target_mask is 1)."""
  n = len(rows)
  tokens = np.full((n, max_len), pad_id, np.int32)
  attention_mask = np.zeros((n, max_len), bool)
  target_index = np.zeros((n, max_answer), np.int32)
  target_ids = np.zeros((n, max_answer), np.int32)
  target_mask = np.zeros((n, max_answer), np.float32)
  for i, (ids, mask) in enumerate(rows):
    tokens[i, :len(ids)], attention_mask[i, :len(ids)] = ids, True
    answer = [p for p, m in enumerate(mask) if m]
    if len(answer) > max_answer:
      raise ValueError(f"answer of {len(answer)} tokens exceeds max_answer={max_answer}")
    target_index[i, :len(answer)] = np.asarray(answer) - 1
    target_ids[i, :len(answer)] = [ids[p] for p in answer]
    target_mask[i, :len(answer)] = 1.0
  return {"tokens": tokens, "attention_mask": attention_mask, "target_index": target_index,
          "target_ids": target_ids, "target_mask": target_mask}


class SFTBatches:
  """Batches of `tasks_per_batch` tasks x `examples_per_task` examples with task embeddings."""

  def __init__(self, tasks: list, embeddings: dict[str, np.ndarray], tokenizer, *,
               tasks_per_batch: int, examples_per_task: int, max_len: int, seed: int,
               max_answer: int = 16, process_index: int = 0, process_count: int = 1):
    if tasks_per_batch > len(tasks):
      raise ValueError(f"tasks_per_batch={tasks_per_batch} exceeds the {len(tasks)} training tasks")
    self.tasks, self.embeddings, self.tokenizer = tasks, embeddings, tokenizer
    self.tasks_per_batch, self.examples_per_task = tasks_per_batch, examples_per_task
    self.max_len, self.seed, self.max_answer = max_len, seed, max_answer
    if self.batch_size % process_count:
      raise ValueError(f"global batch {self.batch_size} does not split over {process_count} processes")
    self.process_index, self.process_count = process_index, process_count

  @property
  def batch_size(self) -> int:
    return self.tasks_per_batch * self.examples_per_task

  def __call__(self, step: int) -> dict:
    """This process's rows of the global batch of `step` (all of it with one process)."""
    rng = np.random.default_rng([self.seed, step])
    plan = []  # The global batch as (task, example seed, description): cheap, same in every process.
    for task_index in rng.choice(len(self.tasks), self.tasks_per_batch, replace=False):
      for example_seed in rng.integers(0, 2**31, self.examples_per_task):
        n_descriptions = len(self.embeddings[self.tasks[task_index].name])
        plan.append((int(task_index), int(example_seed), int(rng.integers(n_descriptions))))
    per_process = self.batch_size // self.process_count
    rows, task_emb, task_ids = [], [], []
    for task_index, example_seed, description in plan[self.process_index * per_process:][:per_process]:
      task = self.tasks[task_index]  # Only this process's rows pay for tokenisation.
      rows.append(encode_example(self.tokenizer, task.sample(example_seed), self.max_len))
      task_emb.append(self.embeddings[task.name][description])
      task_ids.append(task_index)
    batch = pad_batch(rows, self.max_len, self.tokenizer.pad_token_id or 0, self.max_answer)
    batch["task_emb"] = np.stack(task_emb).astype(np.float32)
    batch["task_id"] = np.asarray(task_ids, np.int32)
    return batch
