"""params.yaml schema: every stage validates the whole file before it runs.

Unknown keys and out-of-range values are rejected with the key's dotted path. The library never reads params.yaml;
only the stage adapters in ``tasks/`` (and flows) do, through :func:`load_params`.

One source of truth: a key backed by a library option (a config dataclass field or a keyword argument) takes its
type and default from the library (:func:`library_fields`), and its range checks are the library's ``validate()``,
run by :func:`parse_params` and reported under the key (``validate_library``). Pipeline-only keys (paths, the lists
of protocols and backbones to build) have no default here: params.yaml holds them. Names come from the registries
(:data:`llara.data.split.PROTOCOLS`, :data:`llara.recommenders.registry.FAMILIES`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import typing
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal

import yaml
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model,
                      field_validator, model_validator)

from llara.data.inbox import MAX_BAD_ROWS_LIMIT, merge_inbox
from llara.data.ingest import read_generic
from llara.data.tables import Columns, check_text_options
from llara.data.sources import check_url, fetch_movielens_100k
from llara.data.split import PROTOCOLS, SplitConfig
from llara.errors import ConfigError, InputError, require_range
from llara.llm.recipes import (DEFAULT_PROFILE, DEFAULT_PROMPTS, DEFAULT_RECIPE, DEFAULT_SEED, DTYPE_NAMES, EVAL_BATCH_SIZE,
                               EVAL_MODES, VARIANTS, LLMSettings, Profile, Recipe)
from llara.recommenders.config import BackboneConfig, TrainConfig
from llara.recommenders.registry import FAMILIES, Family
from llara.report import ReportConfig

PARAMS_FILE = Path("params.yaml")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def validate_library(self, where: str | Path) -> None:
        """The library's range checks of this section (none by default)."""


def library_fields(source: Any, exclude: tuple[str, ...] = (), include: tuple[str, ...] | None = None,
                   **renamed: str) -> dict[str, tuple[Any, Any]]:
    """Field specs (type, default) for :func:`pydantic.create_model` from a library dataclass's fields or a
    function's keyword-only arguments (all but ``exclude``, or only ``include``): the library's types and defaults,
    not a copy. ``renamed``: params key -> the library's name where they differ."""
    hints = typing.get_type_hints(source)
    names = {v: k for k, v in renamed.items()}
    specs: dict[str, tuple[Any, Any]] = {}
    if dataclasses.is_dataclass(source):
        for f in dataclasses.fields(source):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = Field(default_factory=f.default_factory)
            else:
                default = ...
            specs[f.name] = (hints[f.name], default)
    else:
        for name, parameter in inspect.signature(source).parameters.items():
            if parameter.kind is inspect.Parameter.KEYWORD_ONLY:
                specs[name] = (hints[name], parameter.default)
    return {names.get(k, k): v for k, v in specs.items() if k not in exclude and (include is None or k in include)}


@contextlib.contextmanager
def reported_as(where: str | Path, section: str) -> Iterator[None]:
    """Report a library :class:`~llara.errors.ConfigError` as ``<where>: <section>.<key>: <what>``."""
    try:
        yield
    except ConfigError as exc:
        raise InputError(where, f"{section}.{exc.key}: {exc.what}") from None


def require_list(value: Any) -> Any:
    if isinstance(value, str):  # dvc.yaml's foreach/matrix iterates it: a bare string would break `dvc repro`
        raise ValueError(f"must be a list; write [{value}] for a single entry")
    return value


def require_distinct(value: list[str]) -> list[str]:
    """Reject a list that names an entry twice (DVC's foreach/matrix would build the stage twice)."""
    if len(set(value)) != len(value):
        raise ValueError(f"listed twice: {value}")
    return value


def names_list(names: tuple[str, ...]) -> Any:
    """A non-empty list of distinct names out of a registry (what dvc.yaml's foreach/matrix iterates)."""
    return Annotated[list[Literal[names]], BeforeValidator(require_list), AfterValidator(require_distinct),
                     Field(min_length=1)]


