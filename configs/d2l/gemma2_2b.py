"""D2L at the reference's sizes for Gemma-2-2b-it, for accelerator runs (TPU pod / GPU cluster).

The reference's main setting: features of every layer but the last (26 maps of 2304), one Perceiver
shared across layers (latent 512, 8 latents, 9 cross-attention blocks, 16 heads of 128, 4 KV heads),
LoRA r = 8 on down_proj in all 26 layers, alpha = 2 r^1.5; documents in K ~ {1: .5, 2: .125, 3..8:
.0625} chunks of 25..512 tokens in training and 8192-token chunks in evaluation; the teacher's own
greedy answers distilled from its top-16, L1 0.1 on the generated factors, AdamW 4e-5 with cosine
decay and NEFTune alpha 5. The Perceiver's parameters carry logical axis names (`hyper_latent` ->
fsdp, `hyper_mlp` / `hyper_heads` -> tensor), so an fsdp mesh shards them.

  d2l train --config configs/d2l/gemma2_2b.py --config.base_model=/path/to/gemma-2-2b-it \\
      --config.data.corpus=squad --config.data.squad_file=/path/to/train-v1.1.json

Its plans on v5e-8 (`hyperlora plan --config=configs/d2l/gemma2_2b.py --target=v5e:2x4
--mesh=auto --program=train|internalize`; estimates from the compiler and public peak figures,
docs/scale_out.md), which set this config's mesh:
- train step (8 documents of up to 2,048 tokens in one chunk x 2 questions): all 10 meshes fit;
  auto picks 4x1x2 (data 4, tensor 2): 8.1 of 16 GB per chip, compute-bound, estimated 198 ms a
  step (255 ms with no overlap). The fsdp=8 mesh this config had is the worst of the 10 (226 ms,
  436 with no overlap: 31.8 GB of all-gathers a step).
- internalisation of 8 documents x one 8,192-token chunk: 9 of the 10 meshes fit; auto picks
  8x1x1 (one document per chip), 13.7 GB, estimated 346 ms (372 ms with no overlap).
"""

from d2l_jax.config import base_config


def get_config():
  c = base_config()
  c.base_model = "shapes:gemma-2-2b-it"  # a local HF directory of google/gemma-2-2b-it to train
  c.workdir = "runs/d2l_gemma2_2b"
  c.dtype = "bfloat16"
  c.features = "all_but_last"
  c.hypernet.update(
    modules=("down_proj",),
    rank=8,
    shared_perceiver=True,
    latent=512,
    n_latents=8,
    num_blocks=9,
    heads=16,
    kv_heads=4,
    head_dim=128,
  )
  c.data.update(
    docs_per_batch=8,
    queries_per_doc=2,
    max_doc_len=2048,
    max_len=512,
    max_teacher_len=2560,
    max_answer=64,
    responses="teacher",
    top_k=16,
  )
  c.train.update(
    steps=20000,
    lr=4e-5,
    warmup_frac=0.005,
    schedule="cosine",
    loss="distill",
    l1_coef=0.1,
    neftune_alpha=5.0,
    min_chunk_len=25,
    remat=True,
    ckpt_every=500,
  )
  c.mesh.update(data=-1, fsdp=1, tensor=2)  # `hyperlora plan --mesh=auto`'s pick on v5e-8
  c.eval.update(chunk_len=8192, niah_chunk_len=1024)
  return c
