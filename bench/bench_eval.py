"""Evaluation throughput (users/s) on the paper split's test rows with SmolLM2-135M (data/llm/base).

(a) the authors' procedure: greedy, 64 new tokens, no early stop, batch 8, RIGHT padding;
(b) our generate mode: left padding, max new tokens from the longest candidate answer, stop at the end marker;
(c) our rank mode: prompt once, KV cache shared by the 20 continuations;
(d) naive ranking: 20 full sequences per user, one by one.
Floors: (b) >= 3x (a), (c) >= 5x (d). Last line: eval_speedup_vs_authors=<(b)/(a)>.
Uses the trained recommender when present (data/recommenders/paper/sasrec), else random stand-in embeddings.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llara.llm.data import Batch, collate, read_examples, read_titles  # noqa: E402
from llara.llm.evaluation import eval_templates, evaluate  # noqa: E402
from llara.llm.generation import greedy_generate  # noqa: E402
from llara.llm.model import ModelConfig  # noqa: E402
from llara.llm.runs import LLMSettings, build, load_recommender_dir  # noqa: E402
from llara.llm.scoring import naive_scores  # noqa: E402


class RandomRecommender:
    name, dim = "random", 64

    def __init__(self, n: int):
        self.table = torch.randn(n + 1, 64, generator=torch.Generator().manual_seed(0))

    def item_embeddings(self, items):
        return self.table[torch.as_tensor(list(items))]

    def encode(self, histories):
        return torch.stack([self.item_embeddings(h).mean(0) for h in histories])

    def score(self, histories, candidates):
        return (self.encode(histories)[:, None] * torch.stack([self.item_embeddings(c) for c in candidates])).sum(-1)


def right_padded(batch: Batch, pad: int) -> Batch:
    """The same prompts, padded on the right (the authors' tokenizer setting)."""
    lengths = batch.attention_mask.sum(1).tolist()
    ids = torch.full_like(batch.input_ids, pad)
    mask = torch.zeros_like(batch.attention_mask)
    for i, n in enumerate(lengths):
        ids[i, :n] = batch.input_ids[i, -n:]
        mask[i, :n] = 1
    positions = torch.arange(ids.shape[1])[None].expand_as(ids).clone()
    return Batch(ids, mask, positions, batch.anchors, batch.target_index, None, batch.prompts, batch.examples)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 users (4 for naive ranking)")
    parser.add_argument("--users", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n_users = 16 if args.quick else args.users
    titles = read_titles(ROOT / "data/ingested/items.parquet")
    rec_dir = ROOT / "data/recommenders/paper/sasrec"
    rec = load_recommender_dir(rec_dir) if rec_dir.is_dir() else RandomRecommender(max(titles))
    model, enc = build(LLMSettings(str(ROOT / "data/llm/base"), "bfloat16", "cpu"), rec, titles, "movie",
                       ModelConfig(lora=False))
    model.eval()
    examples = read_examples(ROOT / "data/split/paper/test.parquet")[:n_users]
    templates = eval_templates(enc, examples, 0)
    pad = model.loaded.pad_token_id

    def batches(size):
        for lo in range(0, len(examples), size):
            yield collate(enc, examples[lo:lo + size], ["hybrid"] * len(examples[lo:lo + size]),
                          templates[lo:lo + size], False, pad)

    def authors():
        for b in batches(8):
            greedy_generate(model, right_padded(b, pad), 64, [model.loaded.eos_token_id], early_stop=False)

    results = {}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        results["(a) authors generate"] = timed(authors)
        results["(b) our generate"] = timed(lambda: evaluate(model, enc, examples, modes=["generate"], batch_size=8))
        results["(c) our rank (shared KV)"] = timed(lambda: evaluate(model, enc, examples, modes=["rank"], batch_size=8))
        naive_n = max(2, n_users // 4)
        results["(d) naive rank"] = timed(lambda: naive_scores(model, enc, next(batches(naive_n)))) * n_users / naive_n
    rate = {k: n_users / v for k, v in results.items()}
    print(f"{'procedure':28s} {'users/s':>9s}")
    for k, v in rate.items():
        print(f"{k:28s} {v:9.3f}")
    speed = rate["(b) our generate"] / rate["(a) authors generate"]
    rank_speed = rate["(c) our rank (shared KV)"] / rate["(d) naive rank"]
    print(f"generate speedup vs authors: {speed:.2f}x (floor 3x); rank speedup vs naive: {rank_speed:.2f}x (floor 5x)")
    line = (f"- {datetime.date.today()} {platform.node()} ({torch.get_num_threads()} threads, {n_users} users, "
            f"recommender {rec.name}): " + ", ".join(f"{k} {v:.3f} users/s" for k, v in rate.items())
            + f"; eval_speedup_vs_authors={speed:.2f}, rank_vs_naive={rank_speed:.2f}\n")
    with open(ROOT / "bench" / "RESULTS.md", "a") as fh:
        fh.write(line)
    print(f"eval_speedup_vs_authors={speed:.2f}")


if __name__ == "__main__":
    main()
