"""The analysis scripts of bench/ on small hand-made tables: `bench_position.py` (HR@1 by where the target is listed,
and the reversed order), `bench_popularity.py` (by how popular the target is) and `bench_score_noise.py` (the
training scores' noise against held-out reliability). Each check could fail: the groups, the paired differences and
the picks are computed by the scripts' own functions and compared with what the tables make true by construction.
"""

from __future__ import annotations

import pytest


def test_position_table_groups_users_by_where_the_target_is_listed():
    """bench_position: users grouped by the target's slot among 20 candidates; a model right only on late-listed
    targets shows a rising row and a positive last-minus-first, the recommender's flat row shows none; answers are
    counted by the slot of the candidate they name (an invalid answer by none)."""
    import polars as pl
    from bench_position import position_table

    rows = []
    for user in range(40):
        slot = user % 20  # the target's position: 2 users per slot, 10 per group of 5 slots
        candidates = [1000 * user + k for k in range(20)]
        rows.append({"user": user, "target": candidates[slot], "candidates": candidates, "slot": slot})
    split = pl.DataFrame(rows).select("user", "target", "candidates")
    late = [r["slot"] >= 15 for r in rows]
    predictions = pl.DataFrame({
        "row": list(range(40))[::-1], "correct": late[::-1],   # stored out of order: the table sorts by row
        "generated_item": [r["target"] if r["slot"] >= 15 else (-1 if r["user"] == 0 else r["candidates"][19])
                           for r in rows][::-1],
        "rank_llm": [1 if x else 2 for x in late][::-1], "recommender_rank": [1 if r["user"] < 20 else 3 for r in rows][::-1]})
    table = position_table(predictions, split, groups=4)
    assert [g["value"] for g in table["generate"]["groups"]] == [0.0, 0.0, 0.0, 1.0]
    assert [g["n"] for g in table["generate"]["groups"]] == [10, 10, 10, 10]
    assert table["generate"]["last_minus_first"]["value"] == 1.0
    assert table["rank_llm"]["last_minus_first"]["ci95"] == [1.0, 1.0]
    assert [g["value"] for g in table["recommender"]["groups"]] == [0.5] * 4
    assert table["chosen"] == [0, 0, 0, 39]  # user 0's answer named no candidate
    with pytest.raises(SystemExit, match="predictions cover rows 39 of the split's 40"):
        position_table(predictions.filter(pl.col("row") > 0).with_columns(pl.col("row") - 1), split, groups=4)


def test_popularity_table_groups_users_by_how_popular_their_target_is():
    """bench_popularity: users grouped by their target's training count (ties in one group); a model right only on
    popular targets shows a rising row and a negative paired difference on the rare ones against a flat recommender;
    the residual `rank` mode is left out; answers' popularity ranks among the candidates (1: the most popular)."""
    import numpy as np
    import polars as pl
    from bench_popularity import popularity_table, target_counts

    # items 0..19: item k is a training target k times (item 0 never); every user gets the same 20 candidates
    train = pl.DataFrame({"target": [k for k in range(20) for _ in range(k)]})
    counts = target_counts(train)
    assert counts[19] == 19 and 0 not in counts
    split = pl.DataFrame({"user": list(range(40)), "target": [u % 20 for u in range(40)],
                          "candidates": [list(range(20))] * 40})
    popular = [u % 20 >= 10 for u in range(40)]
    predictions = pl.DataFrame({
        "row": list(range(40))[::-1], "correct": popular[::-1],  # stored out of order: the table sorts by row
        "generated_item": [u % 20 if p else 19 for u, p in zip(range(40), popular)][::-1],
        "rank_llm": [1 if p else 2 for p in popular][::-1], "rank": [1] * 40,
        "recommender_rank": [1 if u % 2 else 2 for u in range(40)][::-1]})
    scores = np.array([np.eye(20)[19] if u < 20 else np.eye(20)[0] + np.eye(20)[1] * 0.5 for u in range(40)])
    table = popularity_table(predictions, split, counts, groups=2, scores=scores)
    assert table["groups"] == [(0, 9), (10, 19)]
    assert table["answers"]["recommender"] == {"mean_rank": 10.5, "first": 0.5, "n": 40}  # item 0 ranks 20th
    # the recommender's pick (item 19 for users 0-19, item 0 for users 20-39) is right for users 19 and 20 alone. The
    # LLM is wrong for user 20 (it answered item 19, the recommender's 3rd) and right where the recommender is wrong
    # for users 10-18 (the recommender picked item 19, popularity rank 1) and 30-39 (item 0, rank 20)
    split_rows = table["disagreements"]["generate"]
    assert split_rows["recommender_only"] == {"n": 1, "answer_popularity": 1.0, "target_popularity": 20.0,
                                              "recommender_rank_of_answer": 3.0}
    assert split_rows["llm_only"] == {"n": 19, "recommender_pick_popularity": (9 * 1 + 10 * 20) / 19,
                                      "target_popularity": (sum(range(2, 11)) + sum(range(1, 11))) / 19}
    assert sorted(table["modes"]) == ["generate", "rank_llm", "recommender"]  # no `rank`: it holds the recommender
    gen = table["modes"]["generate"]
    assert [g["value"] for g in gen["groups"]] == [0.0, 1.0] and [g["n"] for g in gen["groups"]] == [20, 20]
    assert [d["value"] for d in gen["vs_recommender"]] == [-0.5, 0.5]
    assert table["modes"]["recommender"]["vs_recommender"] is None
    # answers: item 19 (rank 1) for the rare half, the target (rank 20 - k) for the popular half
    assert table["answers"]["generate"]["first"] == 22 / 40
    assert table["answers"]["target"]["mean_rank"] == sum(20 - (u % 20) for u in range(40)) / 40
    ties = target_counts(pl.DataFrame({"target": [1, 1, 2, 2, 3]}))
    split3 = pl.DataFrame({"user": [0, 1, 2], "target": [1, 2, 3], "candidates": [[1, 2, 3]] * 3})
    rows3 = pl.DataFrame({"row": [0, 1, 2], "correct": [True] * 3, "generated_item": [1, 2, 3],
                          "recommender_rank": [1, 1, 1]})
    answers = popularity_table(rows3, split3, ties, groups=2)["answers"]
    assert answers["generate"]["mean_rank"] == (1 + 1 + 3) / 3 and "recommender" not in answers


