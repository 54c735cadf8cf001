"""The model families by name: the one list every other place (params validation, CLI choices, docs, the dvc.yaml
matrix through params.yaml) takes backbone names from. Adding a backbone: docs/recommenders.md, "Add a backbone".

Importing this module does not import torch: a family's model class is imported when a model is built.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llara.errors import ConfigError, InputError, require
from llara.recommenders.config import BackboneConfig, CaserConfig, GRU4RecConfig, SASRecConfig

if TYPE_CHECKING:
    from llara.recommenders.base import SequentialRecommender


@dataclass(frozen=True)
class Family:
    """A backbone: its sizes (a :class:`BackboneConfig` subclass: defaults and range checks), its model class as
    ``"module:Class"`` and, when it trains best with its own, a learning rate (None: ``TrainConfig.lr``)."""

    config: type[BackboneConfig]
    model: str
    lr: float | None = None


FAMILIES: dict[str, Family] = {
    "sasrec": Family(SASRecConfig, "llara.recommenders.sasrec:SASRec"),
    "gru4rec": Family(GRU4RecConfig, "llara.recommenders.gru4rec:GRU4Rec"),
    "caser": Family(CaserConfig, "llara.recommenders.caser:Caser", lr=1e-3),  # chosen on validation loss
}


def family(name: str, where: str | Path = "config") -> Family:
    require(name in FAMILIES, where, f"unknown model family {name!r}; use one of {sorted(FAMILIES)}")
    return FAMILIES[name]


def model_class(name: str, where: str | Path = "config") -> type[SequentialRecommender]:
    module, _, cls = family(name, where).model.partition(":")
    return getattr(importlib.import_module(module), cls)


def config_from_dict(name: str, values: dict, where: str | Path = "config") -> BackboneConfig:
    """A family's config from a mapping; unknown or missing keys raise :class:`InputError` naming ``where``."""
    cls = family(name, where).config
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    require(not unknown, where, f"unknown key(s) {unknown} for {name}; expected {sorted(fields)}")
    try:
        config = cls(**values)
    except TypeError as exc:
        raise InputError(where, f"bad {name} config ({exc})") from None
    for f in dataclasses.fields(cls):
        value = getattr(config, f.name)
        expected = float if f.type in (float, "float") else int
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        require(ok and (expected is float or isinstance(value, int)), where, f"{f.name} must be a {expected.__name__}")
    try:
        config.validate()
    except ConfigError as exc:
        raise InputError(where, f"{exc.key}: {exc.what}") from None
    return config


def build_model(name: str, config: BackboneConfig | dict, where: str | Path = "config") -> SequentialRecommender:
    """A fresh (randomly initialized) model of family ``name``."""
    if isinstance(config, dict):
        config = config_from_dict(name, config, where)
    expected = family(name, where).config
    require(isinstance(config, expected), where, f"{name} needs a {expected.__name__}")
    model = model_class(name, where)(config)
    model.family = name
    return model
