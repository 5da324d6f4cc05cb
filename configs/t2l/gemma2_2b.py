"""T2L-L for Gemma-2-2b-it: the Mistral-7B reference recipe (configs/t2l/mistral7b.py) with the
reference's larger trunk for this model (h = 512, head_in = 2048).

  hyperlora plan --config=configs/t2l/gemma2_2b.py --target=v5e:2x4 --mesh=auto
On v5e-8 all 10 meshes fit; auto picks data 4 x tensor 2 (the mesh below): peak 3.9 of 16 GB per
chip, all-reduce 1.7 GB a step, estimated 33 ms a step (55 with no overlap), MFU 68% (an upper
estimate: peak FLOP/s and perfect overlap).
  t2l train --config configs/t2l/gemma2_2b.py --config.base_model=/ckpt/gemma-2-2b-it \\
      --config.data.tasks_dir=/data/lol --config.encoder.path=/ckpt/gte-large-en-v1.5
"""

import os

from hyperlora.cli_config import load_config_file


def get_config():
  c = load_config_file(os.path.join(os.path.dirname(__file__), "mistral7b.py"))
  c.base_model = "shapes:gemma-2-2b-it"  # a local HF directory to train
  c.workdir = "runs/t2l_gemma2_2b"
  c.hypernet.update(latent=512, head_in=2048)
  c.mesh.update(data=4, fsdp=1, tensor=2)  # `hyperlora plan --mesh=auto`'s pick on v5e-8
  return c
