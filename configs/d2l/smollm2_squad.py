"""D2L for SmolLM2-135M-Instruct on SQuAD paragraphs: the reference's main setting (the teacher,
the same model with the paragraph in context, answers each question greedily; the student distils
its top-16 log-probs on that answer, without the paragraph).

The file is SQuAD-format JSON; its articles are split by title, never one on both sides: the last
8 (by title) are held out whole, the rest train. With the 40-article dev sample in
../shared/reference-data/squad (the default below), that is 32 training articles (1,344
paragraphs) and 8 held out (Steam_engine ... Warsaw, 380 paragraphs). Point it at any other file:

  d2l train --config configs/d2l/smollm2_squad.py --config.data.squad_file=/data/squad/train.json
  d2l eval --checkpoint runs/d2l_smollm2_squad --out runs/d2l_smollm2_squad/eval.json
  # the curriculum that worked for biographies: start from a NIAH or biography run
  d2l train --config configs/d2l/smollm2_squad.py --config.train.init_from=runs/d2l_smollm2_bios

Gold answers with cross-entropy instead: --config.data.responses=gold --config.train.loss=ce.
The teacher's answers are computed once per training question and cached in the workdir (not
yet measured on 2 CPU cores: an estimate from the eval's generation speed is about an hour for
all 32 articles' questions; --config.data.train_documents=N takes the first N paragraphs).
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
    train_documents=0,
    niah_documents=0,
    queries_per_doc=2,
    max_doc_len=384,
    max_len=64,
    max_teacher_len=448,
    max_answer=16,
    responses="teacher",
  )
  c.train.update(steps=1000, loss="distill", chunk_counts=(1,), chunk_probs=(1.0,), ckpt_every=250)
  c.eval.update(documents=24, train_documents=8, chunk_len=384, max_new_tokens=16, cd_documents=2)
  return c
