"""Supervised batches for T2L: n tasks x m examples, a random description per example.

Tasks are anything with `.name` and `.sample(seed) -> Example` (the generated suite, or
Lots-of-LoRAs tasks read through tensorflow-datasets).

A batch is a pure function of (seed, step), so the iterator's whole state is the step number and a
resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hyperlora import sft


def batch_spec(rows: int, max_len: int, max_answer: int, embed_dim: int) -> dict:
  """A T2L batch's arrays as abstract shapes: what `SFTBatches` fills and `hyperlora plan`
  compiles for."""
  return {
    **sft.batch_spec(rows, max_len, max_answer),
    "task_emb": jax.ShapeDtypeStruct((rows, embed_dim), jnp.float32),  # [batch, embed]
    "task_id": jax.ShapeDtypeStruct((rows,), jnp.int32),  # [batch]
  }


class SFTBatches:
  """Batches of `tasks_per_batch` tasks x `examples_per_task` examples with task embeddings."""

  def __init__(
    self,
    tasks: list,
    embeddings: dict[str, np.ndarray],
    tokenizer,
    *,
    tasks_per_batch: int,
    examples_per_task: int,
    max_len: int,
    seed: int,
    max_answer: int = 16,
    process_index: int = 0,
    process_count: int = 1,
    describe: bool = False,
  ):
    """describe: also put each example's description in its prompt (the multi-task LoRA that
    reads the task as text; the batches are otherwise the same, draw for draw)."""
    self.tasks, self.embeddings, self.tokenizer = tasks, embeddings, tokenizer
    self.describe = describe
    self.tasks_per_batch, self.examples_per_task = tasks_per_batch, examples_per_task
    self.max_len, self.seed, self.max_answer = max_len, seed, max_answer
    if self.batch_size % process_count:
      raise ValueError(
        f"global batch {self.batch_size} does not split over {process_count} processes"
      )
    self.process_index, self.process_count = process_index, process_count

  @property
  def batch_size(self) -> int:
    return self.tasks_per_batch * self.examples_per_task

  def __call__(self, step: int) -> dict:
    """This process's rows of the global batch of `step` (all of it with one process)."""
    rng = np.random.default_rng([self.seed, step])
    # The global batch as (task, example seed, description): cheap, the same in every process.
    plan = []
    # Fewer training tasks than tasks_per_batch (a task-count sweep's small counts) repeat tasks
    # within a batch, so every count trains on the same steps x batch.
    replace = self.tasks_per_batch > len(self.tasks)
    for task_index in rng.choice(len(self.tasks), self.tasks_per_batch, replace=replace):
      for example_seed in rng.integers(0, 2**31, self.examples_per_task):
        n_descriptions = len(self.embeddings[self.tasks[task_index].name])
        plan.append((int(task_index), int(example_seed), int(rng.integers(n_descriptions))))
    per_process = self.batch_size // self.process_count
    rows, task_emb, task_ids = [], [], []
    for task_index, example_seed, description in plan[self.process_index * per_process :][
      :per_process
    ]:
      task = self.tasks[task_index]  # Only this process's rows pay for tokenisation.
      # Only the suites' own tasks can put a description in their prompt (Lots-of-LoRAs tasks
      # keep their own prompt template).
      example = (
        task.sample(example_seed, task.descriptions[description])
        if self.describe
        else task.sample(example_seed)
      )
      rows.append(sft.encode_example(self.tokenizer, example, self.max_len))
      task_emb.append(self.embeddings[task.name][description])
      task_ids.append(task_index)
    spec = batch_spec(len(rows), self.max_len, self.max_answer, len(task_emb[0]))
    batch = sft.pad_batch(rows, self.max_len, self.tokenizer.pad_token_id or 0, self.max_answer)
    batch["task_emb"] = np.asarray(task_emb, spec["task_emb"].dtype)
    batch["task_id"] = np.asarray(task_ids, spec["task_id"].dtype)
    return batch
