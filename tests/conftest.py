"""Shared fixtures: tiny random Hugging Face models built from configs (no downloads)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np
import pytest

VOCAB = 384
TINY = dict(
  vocab_size=VOCAB,
  hidden_size=64,
  intermediate_size=96,
  num_hidden_layers=3,
  num_attention_heads=4,
  num_key_value_heads=2,
  max_position_embeddings=256,
)

# One tiny config per supported family; each exercises that family's special features.
FAMILY_CONFIGS = {
  "llama": dict(
    rope_scaling={
      "rope_type": "llama3",
      "factor": 8.0,
      "low_freq_factor": 1.0,
      "high_freq_factor": 4.0,
      "original_max_position_embeddings": 16,
    }
  ),
  "mistral": dict(sliding_window=8, head_dim=16),
  "qwen2": dict(),  # q/k/v biases
  "qwen3": dict(head_dim=32),  # q/k norms, head_dim != hidden / heads
  "gemma2": dict(
    head_dim=16,
    sliding_window=8,
    query_pre_attn_scalar=24,
    attn_logit_softcapping=5.0,
    final_logit_softcapping=3.0,
  ),
}


CHAT_TEMPLATE = (
  "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
  "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
  "The quick brown fox jumps over the lazy dog.",
  "What is the capital of France? Paris.",
  "Reverse the words of the sentence.",
  "Count the vowels in the input.",
  "one two three four",
  "Answer with yes or no.",
  "The special magic number is 4821.",
  "Translate to upper case.",
] * 20


def build_tiny_tokenizer(path: str):
  """A byte-level BPE tokenizer of VOCAB entries with a ChatML template, saved to path."""
  import transformers
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(
    vocab_size=VOCAB,
    special_tokens=["<|pad|>", "<|im_start|>", "<|im_end|>"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
  )
  tok.train_from_iterator(CORPUS, trainer)
  assert tok.get_vocab_size() <= VOCAB
  fast = transformers.PreTrainedTokenizerFast(
    tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|im_end|>", chat_template=CHAT_TEMPLATE
  )
  fast.save_pretrained(path)
  return fast


def build_tiny_hf_model(family: str, path: str, seed: int = 0, **overrides):
  """Saves a randomly initialised transformers model (weights perturbed so no tensor is trivial)
  and a tiny tokenizer beside it."""
  import torch
  import transformers

  build_tiny_tokenizer(path)

  config = transformers.AutoConfig.for_model(
    family, **{**TINY, **FAMILY_CONFIGS[family], **overrides}
  )
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn_like(p))
  model.save_pretrained(path)
  return model


def squad_articles(titles, paragraphs: int) -> dict:
  """SQuAD JSON with `paragraphs` paragraphs per article, one answerable question each."""
  return {
    "data": [
      {
        "title": title,
        "paragraphs": [
          {
            "context": f"{title} fact {p}: the code is {title}{p}.",
            "qas": [
              {
                "id": f"{title}{p}",
                "question": f"What is the code of {title} fact {p}?",
                "answers": [{"text": f"{title}{p}", "answer_start": 0}],
              }
            ],
          }
          for p in range(paragraphs)
        ],
      }
      for title in titles
    ]
  }


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
  """family -> (directory, transformers model); built once per session."""
  cache = {}

  def get(family):
    if family not in cache:
      path = str(tmp_path_factory.mktemp(f"tiny_{family}"))
      cache[family] = (path, build_tiny_hf_model(family, path))
    return cache[family]

  return get


@pytest.fixture
def rng():
  return np.random.default_rng(0)
