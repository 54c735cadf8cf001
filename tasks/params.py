"""params.yaml schema: every stage validates the whole file before it runs.

Unknown keys and out-of-range values are rejected with the key's dotted path. The library never reads params.yaml;
only the stage adapters in ``tasks/`` (and flows) do, through :func:`load_params`.
"""

from __future__ import annotations

import codecs
import contextlib
from pathlib import Path
from typing import Iterator, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llara import report as report_defaults
from llara.errors import ConfigError, InputError

PARAMS_FILE = Path("params.yaml")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def require_distinct(value: list[str], what: str) -> list[str]:
    """Reject a list that names an entry twice (DVC's foreach/matrix would build the stage twice)."""
    if len(set(value)) != len(value):
        raise ValueError(f"{what} listed twice: {value}")
    return value


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

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r}") from None
        return value

    @field_validator("movielens_url")
    @classmethod
    def _url_scheme(cls, value: str) -> str:
        if not value.startswith(("https://", "http://", "file://")):
            raise ValueError(f"must be an https://, http:// or file:// URL, got {value!r}")
        return value

    @field_validator("input_dir", "interactions_file", "items_file")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


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

    @field_validator("protocols")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        return require_distinct(value, "protocols")

    @model_validator(mode="after")
    def _history(self):
        if self.min_history > self.history_len:
            raise ValueError(f"min_history ({self.min_history}) exceeds history_len ({self.history_len})")
        return self

BACKBONES = ("sasrec", "gru4rec", "caser")


class BackboneParams(Strict):
    hidden: int = Field(64, ge=1, le=4096)
    dropout: float = Field(0.1, ge=0, lt=1)
    lr: float | None = Field(None, gt=0, le=1)  # overrides pretrain.lr for this backbone


class SASRecParams(BackboneParams):
    n_blocks: int = Field(1, ge=1, le=16)
    n_heads: int = Field(1, ge=1, le=64)

    @model_validator(mode="after")
    def _heads(self):
        if self.hidden % self.n_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must divide hidden ({self.hidden})")
        return self


class GRU4RecParams(BackboneParams):
    n_layers: int = Field(1, ge=1, le=8)


class CaserParams(BackboneParams):
    dropout: float = Field(0.3, ge=0, lt=1)
    n_h: int = Field(16, ge=1, le=1024)  # horizontal filters per height 1..window
    n_v: int = Field(4, ge=1, le=1024)  # vertical filters


class PretrainParams(Strict):
    """Stages ``pretrain`` / ``export`` / ``evaluate_recommenders`` (docs/recommenders.md)."""

    backbones: list[Literal[BACKBONES]] = Field(list(BACKBONES), min_length=1)
    seed: int = Field(42, ge=0)
    window: int = Field(10, ge=1, le=200)
    epochs: int = Field(50, ge=1, le=10_000)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(2e-3, gt=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    patience: int = Field(3, ge=1)
    monitor: Literal["val_loss", "val_full_ndcg@10", "val_full_hr@10"] = "val_loss"
    loss: Literal["ce", "bce"] = "ce"
    n_negatives: int = Field(1, ge=1, le=10_000)
    num_threads: int = Field(1, ge=1, le=256)
    checkpoint_every: int = Field(1, ge=1)
    sasrec: SASRecParams = SASRecParams()
    gru4rec: GRU4RecParams = GRU4RecParams()
    caser: CaserParams = CaserParams()

    @field_validator("backbones", mode="before")
    @classmethod
    def _list(cls, value):
        if isinstance(value, str):  # dvc.yaml's matrix iterates it: a bare string would break `dvc repro`
            raise ValueError(f"must be a list; write [{value}] for a single backbone")
        return value

    @field_validator("backbones")
    @classmethod
    def _distinct_backbones(cls, value: list[str]) -> list[str]:
        return require_distinct(value, "backbones")


LLM_VARIANTS = ("hybrid-curriculum", "hybrid-direct", "hybrid-two-stage", "text-only", "id-only", "zero-shot")


class LLMParams(Strict):
    """Stage ``llm``: which causal LM; ``smollm2`` converts the packaged GGUF into ``base_dir``."""

    model: str = "smollm2"  # smollm2 | a Hugging Face id | a local HF folder
    base_dir: str = "data/llm/base"
    dtype: Literal["bfloat16", "float32", "float16"] = "bfloat16"
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    trust_remote_code: bool = False


class FinetuneRecipe(Strict):
    candidate_features: Literal["item", "affinity"] = "affinity"
    score_head: bool = True
    residual: float = Field(1.0, ge=0)
    generative_weight: float = Field(1.0, ge=0)
    listwise_weight: float = Field(0.0, ge=0)
    head_weight: float = Field(1.0, ge=0)
    length_norm: bool = True
    score_noise: float = Field(0.0, ge=0)
    projector: Literal["mlp", "linear"] = "mlp"
    lora: bool = True
    lora_r: int = Field(8, ge=1, le=256)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    lora_targets: list[str] = Field(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], min_length=1)
    optimizer: Literal["adamw", "adam"] = "adamw"
    lr: float = Field(2e-4, gt=0)
    warmup_start_lr: float = Field(2e-6, ge=0)
    min_lr: float = Field(2e-6, ge=0)
    weight_decay: float = Field(0.0, ge=0)


