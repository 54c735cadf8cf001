"""Model families by name, and building a model from its JSON config."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from llara.errors import InputError, require
from llara.recommenders.base import BackboneConfig, SequentialRecommender
from llara.recommenders.caser import Caser
from llara.recommenders.gru4rec import GRU4Rec
from llara.recommenders.sasrec import SASRec

FAMILIES: dict[str, type[SequentialRecommender]] = {cls.family: cls for cls in (SASRec, GRU4Rec, Caser)}


def family_class(family: str, where: str | Path = "config") -> type[SequentialRecommender]:
    require(family in FAMILIES, where, f"unknown model family {family!r}; use one of {sorted(FAMILIES)}")
    return FAMILIES[family]


def config_from_dict(family: str, values: dict, where: str | Path = "config") -> BackboneConfig:
    """A family's config from a mapping; unknown or missing keys raise :class:`InputError` naming ``where``."""
    cls = family_class(family, where).config_class
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    require(not unknown, where, f"unknown key(s) {unknown} for {family}; expected {sorted(fields)}")
    try:
        config = cls(**values)
    except TypeError as exc:
        raise InputError(where, f"bad {family} config ({exc})") from None
    for f in dataclasses.fields(cls):
        value = getattr(config, f.name)
        expected = float if f.type in (float, "float") else int
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        require(ok and (expected is float or isinstance(value, int)), where, f"{f.name} must be a {expected.__name__}")
    config.validate(where)
    return config


def build_model(family: str, config: BackboneConfig | dict, where: str | Path = "config") -> SequentialRecommender:
    """A fresh (randomly initialized) model of ``family``."""
    if isinstance(config, dict):
        config = config_from_dict(family, config, where)
    cls = family_class(family, where)
    require(isinstance(config, cls.config_class), where, f"{family} needs a {cls.config_class.__name__}")
    return cls(config)
