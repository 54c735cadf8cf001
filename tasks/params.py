"""params.yaml schema: every stage validates the whole file before it runs.

Unknown keys and out-of-range values are rejected with the key's dotted path. The library never reads params.yaml;
only the stage adapters in ``tasks/`` (and flows) do, through :func:`load_params`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llara.errors import InputError

PARAMS_FILE = Path("params.yaml")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnsParams(Strict):
    user: str = "user"
    item: str = "item"
    timestamp: str = "timestamp"
    rating: str | None = None
    title: str = "title"


class IngestParams(Strict):
    source: Literal["movielens", "generic"] = "movielens"
    input_dir: str = "data/raw/ml-100k"
    movielens_local_dir: str | None = "../shared/data/ml-100k"
    movielens_url: str = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
    interactions_file: str = "interactions.csv"
    items_file: str = "items.csv"
    columns: ColumnsParams = ColumnsParams()
    separator: str = Field(",", min_length=1, max_length=1)
    encoding: str = "utf8"
    min_rating: float | None = None


class SplitParams(Strict):
    protocols: list[Literal["paper", "paper-files", "leave-one-out"]] = Field(["paper", "leave-one-out"], min_length=1)
    seed: int = Field(42, ge=0)
    history_len: int = Field(10, ge=1, le=200)
    min_history: int = Field(3, ge=1)
    min_rating: float | None = 3.0
    n_candidates: int = Field(20, ge=2, le=1000)
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    heldout_users: str | None = "data/reference/paper_heldout_users.csv"
    paper_files_dir: str | None = "../shared/data/movielens"
    paper_files_id_offset: int = 1

    @model_validator(mode="after")
    def _history(self):
        if self.min_history > self.history_len:
            raise ValueError(f"min_history ({self.min_history}) exceeds history_len ({self.history_len})")
        return self


class Params(BaseModel):
    """Top level of params.yaml. Sections of stages not validated here pass through as plain mappings."""

    model_config = ConfigDict(extra="allow", frozen=True)

    ingest: IngestParams = IngestParams()
    split: SplitParams = SplitParams()


def _format_error(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    return key, msg


def parse_params(data: dict, where: str | Path = PARAMS_FILE) -> Params:
    """Validate a params mapping; errors name the file and the dotted key."""
    if not isinstance(data, dict):
        raise InputError(where, "top level must be a mapping of stage sections")
    try:
        return Params.model_validate(data)
    except ValidationError as exc:
        key, msg = _format_error(exc)
        raise InputError(where, f"{key}: {msg}") from None


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found (run from the repository root)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(path, f"not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_params(data, path)
