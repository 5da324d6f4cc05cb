"""T2L-L for Llama-3.1-8B-Instruct: the Mistral-7B reference recipe (configs/t2l/mistral7b.py) with
the reference's larger trunk for this model (h = 512, head_in = 2048).

  hyperlora plan --config=configs/t2l/llama31_8b.py --target=v5e:4x4 --mesh=4,1,4
On v5e-16 (the Mistral config's mesh, data 4 x tensor 4): fits, peak 5.3 of 16 GB per chip,
all-reduce 4.0 GB a step, estimated 56 ms a step (94 with no overlap), MFU 67% (an upper estimate).
  t2l train --config configs/t2l/llama31_8b.py --config.base_model=/ckpt/Llama-3.1-8B-Instruct \\
      --config.data.tasks_dir=/data/lol --config.encoder.path=/ckpt/gte-large-en-v1.5
"""

import os

from hyperlora.cli_config import load_config_file


def get_config():
  c = load_config_file(os.path.join(os.path.dirname(__file__), "mistral7b.py"))
  c.base_model = "shapes:llama-3.1-8b-instruct"  # a local HF directory to train
  c.workdir = "runs/t2l_llama31_8b"
  c.hypernet.update(latent=512, head_in=2048)
  return c
