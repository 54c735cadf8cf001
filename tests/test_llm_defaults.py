"""Each LLM default lives once: params.yaml's finetune/llm sections equal the library's recipes, profiles and
settings, the low-level configs agree with them, and `llara finetune` offers the same defaults."""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path

import pytest
import yaml

from llara.cli import build_parser
from llara.llm import recipes
from llara.llm.model import ModelConfig
from llara.llm.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_params_recipes_and_profiles_are_the_library_ones(params):
    finetune = params["finetune"]
    assert finetune["recipes"] == {name: asdict(r) for name, r in recipes.RECIPES.items()}
    assert finetune["profiles"] == {name: asdict(p) for name, p in recipes.PROFILES.items()}
    assert (finetune["recipe"], finetune["profile"]) == (recipes.DEFAULT_RECIPE, recipes.DEFAULT_PROFILE)
    assert (finetune["prompts"], finetune["seed"]) == (recipes.DEFAULT_PROMPTS, recipes.DEFAULT_SEED)
    settings = recipes.LLMSettings()
    llm = params["llm"]
    assert (llm["base_dir"], llm["dtype"], llm["device"], llm["trust_remote_code"]) == (
        settings.model, settings.dtype, settings.device, settings.trust_remote_code)
    assert set(finetune["variants"]) <= set(recipes.VARIANTS)


def test_low_level_configs_default_to_the_default_recipe_fields():
    """TrainConfig / ModelConfig defaults equal Recipe() / Profile() where a field has the same name."""
    library = {**asdict(recipes.Recipe()), **asdict(recipes.Profile())}
    for config in (TrainConfig(), ModelConfig()):
        for f in fields(config):
            if f.name in library:
                assert getattr(config, f.name) == library[f.name], f"{type(config).__name__}.{f.name}"


def test_cli_finetune_defaults_are_the_library_ones(params):
    args = build_parser().parse_args(["finetune", "hybrid-curriculum", "--recommender", "r", "--train", "t", "--out", "o"])
    settings = recipes.LLMSettings()
    assert (args.recipe, args.profile, args.prompts, args.seed) == (
        recipes.DEFAULT_RECIPE, recipes.DEFAULT_PROFILE, recipes.DEFAULT_PROMPTS, recipes.DEFAULT_SEED)
    assert (args.llm, args.dtype, args.device) == (settings.model, settings.dtype, settings.device)
    assert args.steps is None and args.batch_size is None  # the profile's, as params.yaml


def test_with_settings_replaces_checks_and_names_the_key():
    from llara.errors import ConfigError

    recipe, profile = recipes.with_settings(recipes.RECIPES["paper"], recipes.PROFILES["default"],
                                            {"lr": "3e-4", "steps": 300.0, "token_first": True})
    assert (recipe.lr, profile.steps, recipe.token_first) == (3e-4, 300, True)
    assert recipes.RECIPES["paper"].lr == 8e-4 and not recipes.RECIPES["paper"].token_first  # the table is untouched
    for bad, key in (({"lr": -1.0}, "lr"), ({"stepz": 3}, "stepz"), ({"steps": 2.5}, "steps"),
                     ({"token_first": "yes"}, "token_first"), ({"lora_dropout": 1.0}, "lora_dropout"),
                     ({"curriculum_ramp": 0}, "curriculum_ramp"), ({"curriculum_ramp": 1.5}, "curriculum_ramp")):
        with pytest.raises(ConfigError) as err:
            recipes.with_settings(recipes.RECIPES["paper"], recipes.PROFILES["default"], bad)
        assert err.value.key == key


def test_dtype_names_are_the_ones_the_loader_resolves():
    """params.yaml's schema and the CLI list recipes.DTYPE_NAMES; the loader (which stage `llm` imports without
    recipes.py) resolves exactly those."""
    from llara.llm.loading import DTYPES, resolve_dtype
    from llara.llm.recipes import DTYPE_NAMES

    assert set(DTYPE_NAMES) == {"auto", *DTYPES}
    assert all(resolve_dtype(name) in DTYPES.values() for name in DTYPE_NAMES)