# ------------------------------------------------------------------------------------------------------ ingest ---


class IngestBase(Strict):
    """Stages ``fetch`` / ``ingest``: where the raw data is and how to read it."""

    source: Literal["movielens", "generic"]
    input_dir: str
    movielens_local_dir: str | None
    interactions_file: str
    items_file: str
    columns: Columns = Columns()

    @field_validator("input_dir", "interactions_file", "items_file")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    def validate_library(self, where: str | Path) -> None:
        with reported_as(where, "ingest"):
            check_text_options(self.separator, self.encoding)
            require_range("inbox_max_bad_rows", self.inbox_max_bad_rows, 0, MAX_BAD_ROWS_LIMIT)
        try:
            check_url(self.movielens_url)
        except InputError as exc:
            raise InputError(where, f"ingest.movielens_url: {exc.what}") from None


IngestParams = create_model(
    "IngestParams", __base__=IngestBase,
    **library_fields(fetch_movielens_100k, include=("url",), movielens_url="url"),
    **library_fields(read_generic),
    **library_fields(merge_inbox, include=("max_bad_rows",), inbox_max_bad_rows="max_bad_rows"),
)


# ------------------------------------------------------------------------------------------------------- split ---
class SplitBase(Strict):
    """Stages ``split@<protocol>``: the library's :class:`SplitConfig` per protocol in ``protocols``."""

    protocols: names_list(PROTOCOLS)

    def config(self, protocol: str) -> SplitConfig:
        values = self.model_dump(exclude={"protocols"})
        return SplitConfig(protocol=protocol, **values)

    def validate_library(self, where: str | Path) -> None:
        with reported_as(where, "split"):
            for protocol in self.protocols:
                self.config(protocol).validate()


SplitParams = create_model("SplitParams", __base__=SplitBase, **library_fields(SplitConfig, exclude=("protocol",)))


# ---------------------------------------------------------------------------------------------------- pretrain ---
class PretrainBase(Strict):
    """Stages ``pretrain`` / ``export`` / ``evaluate_recommenders`` (docs/recommenders.md): training options
    (:class:`TrainConfig`), the history window, and one section of sizes per registered family."""

    def sizes(self, backbone: str) -> BaseModel:
        return getattr(self, backbone)

    def train_config(self, backbone: str) -> TrainConfig:
        """Training options; ``pretrain.<backbone>.lr`` (the family's own by default) overrides ``pretrain.lr``."""
        values = self.model_dump(include={f.name for f in dataclasses.fields(TrainConfig)})
        lr = self.sizes(backbone).lr
        return TrainConfig(**{**values, "lr": lr if lr is not None else self.lr})

    def model_config_for(self, backbone: str, n_items: int = 1) -> BackboneConfig:
        sizes = self.sizes(backbone).model_dump(exclude={"lr"})
        return FAMILIES[backbone].config(n_items=n_items, window=self.window, **sizes)

    def validate_library(self, where: str | Path) -> None:
        for backbone in self.backbones:  # dvc.yaml's pretrain@ stages track pretrain.<backbone>: it must be there
            if backbone not in self.model_fields_set:
                sizes = type(self).model_fields[backbone].default_factory().model_dump()
                raise InputError(where, f"pretrain.{backbone}: missing; a listed backbone needs its section "
                                        f"(the library's defaults: {sizes})")
        for backbone in (name for name in FAMILIES if name in type(self).model_fields):
            with reported_as(where, f"pretrain.{backbone}"):
                try:
                    self.model_config_for(backbone).validate()
                except ConfigError as exc:
                    if exc.key == "window":  # shared by every family: pretrain.window
                        raise InputError(where, f"pretrain.window: {exc.what}") from None
                    raise
            with reported_as(where, "pretrain"):
                try:
                    self.train_config(backbone).validate()
                except ConfigError as exc:
                    if exc.key == "lr" and self.sizes(backbone).lr is not None:
                        raise InputError(where, f"pretrain.{backbone}.lr: {exc.what}") from None
                    raise


