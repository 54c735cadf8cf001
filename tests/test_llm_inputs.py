"""The llm conversion on the real packaged GGUF, and one-line InputErrors for bad inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llara.errors import InputError
from llara.llm.data import read_examples
from llara.llm.loading import add_placeholders, convert_gguf, find_smollm2_gguf, load_llm
from llara.llm.runs import check_embedding_rows
from _llm_helpers import StandInRecommender, fake_examples, fake_titles, write_rows

ROOT = Path(__file__).resolve().parents[1]


def test_convert_real_gguf_loads_and_generates(tmp_path):
    out = convert_gguf(find_smollm2_gguf(), tmp_path / "base")
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert "quantization_config" not in (out / "config.json").read_text()  # plain weights, no GGUF kernels
    llm = load_llm(str(out), dtype="float32", device="cpu")
    tok = llm.tokenizer
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        gen = llm.model.generate(ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in tok.decode(gen[0, ids.shape[1]:])
    assert llm.history_token_id != llm.candidate_token_id and llm.eos_token_id == tok.eos_token_id


def test_missing_llm_path_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_llm(str(tmp_path / "nowhere" / "model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no config.json"):
        load_llm(str(tmp_path / "empty"))


def test_tokenizer_without_eos_is_an_input_error(tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.eos_token = None
    with pytest.raises(InputError, match="no EOS token"):
        add_placeholders(tok, "my-tokenizer")


def test_embedding_rows_must_match_item_table():
    with pytest.raises(InputError, match="31 item embeddings but the item table has 30"):
        check_embedding_rows(StandInRecommender(31), fake_titles(30), "data/recommenders/x")


def test_split_target_outside_candidates_is_an_input_error(tmp_path):
    e = fake_examples(2, 30)
    bad = [e[0], e[1].__class__(1, 1, e[1].history, 999, e[1].candidates)]
    with pytest.raises(InputError, match="row 1: target 999"):
        read_examples(write_rows(tmp_path / "rows.parquet", bad))


def test_split_rows_read_back_as_written(tmp_path):
    rows = fake_examples(7, 30)
    table = read_examples(write_rows(tmp_path / "rows.parquet", rows))
    assert len(table) == 7 and list(table) == rows and table[-1] == rows[6] and table[2:5] == rows[2:5]
    with pytest.raises(IndexError):
        table[7]


@pytest.mark.parametrize("fault, message", [
    ("empty history", "row 1: empty history"), ("null history", "row 1: missing history"),
    ("null candidate", "row 1: missing item in candidates"), ("null target", "row 1: missing target"),
    ("no column", "missing column 'candidates'"),
])
def test_bad_split_rows_name_the_row(tmp_path, fault, message):
    import polars as pl

    path = write_rows(tmp_path / "rows.parquet", fake_examples(3, 30))
    df = pl.read_parquet(path)
    if fault == "no column":
        df = df.drop("candidates")
    else:
        column = {"empty history": "history", "null history": "history", "null candidate": "candidates",
                  "null target": "target"}[fault]
        values = df[column].to_list()
        values[1] = values[1][:2] + [None] if fault == "null candidate" else [] if fault == "empty history" else None
        df = df.with_columns(pl.Series(column, values, dtype=df[column].dtype))
    df.write_parquet(path)
    with pytest.raises(InputError, match=message):
        read_examples(path)


def test_cli_reports_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "llara", "recommend", str(tmp_path / "run"), "--history", "1"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "not a trained run" in proc.stderr
