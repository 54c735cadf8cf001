"""Evaluation throughput (users/s) on the paper split's test rows with SmolLM2-135M (data/llm/base).

(a) the authors' procedure: greedy, 64 new tokens, no early stop, batch 8, RIGHT padding;
(b) our generate mode: left padding, max new tokens from the longest candidate answer, stop at the end marker;
(c) our rank mode by answer log-likelihood: prompt once, the 20 answers packed under a block mask over its KV cache;
(d) naive ranking: 20 full sequences per user, one by one;
(e) our default evaluation: both modes in one pass over the prompts (`evaluate`'s default);
(f) our rank mode with the run's score head (when it has one): the prompt pass alone.
Floors: (b) >= 3x (a), (c) >= 5x (d). Last line: eval_speedup_vs_authors=<(b)/(a)>.
Each procedure also reports the quality it gives on the same users (HR@1; ValidRatio for the generating ones, the
authors' parser for (a), ours for (b)). Evaluates the pipeline's trained hybrid-curriculum run when present (--run),
else the untrained LLM with the SASRec tokens (or random stand-in embeddings).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from benchlib import ROOT, add_clock_argument, make_clock, record, right_padded
from llara.llm.data import collate, read_examples, read_titles  # noqa: E402
from llara.llm.evaluation import eval_templates, evaluate, parse_answers  # noqa: E402
from llara.llm.generation import greedy_generate, match_answer_authors  # noqa: E402
from llara.llm.loading import resolve_device  # noqa: E402
from llara.llm.model import ModelConfig  # noqa: E402
from llara.llm.runs import LLMSettings, build, load_recommender_dir, load_run, read_run_info  # noqa: E402
from llara.llm.scoring import naive_scores  # noqa: E402
from tasks.params import load_params  # noqa: E402

DEFAULT_RUN = ROOT / "data/runs/paper/hybrid-curriculum"


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


def authors_generate(model, enc, examples, templates, pad: int) -> tuple[float, float]:
    """The authors' procedure: batches of 8, right padding, 64 new tokens, no early stop, their answer parser.
    Returns (HR@1, ValidRatio)."""
    answers = []
    for lo in range(0, len(examples), 8):
        chunk = examples[lo:lo + 8]
        batch = collate(enc, chunk, ["hybrid"] * len(chunk), templates[lo:lo + 8], False, pad)
        out = greedy_generate(model, right_padded(batch, pad), 64, [model.loaded.eos_token_id], early_stop=False)
        answers += [enc.tokenizer.decode(ids, skip_special_tokens=True) for ids in out]
    names = [[enc.title(c) for c in e.candidates] for e in examples]
    _, valid, correct = parse_answers(match_answer_authors, examples, answers, names)
    return float(correct.mean()), float(valid.mean())


def load_model(run: Path | None, merge: bool = True, device: str = "cpu"):
    """The trained run when given (LoRA merged into the weights or not), else SmolLM2 with the SASRec tokens (or
    random stand-ins) and no training."""
    if run is not None:
        model, enc, _ = load_run(run, device=device, merge=merge)
        return model, enc, f"run {run.relative_to(ROOT) if run.is_relative_to(ROOT) else run}"
    titles = read_titles(ROOT / "data/ingested/items.parquet")
    rec_dir = ROOT / "data/recommenders/paper/sasrec"
    rec = load_recommender_dir(rec_dir) if rec_dir.is_dir() else RandomRecommender(max(titles))
    model, enc = build(LLMSettings(str(ROOT / "data/llm/base"), "bfloat16", device), rec, titles, "movie",
                       ModelConfig(lora=False))
    model.eval()
    return model, enc, f"untrained, recommender {rec.name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 users (4 for naive ranking)")
    parser.add_argument("--users", type=int, default=48, help="first N test users (default 48; naive ranking: N/4)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=load_params(ROOT / "params.yaml").evaluate.batch_size,
                        help="our generate / rank batch (default: params.yaml's evaluate.batch_size)")
    parser.add_argument("--run", type=Path, default=DEFAULT_RUN,
                        help="trained run to evaluate (default: the pipeline's hybrid-curriculum run when present)")
    add_clock_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    clock = make_clock(args.clock, args.threads, device)
    n_users = 16 if args.quick else args.users
    run = args.run if args.run is not None and (args.run / "final" / "run.json").is_file() else None
    model, enc, what = load_model(run, device=device.type)
    length_norm = True if run is None else read_run_info(run)["train"]["length_norm"]
    examples = read_examples(ROOT / "data/split/paper/test.parquet")[:n_users]
    templates = eval_templates(enc, examples, 0)
    pad = model.loaded.pad_token_id
    results, quality = {}, {}

    def ours(mode: str, use_head: bool = True):
        modes = ["generate", "rank"] if mode == "both" else [mode]
        metrics, _ = evaluate(model, enc, examples, modes=modes, batch_size=args.batch_size, length_norm=length_norm,
                              use_head=use_head)
        return metrics if mode == "both" else metrics[mode]

    def naive():
        n = max(2, n_users // 4)
        batch = collate(enc, examples[:n], ["hybrid"] * n, templates[:n], False, pad)
        scores = naive_scores(model, enc, batch, length_norm=length_norm)
        return n, float((scores.argmax(1) == batch.target_index).float().mean())

    authors_model = load_model(run, merge=False, device=device.type)[0] if run is not None else model  # they run the PEFT model as is
    t = clock()
    hr, vr = authors_generate(authors_model, enc, examples, templates, pad)
    results["(a) authors generate"], quality["(a) authors generate"] = clock() - t, f"HR@1 {hr:.3f}, VR {vr:.3f}"
    t = clock()
    m = ours("generate")
    results["(b) our generate"] = clock() - t
    quality["(b) our generate"] = f"HR@1 {m['hr@1']['value']:.3f}, VR {m['valid_ratio']['value']:.3f}"
    t = clock()
    m = ours("rank", use_head=False)
    results["(c) our rank (shared KV)"], quality["(c) our rank (shared KV)"] = (
        clock() - t, f"HR@1 {m['hr@1']['value']:.3f} (log-likelihood)")
    if model.head is not None:
        t = clock()
        m = ours("rank")
        results["(f) our rank (score head)"], quality["(f) our rank (score head)"] = (
            clock() - t, f"HR@1 {m['hr@1']['value']:.3f}")
    t = clock()
    m = ours("both")
    results["(e) our default (both modes)"] = clock() - t
    quality["(e) our default (both modes)"] = (f"generate HR@1 {m['generate']['hr@1']['value']:.3f}, "
                                               f"rank HR@1 {m['rank']['hr@1']['value']:.3f}")
    t = clock()
    n_naive, hr_naive = naive()
    results["(d) naive rank"] = (clock() - t) * n_users / n_naive
    quality["(d) naive rank"] = f"HR@1 {hr_naive:.3f} (first {n_naive} users, log-likelihood)"
    rate = {k: n_users / v for k, v in results.items()}
    print(f"{'procedure':28s} {'users/s':>9s}  quality ({n_users} users, {what})")
    for k, v in rate.items():
        print(f"{k:28s} {v:9.3f}  {quality[k]}")
    speed = rate["(b) our generate"] / rate["(a) authors generate"]
    rank_speed = rate["(c) our rank (shared KV)"] / rate["(d) naive rank"]
    default_speed = rate["(e) our default (both modes)"] / rate["(a) authors generate"]
    print(f"generate speedup vs authors: {speed:.2f}x (floor 3x); rank speedup vs naive: {rank_speed:.2f}x (floor 5x); "
          f"default evaluation (both modes) vs authors: {default_speed:.2f}x")
    record(f"bench_eval ({n_users} users, {what}, batch {args.batch_size}, {args.clock} clock, load "
           f"{os.getloadavg()[0]:.1f}): " + ", ".join(f"{k} {v:.3f} users/s ({quality[k]})" for k, v in rate.items())
           + f"; eval_speedup_vs_authors={speed:.2f}, rank_vs_naive={rank_speed:.2f}, "
             f"both_modes_vs_authors={default_speed:.2f}")
    print(f"eval_speedup_vs_authors={speed:.2f}")


if __name__ == "__main__":
    main()