def family_params(name: str, family: Family) -> type[Strict]:
    """``pretrain.<name>``: the family's sizes (its config without ``n_items`` and the shared ``window``) and its
    learning rate (``null``: ``pretrain.lr``)."""
    return create_model(f"{name}Params", __base__=Strict, lr=(float | None, family.lr),
                        **library_fields(family.config, exclude=("n_items", "window")))


@functools.cache
def pretrain_params(families: tuple[tuple[str, Family], ...]) -> type[PretrainBase]:
    """The ``pretrain`` section for these registered families (rebuilt when the registry changes)."""
    sections = {name: family_params(name, family) for name, family in families}
    window = next(f.default for f in dataclasses.fields(BackboneConfig) if f.name == "window")
    return create_model(
        "PretrainParams", __base__=PretrainBase,
        backbones=(names_list(tuple(name for name, _ in families)), ...),
        window=(int, window),
        **library_fields(TrainConfig, exclude=("min_delta",)),
        **{name: (section, Field(default_factory=section)) for name, section in sections.items()},
    )


PretrainParams = pretrain_params(tuple(FAMILIES.items()))


class LLMParams(Strict):
    """Stage ``llm``: which causal LM; ``smollm2`` converts the packaged GGUF into ``base_dir``."""

    model: str = "smollm2"  # smollm2 | a Hugging Face id | a local HF folder
    base_dir: str = LLMSettings.model
    dtype: Literal[DTYPE_NAMES] = LLMSettings.dtype
    device: str = LLMSettings.device  # auto (CUDA when present) | cpu | cuda | cuda:N
    trust_remote_code: bool = False
    revision: str | None = None  # the hub commit (or tag) of a Hugging Face id, so the weights under it cannot change

    @model_validator(mode="after")
    def _revision_of_a_hub_id(self):
        if self.revision is not None and (self.model == "smollm2" or Path(self.model).expanduser().exists()):
            raise ValueError(f"revision pins a Hugging Face id; {self.model!r} is the packaged model or a local folder")
        return self


class FinetuneParams(Strict):
    """Stages ``finetune@<variant>``: recipes and profiles are the library's :class:`Recipe` / :class:`Profile`
    (their fields, types and range checks); params.yaml holds the pipeline's values of them (no defaults here: a
    recipe or profile is written out in full)."""

    protocol: Literal[PROTOCOLS]
    backbone: Literal[tuple(FAMILIES)]
    variants: names_list(VARIANTS)
    prompts: str = DEFAULT_PROMPTS  # movie | game | artist | item | a template file
    seed: int = Field(DEFAULT_SEED, ge=0)
    profile: str = DEFAULT_PROFILE
    recipe: str = DEFAULT_RECIPE
    profiles: dict[str, Profile]
    recipes: dict[str, Recipe]

    @model_validator(mode="after")
    def _known(self):
        if self.profile not in self.profiles:
            raise ValueError(f"profile {self.profile!r} is not among profiles {sorted(self.profiles)}")
        if self.recipe not in self.recipes:
            raise ValueError(f"recipe {self.recipe!r} is not among recipes {sorted(self.recipes)}")
        return self

    def validate_library(self, where: str | Path) -> None:
        """The library's range checks of every recipe and profile, reported under their params key."""
        for kind, table in (("recipes", self.recipes), ("profiles", self.profiles)):
            for name, config in table.items():
                with reported_as(where, f"finetune.{kind}.{name}"):
                    config.validate()

    @property
    def chosen_recipe(self) -> Recipe:
        return self.recipes[self.recipe]

    @property
    def chosen_profile(self) -> Profile:
        return self.profiles[self.profile]


class EvaluateParams(Strict):
    splits: list[Literal["test", "val"]] = Field(["test"], min_length=1)
    modes: list[Literal[EVAL_MODES]] = Field(list(EVAL_MODES), min_length=1)
    batch_size: int = Field(EVAL_BATCH_SIZE, ge=1)
    max_rows: int | None = Field(None, ge=1)  # evaluate only the first N rows of each split (quick checks)