class FinetuneProfile(Strict):
    steps: int = Field(100, ge=0)
    batch_size: int = Field(8, ge=1)
    micro_batch: int = Field(4, ge=1)
    warmup_steps: int = Field(5, ge=0)
    checkpoint_every: int = Field(10, ge=1)
    llm: str | None = None  # override llm.base_dir (e.g. meta-llama/Llama-2-7b-hf for the paper profile)
    autocast: bool = True
    gradient_checkpointing: bool = False  # recompute activations in backward (7B on one GPU); same results
    attention: Literal["auto", "eager", "sdpa"] = "auto"  # attention kernel while training (auto: eager on CPU)
    compile: bool | Literal["auto"] = "auto"  # torch.compile the decoder layers while training (auto: CPU + C++ compiler)


class FinetuneParams(Strict):
    protocol: Literal["paper", "paper-files", "leave-one-out"] = "paper"
    backbone: Literal["sasrec", "gru4rec", "caser"] = "sasrec"
    variants: list[Literal[LLM_VARIANTS]] = Field(["hybrid-curriculum", "text-only"], min_length=1)
    prompts: str = "movie"  # movie | game | artist | item | a template file
    seed: int = Field(0, ge=0)
    profile: str = "default"
    recipe: str = "ours"
    profiles: dict[str, FinetuneProfile] = {"default": FinetuneProfile()}
    recipes: dict[str, FinetuneRecipe] = {"ours": FinetuneRecipe()}

    @model_validator(mode="after")
    def _known(self):
        if self.profile not in self.profiles:
            raise ValueError(f"profile {self.profile!r} is not among profiles {sorted(self.profiles)}")
        if self.recipe not in self.recipes:
            raise ValueError(f"recipe {self.recipe!r} is not among recipes {sorted(self.recipes)}")
        return self


class EvaluateParams(Strict):
    splits: list[Literal["test", "val"]] = Field(["test"], min_length=1)
    modes: list[Literal["generate", "rank"]] = Field(["generate", "rank"], min_length=1)
    batch_size: int = Field(16, ge=1)
    max_rows: int | None = Field(None, ge=1)  # evaluate only the first N rows of each split (quick checks)


class ReportParams(Strict):
    """``report`` stage: one HTML file from the metrics, curves and predictions that exist (see llara/report.py)."""

    out: str = "reports/index.html"
    metrics: dict[str, str] = Field(default_factory=lambda: dict(report_defaults.DEFAULT_METRICS), min_length=1)
    plots: list[str] = Field(default_factory=lambda: list(report_defaults.DEFAULT_PLOTS))
    predictions: list[str] = Field(default_factory=lambda: list(report_defaults.DEFAULT_PREDICTIONS))
    items: str = report_defaults.DEFAULT_ITEMS
    split_file: str = report_defaults.DEFAULT_SPLIT_FILE
    chart_metric: str = Field("hr@1", min_length=1)
    n_examples: int = Field(5, ge=0, le=100)
    top_k: int = Field(5, ge=1, le=100)

    @field_validator("split_file")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        try:
            value.format(split="test", protocol="paper")
        except (KeyError, IndexError, ValueError):
            raise ValueError("only the placeholders {split} and {protocol} are allowed") from None
        return value


class Params(BaseModel):
    """Top level of params.yaml: one validated section per stage family; an unknown section (a typo) is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ingest: IngestParams = IngestParams()
    split: SplitParams = SplitParams()
    pretrain: PretrainParams = PretrainParams()
    llm: LLMParams = LLMParams()
    finetune: FinetuneParams = FinetuneParams()
    evaluate: EvaluateParams = EvaluateParams()
    report: ReportParams = ReportParams()


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


@contextlib.contextmanager
def reported_as_params(path: str | Path = PARAMS_FILE) -> Iterator[None]:
    """Report a library :class:`~llara.errors.ConfigError` as ``<path>: <dotted key>: <what>``."""
    try:
        yield
    except ConfigError as exc:
        raise InputError(path, f"{exc.key}: {exc.what}") from None


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