def test_score_noise_matches_training_scores_to_held_out_ones():
    """bench_score_noise: per row the target's index and standardized scores; noise lowers the training rows' HR@1
    from its noiseless value, and the σ chosen is the one whose noisy training HR@1 is closest to validation's."""
    import numpy as np
    import polars as pl
    import torch
    from bench_score_noise import matched_sigma, noisy_hr1, standardized_scores

    class Scores:  # the recommender interface the bench uses: a score per (row, candidate)
        def score(self, histories, candidates):
            assert len(histories) <= 2  # batch=2: scored two rows at a time
            return torch.tensor([[float(c == h[-1]) * 5 + 0.01 * c for c in cands]
                                 for h, cands in zip(histories, candidates)])

    split = pl.DataFrame({"history": [[1, 3], [2, 4], [5, 6]], "target": [3, 2, 7], "candidates": [[3, 2, 9]] * 2
                          + [[6, 7, 8]]})
    z, targets = standardized_scores(Scores(), split, batch=2)
    assert targets.tolist() == [0, 1, 1]
    assert np.allclose(z.mean(axis=1), 0, atol=1e-6) and np.allclose(z.std(axis=1), 1, atol=1e-4)
    assert noisy_hr1(z, targets, 0.0) == 1 / 3  # row 0 right; row 1 (4 not listed) picks 9; row 2 picks 6
    rng = np.random.default_rng(1)
    confident = np.eye(20)[rng.integers(0, 20, 4000)] * 1.5
    truth = confident.argmax(axis=1)
    curve = {s: noisy_hr1(confident, truth, s) for s in (0.0, 0.5, 1.0, 2.0)}
    assert curve[0.0] == 1.0 and curve[0.0] > curve[0.5] > curve[1.0] > curve[2.0]
    assert matched_sigma(curve, held_out=curve[1.0] + 0.01) == 1.0


def test_reversed_candidates_and_paired_by_group():
    """--reversed: the candidate lists reversed (the examples otherwise unchanged, the stored ones untouched), and
    per group of the original order the paired difference reversed minus original on the same users, then all."""
    import numpy as np
    from bench_position import paired_by_group

    from llara.llm.data import Example
    from llara.llm.evaluation import reversed_candidates

    examples = [Example(row=0, user=1, history=(5, 6), target=9, candidates=(9, 8, 7)),
                Example(row=1, user=2, history=(5,), target=3, candidates=(1, 2, 3))]
    flipped = reversed_candidates(examples)
    assert [e.candidates for e in flipped] == [(7, 8, 9), (3, 2, 1)]
    assert [e.candidates for e in examples] == [(9, 8, 7), (1, 2, 3)]
    assert [e.target_index for e in flipped] == [2, 0]
    assert [(e.row, e.user, e.target, e.history) for e in flipped] == [(e.row, e.user, e.target, e.history)
                                                                        for e in examples]
    group = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    original = np.array([0, 0, 1, 0, 1, 1, 1, 0], dtype=float)
    reversed_hits = np.array([1, 1, 1, 0, 0, 1, 0, 0], dtype=float)
    first, last, everyone = paired_by_group(reversed_hits, original, group)
    assert (first["value"], first["baseline"], first["model"], first["n"]) == (0.5, 0.25, 0.75, 4)
    assert (last["value"], last["n"]) == (-0.5, 4)
    assert (everyone["value"], everyone["n"]) == (0.0, 8)