class ChampionParams(Strict):
    """Stage ``promote``: champion/challenger (llara/champion.py, docs/operations.md)."""

    variant: Literal[VARIANTS] = "hybrid-curriculum"  # the challenger, trained by finetune@<variant>
    modes: list[Literal[EVAL_MODES]] = Field(["rank", "generate"], min_length=1)
    metric: Literal[EVAL_MODES] = "rank"  # the mode whose HR@1 decides
    margin: float = Field(0.02, ge=0, le=1)  # promote unless HR@1 is lower than the champion's by more than this
    max_users: int | None = Field(None, ge=1)  # compare on the first N validation users (null: all)
    batch_size: int = Field(EVAL_BATCH_SIZE, ge=1)

    @model_validator(mode="after")
    def _metric_compared(self):
        if self.metric not in self.modes:
            raise ValueError(f"metric {self.metric!r} is not among modes {self.modes}")
        return self


class RecommendParams(Strict):
    """Stage ``recommend``: batch top-k per user from the champion (flows/recommend.py, docs/operations.md)."""

    users: Literal["all", "active"] = "active"  # active: users with interactions since the last run
    k: int = Field(10, ge=1, le=1000)
    n_candidates: int = Field(20, ge=1, le=10_000)  # the recommender's top-N re-ranked by the LLM
    rerank: bool = True  # false: the recommender's own top-k
    batch_size: int = Field(EVAL_BATCH_SIZE, ge=1)
    shard_size: int = Field(256, ge=1)  # users per task; the output does not depend on the worker count
    workers: int = Field(2, ge=1, le=1024)  # LocalCluster worker processes
    threads_per_worker: int = Field(1, ge=1, le=256)  # torch threads in each worker
    scheduler: str | None = None  # a running Dask scheduler (tcp://host:8786) instead of the LocalCluster
    device: str = "cpu"

    @model_validator(mode="after")
    def _candidates(self):
        if self.rerank and self.n_candidates < self.k:
            raise ValueError(f"n_candidates ({self.n_candidates}) must be >= k ({self.k}) to re-rank")
        return self


@functools.cache
def params_model(families: tuple[tuple[str, Family], ...]) -> type[BaseModel]:
    """Top level of params.yaml: one validated section per stage family; an unknown section (a typo) is an error."""
    names = tuple(name for name, _ in families)
    finetune = create_model("FinetuneParams", __base__=FinetuneParams, backbone=(Literal[names], ...))
    return create_model(
        "Params", __config__=ConfigDict(extra="forbid", frozen=True),
        ingest=(IngestParams, ...),
        split=(SplitParams, ...),
        pretrain=(pretrain_params(families), ...),
        llm=(LLMParams, LLMParams()),
        finetune=(finetune, ...),
        evaluate=(EvaluateParams, EvaluateParams()),
        champion=(ChampionParams, ChampionParams()),
        recommend=(RecommendParams, RecommendParams()),
        report=(ReportConfig, Field(default_factory=ReportConfig)),
    )


Params = params_model(tuple(FAMILIES.items()))


def _format_error(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = err["msg"]
    if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        msg = "unknown key"
    return key, msg


def parse_params(data: dict, where: str | Path = PARAMS_FILE) -> Params:
    """Validate a params mapping (structure and types, then each section's library checks); errors name the file
    and the dotted key."""
    if not isinstance(data, dict):
        raise InputError(where, "top level must be a mapping of stage sections")
    try:
        params = params_model(tuple(FAMILIES.items())).model_validate(data)
    except ValidationError as exc:
        key, msg = _format_error(exc)
        raise InputError(where, f"{key}: {msg}") from None
    for name in type(params).model_fields:
        section = getattr(params, name)
        if isinstance(section, Strict):
            section.validate_library(where)
        else:  # a library config used as it is
            with reported_as(where, name):
                section.validate()
    if params.champion.variant not in params.finetune.variants:
        raise InputError(where, f"champion.variant: {params.champion.variant!r} is not among finetune.variants "
                                f"{list(params.finetune.variants)} (the challenger must be trained)")
    return params


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
