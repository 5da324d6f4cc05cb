"""The Text-to-LoRA hypernetwork (L, M and S variants) in Flax Linen.

One trunk runs for every (layer, module) pair of the base model, batched:

  z = concat(LN(W_task e), LN(E_depth[l]), LN(E_module[m]))        # [tasks, L, M, h]
  z = mixer(z); z = mlp1(z)                          # mlp1, mlp2: residual, x + f(x)
  L: z = mlp2(z)
  M: z = mlp2(z + LN(E_ab[m, A|B]))                  # which output to make
  S: z = mlp2(z + LN(E_ab[m, A|B])) + mlp2(LN(E_rank[j]))   # and which rank (mlp2 runs again)
  z = mlp3(z)                                                       # [..., head_in]
  L: [A; B] = head_m(z)   M: A or B = head_m(z)[:r*d]   S: one rank row/column = head_m(z)

Initialisation as the reference's SFT (bias hyper-init, head weights zero, so the first adapters
are the head biases). L: bias = [kaiming-uniform A, zero B], so step 0 is the base model. M and S
make A and B with one head, so B starts non-zero, from the same bias: kaiming-uniform A / sqrt(2)
(M), and its first row / sqrt(2) / sqrt(r) (S).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from hyperlora.lora import LoRA, rslora_scale
from hyperlora.models.config import ModelConfig

VARIANTS = ("L", "M", "S")


@dataclasses.dataclass(frozen=True)
class HyperSpec:
  """What the hypernetwork generates (from the base model) and how wide it is."""

  variant: str
  modules: tuple[str, ...]
  dims: tuple[tuple[int, int], ...]  # (d_in, d_out) per module
  num_layers: int
  rank: int = 8
  lora_alpha: float = 16.0
  latent: int = 128  # h
  head_in: int = 512
  dropout: float = 0.05

  def __post_init__(self):
    if self.variant not in VARIANTS:
      raise ValueError(f"unknown hypernetwork variant {self.variant!r}; choose from {VARIANTS}")
    if not self.modules:
      raise ValueError("the hypernetwork needs at least one target module")

  @classmethod
  def for_model(cls, config: ModelConfig, variant: str, modules, **kwargs) -> "HyperSpec":
    modules = tuple(modules)
    dims = tuple(config.projection_dims(m) for m in modules)  # Raises on unknown modules.
    return cls(variant=variant, modules=modules, dims=dims, num_layers=config.num_layers, **kwargs)

  @property
  def scale(self) -> float:
    return rslora_scale(self.lora_alpha, self.rank)  # rsLoRA, as the reference trains


class FeedForward(nn.Module):
  """[LN], Linear(h, 4h), SiLU, Dropout, Linear(4h, out), SiLU, [Dropout]."""

  out: int
  dropout: float
  pre_norm: bool
  final_dropout: bool = True

  @nn.compact
  def __call__(self, x, deterministic):
    if self.pre_norm:
      x = nn.LayerNorm()(x)
    x = nn.silu(nn.Dense(4 * x.shape[-1])(x))
    x = nn.Dropout(self.dropout)(x, deterministic)
    x = nn.silu(nn.Dense(self.out)(x))
    return nn.Dropout(self.dropout)(x, deterministic) if self.final_dropout else x


def _kaiming_bias(d_in, shrink=1.0):
  bound = shrink / math.sqrt(d_in)  # PEFT's default A init (kaiming-uniform, a=sqrt(5))
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


# The heads hold nearly all parameters; they carry logical axis names so a mesh can shard them.
_head_kernel_init = nn.with_logical_partitioning(nn.initializers.zeros, ("hyper_in", "hyper_out"))


def _head_bias(init):
  return nn.with_logical_partitioning(init, ("hyper_out",))


class T2LHypernet(nn.Module):
  spec: HyperSpec

  @nn.compact
  def __call__(self, task_emb: jax.Array, deterministic: bool = True) -> LoRA:
    """task_emb [tasks, d_emb] -> a batched LoRA (one adapter per task)."""
    s = self.spec
    h, n_mod, n_tasks = s.latent, len(s.modules), task_emb.shape[0]
    task = nn.LayerNorm()(nn.Dense(h // 2, name="task_proj")(task_emb))  # [tasks, h/2]
    depth = nn.LayerNorm()(
      nn.Embed(s.num_layers, h // 4, name="depth_emb")(jnp.arange(s.num_layers))
    )
    module = nn.LayerNorm()(nn.Embed(n_mod, h // 4, name="module_emb")(jnp.arange(n_mod)))
    z = jnp.concatenate(
      [
        jnp.broadcast_to(task[:, None, None], (n_tasks, s.num_layers, n_mod, h // 2)),
        jnp.broadcast_to(depth[None, :, None], (n_tasks, s.num_layers, n_mod, h // 4)),
        jnp.broadcast_to(module[None, None], (n_tasks, s.num_layers, n_mod, h // 4)),
      ],
      axis=-1,
    )  # [tasks, L, M, h]
    z = nn.Dropout(s.dropout)(z, deterministic)
    z = FeedForward(h, s.dropout, pre_norm=False, name="mixer")(z, deterministic)
    z = z + FeedForward(h, s.dropout, pre_norm=True, name="mlp1")(z, deterministic)

    mlp2_block = FeedForward(h, s.dropout, pre_norm=True, name="mlp2")
    mlp2 = lambda x: x + mlp2_block(x, deterministic)
    if s.variant != "L":
      which = nn.LayerNorm()(self.param("ab_emb", nn.initializers.normal(1.0), (n_mod, 2, h)))
      z = z[:, :, :, None] + which  # [tasks, L, M, 2 (A|B), h]
    z = mlp2(z)
    if s.variant == "S":
      rank_emb = nn.LayerNorm()(nn.Embed(s.rank, h, name="rank_emb")(jnp.arange(s.rank)))
      z = z[..., None, :] + mlp2(rank_emb)  # [tasks, L, M, 2, r, h]
    z = FeedForward(s.head_in, s.dropout, pre_norm=True, final_dropout=False, name="mlp3")(
      z, deterministic
    )

    weights = {}
    for m, (module_name, (d_in, d_out)) in enumerate(zip(s.modules, s.dims)):
      weights[module_name] = self._head(module_name, z[:, :, m], d_in, d_out)
    return LoRA(weights, s.scale)

  def _head(self, name, z, d_in, d_out):
    """Trunk features of one module -> {"A": [tasks, L, r, d_in], "B": [tasks, L, d_out, r]}."""
    s, r = self.spec, self.spec.rank
    if s.variant == "L":
      bias_a = _kaiming_bias(d_in)
      init = lambda key, shape, dtype=jnp.float32: jnp.concatenate(
        [bias_a(key, (r * d_in,), dtype), jnp.zeros((r * d_out,), dtype)]
      )
      out = nn.Dense(
        r * (d_in + d_out),
        kernel_init=_head_kernel_init,
        bias_init=_head_bias(init),
        name=f"head_{name}",
      )(z)  # [tasks, L, r (d_in + d_out)]
      a = out[..., : r * d_in].reshape(*out.shape[:-1], r, d_in)
      b = out[..., r * d_in :].reshape(*out.shape[:-1], d_out, r)
      return {"A": a, "B": b}
    width = max(d_in, d_out)
    # The reference scales its shared head's bias to match the gradient scale of L's.
    shrink = 1 / math.sqrt(2) / (math.sqrt(r) if s.variant == "S" else 1)
    head = nn.Dense(
      width * (r if s.variant == "M" else 1),
      kernel_init=_head_kernel_init,
      bias_init=_head_bias(_kaiming_bias(d_in, shrink)),
      name=f"head_{name}",
    )
    out = head(z)  # M: [tasks, L, 2, r * width]; S: [tasks, L, 2, r, width]
    rows = out.reshape(*out.shape[:3], r, width)  # [tasks, L, 2, r, width]
    a = rows[:, :, 0, :, :d_in]
    b = jnp.swapaxes(rows[:, :, 1, :, :d_out], -1, -2)
    return {"A": a, "B": b}


def count_params(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))


def init_params_boxed(spec: HyperSpec, embed_dim: int, rng: jax.Array):
  """Params with their logical-axis boxes (for sharded initialisation)."""
  return T2LHypernet(spec).init(rng, jnp.zeros((1, embed_dim)))["params"]


def init_params(spec: HyperSpec, embed_dim: int, rng: jax.Array):
  return nn.unbox(init_params_boxed(spec, embed_dim, rng))
