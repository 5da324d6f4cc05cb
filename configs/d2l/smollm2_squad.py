"""D2L for SmolLM2-135M-Instruct on SQuAD paragraphs, CPU.

The file is SQuAD-format JSON; its articles are split by title, never one on both sides: the last
8 (by title) are held out whole, the rest train, each side interleaved over its articles. With the
40-article dev sample in ../shared/reference-data/squad (the default below), that is 32 training
articles (1,344 paragraphs) and 8 held out (Steam_engine ... Warsaw, 380 paragraphs); this config
trains on 300 paragraphs spread over all 32 (the 3 longer than max_doc_len are skipped).

Default: the gold answers with cross-entropy (no teacher pass). The reference's main setting, the
teacher (the same model with the paragraph in context) answering each question greedily and the
student distilling its top-16 log-probs, is two flags:
--config.data.responses=teacher --config.train.loss=distill; its answers are generated once per
training question and cached in the workdir, about 40 s per 16 questions on 2 shared CPU cores
(over an hour for these 300 paragraphs' 1,689 questions, which is why it is not the default here).

  d2l train --config configs/d2l/smollm2_squad.py
  d2l eval --checkpoint runs/d2l_smollm2_squad --no-niah --out runs/d2l_smollm2_squad/eval.json
  d2l train --config configs/d2l/smollm2_squad.py --config.data.squad_file=/data/squad/train.json
  # the curriculum that worked for biographies: start from a NIAH or biography run
  d2l train --config configs/d2l/smollm2_squad.py --config.train.init_from=runs/d2l_smollm2_bios
"""

import os

from hyperlora.cli_config import load_config_file

SQUAD_DEV_SAMPLE = os.path.join(
  os.path.dirname(__file__),
  "..",
  "..",
  "..",
  "shared",
  "reference-data",
  "squad",
  "squad-v1.1-dev-40.json",
)


def get_config():
  c = load_config_file(os.path.join(os.path.dirname(__file__), "smollm2_synthetic.py"))
  c.workdir = "runs/d2l_smollm2_squad"
  c.data.update(
    corpus="squad",
    squad_file=os.path.normpath(SQUAD_DEV_SAMPLE),
    squad_held_out_articles=8,
    train_documents=300,
    niah_documents=0,
    queries_per_doc=2,
    max_doc_len=384,
    # SQuAD's gold answers run to 50+ tokens: gold training keeps the questions whose shortest
    # gold answer fits 28 tokens (all but 1 of the 300 paragraphs' 1,709 questions).
    max_len=80,
    max_teacher_len=448,
    max_answer=32,
    responses="gold",
  )
  c.train.update(steps=500, loss="ce", chunk_counts=(1,), chunk_probs=(1.0,), ckpt_every=125)
  c.eval.update(documents=24, train_documents=8, chunk_len=384, max_new_tokens=16, cd_documents=2)
  return c
