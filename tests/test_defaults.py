"""Each default lives once: params.yaml (the pipeline's values) == the library's config defaults == the `llara` CLI's
defaults, section by section. One row of AGREEMENTS per params section; a new section (or a new CLI) adds a row."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from llara.cli import build_parser
from llara.data.ingest import read_generic
from llara.data.tables import Columns
from llara.data.sources import fetch_movielens_100k
from llara.data.split import SplitConfig
from llara.entrypoint import keyword_defaults
from llara.recommenders.config import BackboneConfig, TrainConfig
from llara.recommenders.registry import FAMILIES
from llara.report import ReportConfig

ROOT = Path(__file__).resolve().parents[1]


def fields_of(config) -> dict:
    """A config dataclass's defaults, by field name."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


@dataclass
class Agreement:
    """params.yaml's ``section`` agrees with the library's defaults and with ``command``'s option defaults.

    library: the library's defaults by params key. command: a ``llara`` subcommand (None: no CLI for it). options:
    params key -> the command's option dest where they differ (None: no such option). from_library: keys whose CLI
    option has no default of its own (None) because the command takes the library's at run time. differs: params
    keys whose pipeline value deliberately differs from the library's, with the reason."""

    section: str
    library: dict
    command: str | None = None
    options: dict[str, str | None] = field(default_factory=dict)
    from_library: set[str] = field(default_factory=set)
    differs: dict[str, str] = field(default_factory=dict)


def _family_defaults(name: str) -> dict:
    defaults = fields_of(FAMILIES[name].config(n_items=1))
    return {k: v for k, v in defaults.items() if k not in ("n_items", "window")} | {"lr": FAMILIES[name].lr}


AGREEMENTS = [
    Agreement("ingest.columns", fields_of(Columns()), "ingest",
              {"user": "user_col", "item": "item_col", "timestamp": "time_col", "rating": "rating_col",
               "title": "title_col"}),
    Agreement("ingest", keyword_defaults(read_generic) | {"movielens_url": keyword_defaults(fetch_movielens_100k)["url"]},
              "ingest", {"movielens_url": None}),
    Agreement("split", {k: v for k, v in fields_of(SplitConfig()).items() if k != "protocol"}, "split",
              {"val_fraction": None, "test_fraction": None, "paper_files_id_offset": None},
              differs={"heldout_users": "the paper's held-out users, a file of this repository",
                       "paper_files_dir": "where the authors' files are on this machine"}),
    Agreement("pretrain", {k: v for k, v in fields_of(TrainConfig()).items() if k != "min_delta"}
              | {"window": BackboneConfig(n_items=1).window}, "pretrain",
              {"num_threads": "threads", "checkpoint_every": None}, from_library={"lr"}),
    *(Agreement(f"pretrain.{name}", _family_defaults(name), "pretrain", {"lr": "lr"},
                from_library=set(_family_defaults(name)))  # --hidden, --dropout, --lr: the family's
      for name in FAMILIES),
    Agreement("report", {k: v for k, v in fields_of(ReportConfig()).items() if k != "title"}, "report",
              {"n_examples": "n_examples", "champion": None}, from_library={"metrics", "plots", "predictions"}),
]


def params_section(dotted: str):
    node = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key in dotted.split("."):
        node = node[key]
    return node


def command_defaults(command: str) -> dict:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]  # noqa: SLF001
    return {a.dest: a.default for a in sub._actions if a.dest != "help"}  # noqa: SLF001


@pytest.mark.parametrize("row", AGREEMENTS, ids=lambda row: row.section)
def test_params_yaml_equals_the_library_defaults(row: Agreement):
    section = params_section(row.section)
    shared = [k for k in row.library if k in section and k not in row.differs and not isinstance(section[k], dict)]
    assert shared, f"params.yaml {row.section} shares no key with the library"
    mismatched = {k: (section[k], row.library[k]) for k in shared if section[k] != row.library[k]}
    assert not mismatched, f"params.yaml {row.section} (value, library default) disagree: {mismatched}"
    for key in row.differs:
        assert section[key] != row.library[key], f"{row.section}.{key} is listed as differing but agrees"


@pytest.mark.parametrize("row", [r for r in AGREEMENTS if r.command], ids=lambda row: row.section)
def test_cli_defaults_equal_the_library_defaults(row: Agreement):
    defaults = command_defaults(row.command)
    checked = 0
    for key, value in row.library.items():
        dest = row.options.get(key, key)
        if key in row.differs or dest is None or (dest not in defaults and key in row.from_library):
            continue
        assert dest in defaults, f"llara {row.command} has no option for {row.section}.{key}"
        if key in row.from_library:
            assert defaults[dest] is None, f"llara {row.command} --{dest}: expected no default of its own (the library's)"
        else:
            assert defaults[dest] == value, f"llara {row.command} --{dest}: {defaults[dest]!r} vs library {value!r}"
        checked += 1
    assert checked, f"llara {row.command} checks no option of {row.section}"


def test_every_params_section_has_a_row_or_belongs_to_the_llm_side():
    """A new section of params.yaml gets its row above (to add by their owners: the LLM side's finetune, evaluate,
    llm; the nightly loop's champion, recommend)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    covered = {row.section.split(".")[0] for row in AGREEMENTS}
    assert set(params) - covered <= {"llm", "finetune", "evaluate", "champion", "recommend"}


def test_a_disagreement_is_caught():
    with pytest.raises(AssertionError, match="seed"):
        test_params_yaml_equals_the_library_defaults(Agreement("split", {"seed": 7, "history_len": 10}))
    with pytest.raises(AssertionError, match="seed"):
        test_cli_defaults_equal_the_library_defaults(Agreement("split", {"seed": 7}, "split"))
    with pytest.raises(AssertionError, match="no default of its own"):
        test_cli_defaults_equal_the_library_defaults(Agreement("split", {"seed": 42}, "split", from_library={"seed"}))
