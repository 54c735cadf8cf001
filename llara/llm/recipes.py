"""Recipes (what a fine-tuning run learns and how), profiles (how long and how big) and the variants.

These are the library's defaults: ``llara finetune`` and library users get them; params.yaml holds the pipeline's copy
(``finetune.recipes`` / ``finetune.profiles``, ``llm``), validated by :meth:`Recipe.validate` / :meth:`Profile.validate`,
and a test checks that the two agree. A variant fixes the curriculum schedule (and ``zero-shot`` trains nothing).
Torch-free, so params validation stays light.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from llara.errors import require_config

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
CANDIDATE_FEATURES = ("item", "affinity")
# auto: bfloat16 where the device multiplies it natively, else float32 (llara.llm.loading.resolve_dtype)
DTYPE_NAMES = ("auto", "bfloat16", "float32", "float16")
DEFAULT_PROMPTS = "movie"  # movie | game | artist | item | a template file
DEFAULT_SEED = 0


@dataclass
class LLMSettings:
    """Which base LLM a run loads, and how."""

    model: str = "data/llm/base"  # HF folder or hub id (the pipeline's stage `llm` writes this folder)
    dtype: str = "auto"  # one of DTYPE_NAMES
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    trust_remote_code: bool = False

VARIANT_SCHEDULES = {"hybrid-curriculum": "curriculum", "hybrid-direct": "direct", "hybrid-two-stage": "two-stage",
                     "text-only": "text-only", "id-only": "id-only", "zero-shot": "text-only"}
VARIANTS = tuple(VARIANT_SCHEDULES)
# every evaluation mode (llara.llm.evaluation; the two-order ones read each prompt as listed and reversed, as one)
EVAL_MODES = ("generate", "rank", "rank_llm", "generate_two_orders", "rank_llm_two_orders")
EVAL_BATCH_SIZE = 16  # users per batch of an LLM evaluation (3.5x the authors' generate speed, bench_eval)
OPTIMIZERS = ("adamw", "adam")
ATTENTION = ("auto", "eager", "sdpa")


def check_modes(modes) -> None:
    """Raise ConfigError ``modes`` unless every one is in EVAL_MODES (before a model loads, and in evaluate)."""
    unknown = sorted(set(modes) - set(EVAL_MODES))
    require_config(not unknown, "modes", f"unknown mode(s) {unknown}: choose from {list(EVAL_MODES)}")


@dataclass(frozen=True)
class Recipe:
    """How items are shown to the LLM, what it is trained on, its adapter and its optimizer."""

    __pydantic_config__ = {"extra": "forbid"}  # params.yaml: an unknown recipe key is an error

    candidate_features: str = "item"  # item (the paper's: the item embedding) | affinity (+ user match and score)
    token_first: bool = False  # behavioural token before its title (the paper's: after)
    text_placeholder: bool = True  # text-only items keep the constant [PH] token (the authors' text prompts)
    score_head: bool = False  # a linear head scoring each candidate from its hidden state (rank mode)
    generative_weight: float = 1.0  # next-token loss on the answer (title + end marker)
    head_weight: float = 0.0  # listwise loss of the score head
    length_norm: bool = True  # answer log-likelihoods averaged over tokens (rank mode without a head)
    score_noise: float = 0.0  # Gaussian noise on the recommender's training-time scores
    curriculum_ramp: float = 1.0  # hybrid-curriculum: share of the steps after which every prompt is hybrid (paper: 1)
    lora: bool = True
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    optimizer: str = "adam"
    lr: float = 8e-4  # the authors' release: 8e-4, warm-up from 8e-6, cosine to 8e-6 (lr / 100)
    warmup_start_lr: float = 8e-6
    min_lr: float = 8e-6
    weight_decay: float = 1e-5  # the authors' default (on the projector; here on every trained parameter)

    def validate(self) -> "Recipe":
        """Range checks; a :class:`~llara.errors.ConfigError` names the key."""
        require_config(self.candidate_features in CANDIDATE_FEATURES, "candidate_features",
                       f"unknown {self.candidate_features!r} (one of {CANDIDATE_FEATURES})")
        require_config(self.optimizer in OPTIMIZERS, "optimizer", f"unknown {self.optimizer!r} (one of {OPTIMIZERS})")
        for key in ("generative_weight", "head_weight", "score_noise",
                    "warmup_start_lr", "min_lr", "weight_decay"):
            require_config(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")
        require_config(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        require_config(0 < self.curriculum_ramp <= 1, "curriculum_ramp", f"must be in (0, 1], got {self.curriculum_ramp}")
        require_config(1 <= self.lora_r <= 256, "lora_r", f"must be in 1..256, got {self.lora_r}")
        require_config(self.lora_alpha >= 1, "lora_alpha", f"must be >= 1, got {self.lora_alpha}")
        require_config(0 <= self.lora_dropout < 1, "lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")
        require_config(len(self.lora_targets) > 0, "lora_targets", "must name at least one module")
        require_config(self.head_weight == 0 or self.score_head, "head_weight", "needs score_head: true")
        return self


@dataclass(frozen=True)
class Profile:
    """How long and how big a run is, and speed/memory settings that do not change what is learned."""

    __pydantic_config__ = {"extra": "forbid"}

    steps: int = 300  # optimizer steps (generate HR@1 and rank_llm need ~200+ on CPU: docs/llara.md)
    batch_size: int = 8  # examples per optimizer step
    micro_batch: int = 4  # examples per forward pass (gradient accumulation)
    warmup_steps: int = 5
    checkpoint_every: int = 10
    llm: str | None = None  # another base LLM than llm.base_dir (e.g. meta-llama/Llama-2-7b-hf)
    autocast: bool = True  # bf16 autocast where the device multiplies bf16 natively
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, same results
    attention: str = "auto"  # attention kernel while training: auto (eager on CPU), eager, sdpa
    compile: bool | str = "auto"  # torch.compile the decoder layers while training: true, false, auto
    select_every: int = 0  # validation-based checkpoint choice every N steps (0: off, the last step's weights)
    select_rows: int = 0  # validation rows it generates for (0: all)

    def validate(self) -> "Profile":
        for key in ("steps", "warmup_steps", "select_every", "select_rows"):
            require_config(getattr(self, key) >= 0, key, f"must be >= 0, got {getattr(self, key)}")
        for key in ("batch_size", "micro_batch", "checkpoint_every"):
            require_config(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        require_config(self.attention in ATTENTION, "attention", f"unknown {self.attention!r} (one of {ATTENTION})")
        require_config(self.compile in (True, False, "auto"), "compile", f"must be true, false or auto, got {self.compile!r}")
        return self


RECIPES: dict[str, Recipe] = {
    # the paper's (the authors' release): item-embedding tokens after each title, [PH] in text-only items, next-token
    # loss on the answer only, Adam, lr 8e-4 with warm-up and cosine decay to lr / 100, LoRA dropout 0.1
    "paper": Recipe(),
    # ours: each behavioural token before its title (generation copies the title that follows the token it chose),
    # affinity features (item embedding, user match, recommender score), a score head (rank mode) beside the
    # generative loss, no LoRA dropout (faster compiled steps), AdamW without weight decay, a curriculum that is all
    # hybrid from a quarter of the steps on (docs/llara.md, *Curriculum or not*)
    "ours": Recipe(candidate_features="affinity", token_first=True, score_head=True, head_weight=1.0, score_noise=0.5,
                   curriculum_ramp=0.25, lora_dropout=0.0, optimizer="adamw", weight_decay=0.0),
}
PROFILES: dict[str, Profile] = {
    "default": Profile(),  # CPU, bounded
    "long": Profile(steps=4000, warmup_steps=100, checkpoint_every=50),  # nightly CPU, ~8 h
    "paper": Profile(steps=2580, batch_size=128, warmup_steps=129, checkpoint_every=50,  # 5 epochs x 66k rows / 128
                     llm="meta-llama/Llama-2-7b-hf", gradient_checkpointing=True, select_every=516),  # once an epoch
}
DEFAULT_RECIPE = "ours"
DEFAULT_PROFILE = "default"


def with_settings(recipe: Recipe, profile: Profile, settings: dict) -> tuple[Recipe, Profile]:
    """``recipe`` and ``profile`` with some fields replaced by name (e.g. ``{"lr": 8e-4, "steps": 300}``), checked."""
    recipe_fields = {f.name: f for f in fields(Recipe)}
    profile_fields = {f.name: f for f in fields(Profile)}
    changes: dict[str, dict] = {"recipe": {}, "profile": {}}
    for key, value in settings.items():
        found = recipe_fields.get(key) or profile_fields.get(key)
        require_config(found is not None, key, f"unknown setting (one of {sorted({**recipe_fields, **profile_fields})})")
        changes["recipe" if key in recipe_fields else "profile"][key] = _coerce(key, value, found.type)
    return replace(recipe, **changes["recipe"]).validate(), replace(profile, **changes["profile"]).validate()


def _coerce(key: str, value, annotation: str):
    """A value for a field annotated ``annotation`` (dataclass annotations are strings here)."""
    try:
        if annotation == "bool":
            require_config(isinstance(value, bool), key, f"must be true or false, got {value!r}")
        elif annotation == "int":
            require_config(float(value) == int(float(value)), key, f"must be a whole number, got {value!r}")
            return int(float(value))
        elif annotation == "float":
            return float(value)
        elif annotation == "list[str]":
            require_config(isinstance(value, list), key, f"must be a list, got {value!r}")
    except (TypeError, ValueError):
        require_config(False, key, f"not a {annotation}: {value!r}")
    return value
