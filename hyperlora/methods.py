"""The registry of methods: the one table through which the core reaches a method's package.

A method is a package that turns text into adapters (T2L: a task description, D2L: a document).
Every config names its method (`config.method`, set by the method's `base_config()`), and every
run records it, so the core never guesses a method from which keys a config happens to have. What
a package provides, by module (docs/design.md, "Methods: what the core asks of one"):

  config.base_config()   every field with its default: run configs are merged onto it when loaded
  plan.PROGRAMS          name -> builder(config) of the programs `hyperlora plan` compiles
  cli.main(argv)         its command (`t2l ...`, `d2l ...`)

and, under the same names in both packages: data.batch_spec (a batch's abstract arrays, shared by
the batch builder and the planner), train.training_batches, train.RESUME_KEYS / FREE_KEYS.

The core imports a package only through `Method.module`, so importing the core never imports a
method, and adding a third method is one package and one row of METHODS.
"""

from __future__ import annotations

import dataclasses
import importlib

import ml_collections


@dataclasses.dataclass(frozen=True)
class Method:
  name: str  # what runs record and configs name: 't2l'
  title: str  # 'Text-to-LoRA'
  package: str  # 't2l_jax'

  def module(self, name: str):
    return importlib.import_module(f"{self.package}.{name}")

  def base_config(self) -> ml_collections.ConfigDict:
    return self.module("config").base_config()

  def programs(self) -> dict:
    return self.module("plan").PROGRAMS

  def describe(self) -> str:
    return f"{self.title} (`{self.name} train`)"


METHODS = {
  m.name: m
  for m in (Method("t2l", "Text-to-LoRA", "t2l_jax"), Method("d2l", "Doc-to-LoRA", "d2l_jax"))
}


def get(name: str) -> Method:
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; the methods are {', '.join(METHODS)}")
  return METHODS[name]


def of_config(config) -> Method:
  """The method a config names (config.method)."""
  if "method" not in config:
    raise ValueError(
      "the config names no method (config.method); build it from t2l_jax.config.base_config() "
      "or d2l_jax.config.base_config()"
    )
  return get(config.method)


def merged(method: Method, saved: dict) -> ml_collections.ConfigDict:
  """A config read back from a run, merged onto the method's defaults: a field the code added
  since the run was saved reads its default, so readers never repeat defaults."""
  config = method.base_config()
  try:
    config.update(saved)
  except (TypeError, ValueError) as err:
    raise ValueError(
      f"the run's saved config does not fit this code's {method.title} config ({err})"
    ) from err
  return config
